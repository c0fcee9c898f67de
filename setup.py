"""The package list, which pyproject.toml cannot say: the top-level ``resources/`` folder (icons,
theme, desktop entry, AppStream metadata) is installed as the package ``studio.resources``, in
wheels, editable installs and the frozen app alike. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["studio", "studio.*"]), "studio.resources"],
    package_dir={"studio.resources": "resources"},
)
