"""Installs like an app: the install script picks the torch build that fits the machine, the
resources (icons, theme, desktop entry, AppStream metadata) are package data, and the frozen
app's recipe (packaging/build_app.py) collects them and puts Studio in the application menu."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SH = shutil.which("sh")

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:], os.getcwd()]) + "\\n")
"""

# `python3 -m venv DIR` makes DIR/bin with recording pip and studio, and records itself.
FAKE_PYTHON = (
    RECORDER
    + """
if sys.argv[1:3] == ["-m", "venv"]:
    bindir = os.path.join(sys.argv[3], "bin")
    os.makedirs(bindir)
    for name in ("pip", "studio"):
        with open(os.path.join(bindir, name), "w") as f:
            f.write(open(__file__).read().split("\\nif sys.argv")[0] + "\\n")
        os.chmod(os.path.join(bindir, name), 0o755)
"""
)


def _script(path: Path, text: str) -> None:
    path.write_text(text.format(python=sys.executable), encoding="utf-8")
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout holding only the install script, and a PATH of stubs: python3 (records, and
    makes a venv of recording pip and studio), uname; no nvidia-smi unless a test adds one."""
    (tmp_path / "checkout" / "packaging").mkdir(parents=True)
    shutil.copy(ROOT / "packaging" / "install.sh", tmp_path / "checkout" / "packaging")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "python3", FAKE_PYTHON)
    os.symlink(shutil.which("uname"), bindir / "uname")
    return tmp_path


def _install(tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    log = tmp / "log.jsonl"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        [SH, "packaging/install.sh"],
        cwd=tmp / "checkout",
        env={"PATH": str(tmp / "bin"), "STUB_LOG": str(log), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def _fake_nvidia_smi(tmp: Path, returncode: int) -> None:
    _script(
        tmp / "bin" / "nvidia-smi",
        f"#!{{python}}\nprint('GPU 0: NVIDIA H100 (UUID: GPU-0)')\nraise SystemExit({returncode})\n",
    )


@pytest.mark.skipif(SH is None or sys.platform == "win32", reason="a POSIX shell script")
def test_install_script_without_an_nvidia_gpu_installs_the_cpu_build_of_torch(checkout: Path):
    done, calls = _install(checkout)
    assert done.returncode == 0, done.stderr
    where = str(checkout / "checkout")
    assert calls == [
        ["python3", "-m", "venv", ".venv", where],
        ["pip", "install", "torch", "--index-url", CPU_INDEX, where],
        ["pip", "install", "-e", ".", where],
        ["studio", where],
    ]
    assert "no NVIDIA GPU found" in done.stdout and "GB" in done.stdout


@pytest.mark.skipif(SH is None or sys.platform == "win32", reason="a POSIX shell script")
def test_install_script_with_an_nvidia_gpu_installs_pypis_cuda_torch(checkout: Path):
    _fake_nvidia_smi(checkout, 0)
    done, calls = _install(checkout)
    assert done.returncode == 0, done.stderr
    assert [c[:-1] for c in calls[1:]] == [["pip", "install", "torch"], ["pip", "install", "-e", "."], ["studio"]]  # fmt: skip
    assert "NVIDIA GPU found" in done.stdout and "6 GB" in done.stdout


@pytest.mark.skipif(SH is None or sys.platform == "win32", reason="a POSIX shell script")
def test_install_script_counts_nvidia_smi_without_a_driver_as_no_gpu(checkout: Path):
    _fake_nvidia_smi(checkout, 9)  # installed, but no driver or no device answers
    done, calls = _install(checkout)
    assert done.returncode == 0, done.stderr
    assert calls[1][:-1] == ["pip", "install", "torch", "--index-url", CPU_INDEX]


@pytest.mark.skipif(SH is None or sys.platform == "win32", reason="a POSIX shell script")
def test_install_script_reuses_the_environment_and_can_skip_the_launch(checkout: Path):
    _fake_nvidia_smi(checkout, 0)
    _install(checkout)
    done, calls = _install(checkout, STUDIO_TORCH="cpu", STUDIO_NO_LAUNCH="1")
    assert done.returncode == 0, done.stderr
    assert [c[:-1] for c in calls] == [
        ["pip", "install", "torch", "--index-url", CPU_INDEX],
        ["pip", "install", "-e", "."],
    ]


@pytest.mark.skipif(SH is None or sys.platform == "win32", reason="a POSIX shell script")
def test_install_script_refuses_an_unknown_torch_choice_in_one_sentence(checkout: Path):
    done, calls = _install(checkout, STUDIO_TORCH="rocm")
    assert done.returncode == 2 and calls == []
    assert done.stderr.strip() == "Studio: STUDIO_TORCH must be auto, cpu or cuda, not 'rocm'."


def _setup_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]


def test_readme_gives_exactly_two_set_up_commands_the_first_fits_the_machine():
    commands = re.findall(r"```bash\n(.*?)```", _setup_section(), re.S)
    assert len(commands) == 2, commands
    assert commands[0].strip() == "sh packaging/install.sh"
    assert '.venv/bin/pip install "torch==2.13.0" -e ".[test]"' in commands[1]
    section = _setup_section()
    assert CPU_INDEX in section and "6 GB" in section  # the CPU command beside, and the sizes


# -- resources: package data in the wheel and the frozen app ----------------------------------


def test_every_resource_file_is_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["studio.resources"]
    files = [
        p.relative_to(RESOURCES).as_posix()
        for p in RESOURCES.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"
    ]
    assert files
    assert [f for f in files if not any(fnmatch(f, pat) for pat in patterns)] == []


def test_the_wheel_holds_the_resources(tmp_path: Path):
    # Built here without build isolation (tests download nothing): needs the setuptools that
    # pyproject.toml asks for (a fresh Python 3.11 venv has 65.5, which cannot build it).
    try:
        from importlib.metadata import version

        found = tuple(int(x) for x in version("setuptools").split(".")[:2])
    except Exception:
        found = (0, 0)
    if found < (68, 0):
        pytest.skip("setuptools 68 or newer is not installed here")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("studio-*.whl"))).namelist()
    for name in ("theme.qss", "studio.desktop", "icons/studio.svg", "icons/studio-512.png"):
        assert f"studio/resources/{name}" in names
    assert "studio/resources/__init__.py" in names and "studio/qt/app.py" in names


def test_the_package_loads_its_resources_and_names_a_missing_one():
    from studio import resources

    assert resources.path("theme.qss").is_file()
    assert len(resources.icon_paths()) == len(resources.ICON_SIZES) + 1
    with pytest.raises(FileNotFoundError, match="resource file nope.png is missing"):
        resources.path("nope.png")


def test_the_icon_set_has_every_size():
    from PIL import Image

    from studio import resources

    for size in resources.ICON_SIZES:
        with Image.open(resources.path(f"icons/studio-{size}.png")) as im:
            assert im.size == (size, size) and im.mode == "RGBA"
    svg = ET.parse(resources.path("icons/studio.svg")).getroot()
    assert svg.get("viewBox") == "0 0 512 512"


def test_the_window_has_the_icon_set_and_the_theme_from_resources(qapp):
    from studio.qt.app import create_application
    from studio.qt.theme import ACCENT, STYLESHEET

    app = create_application()
    sizes = {s.width() for s in app.windowIcon().availableSizes()}
    assert {16, 32, 48, 256, 512} <= sizes
    assert app.desktopFileName() == "studio"
    assert "QListWidget#nav" in STYLESHEET and ACCENT in STYLESHEET and "@accent" not in STYLESHEET


def _desktop(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser["Desktop Entry"]


def _validate(tool: list[str], path: Path) -> None:
    if shutil.which(tool[0]) is None:
        return  # desktop-file-utils / appstream not installed: the parse checks above still ran
    done = subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_desktop_entry_starts_studio_with_its_icon():
    entry = _desktop((RESOURCES / "studio.desktop").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert entry["Type"] == "Application" and entry["Name"] == "Studio"
    assert entry["Exec"] in pyproject["project"]["scripts"]
    assert entry["Icon"] == "studio"
    _validate(["desktop-file-validate"], RESOURCES / "studio.desktop")


def test_the_appstream_metadata_names_the_app_and_its_desktop_entry():
    from studio import resources

    meta = RESOURCES / f"{resources.APP_ID}.metainfo.xml"
    root = ET.parse(meta).getroot()
    assert root.get("type") == "desktop-application"
    assert root.findtext("id") == resources.APP_ID
    assert root.findtext("launchable") == "studio.desktop"
    assert (
        root.find("releases/release").get("version")
        == tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "version"
        ]
    )
    _validate(["appstreamcli", "validate", "--no-net"], meta)


# -- the frozen app's recipe --------------------------------------------------------------------


def _build_app():
    spec = importlib.util.spec_from_file_location("build_app", ROOT / "packaging" / "build_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_app_freezes_the_resources_with_the_chosen_torch(capsys, tmp_path: Path):
    build = _build_app()
    assert build.main(["--dry-run", "--torch", "cpu", "--smoke-test"]) == 0
    out = capsys.readouterr().out
    if sys.platform != "darwin":
        assert f"install torch --index-url {CPU_INDEX}" in out
    assert "--onedir" in out and "--collect-data studio" in out and "app_entry.py" in out
    assert "smoke_test.py --app" in out and "dist/Studio/Studio" in out.replace(os.sep, "/")
    cuda = build.build_commands("cuda", tmp_path / "v", tmp_path / "d", tmp_path / "w")
    assert cuda[1][-2:] == ["install", "torch"]
    pinned = build.build_commands(
        "cpu", tmp_path / "v", tmp_path / "d", tmp_path / "w", None, "torch==2.13.0"
    )
    assert pinned[1][-2:] == ["install", "torch==2.13.0"]  # no index: pip's own
    assert build.APP_ID == __import__("studio.resources").resources.APP_ID


def test_build_app_puts_the_built_app_in_the_application_menu(tmp_path: Path):
    build = _build_app()
    exe = tmp_path / "my apps" / "Studio" / "Studio"
    written = build.install_desktop_entry(exe, tmp_path / "share")
    entry_file = tmp_path / "share" / "applications" / "studio.desktop"
    assert entry_file in written
    entry = _desktop(entry_file.read_text(encoding="utf-8"))
    assert entry["TryExec"] == str(exe) and entry["Exec"] == f'"{exe}"'  # quoted: a space
    for size in (16, 48, 256, 512):
        assert (tmp_path / f"share/icons/hicolor/{size}x{size}/apps/studio.png").is_file()
    assert (tmp_path / "share/icons/hicolor/scalable/apps/studio.svg").is_file()
    assert (tmp_path / "share/metainfo/io.github.studio.Studio.metainfo.xml").is_file()
    _validate(["desktop-file-validate"], entry_file)


def test_build_app_quotes_an_awkward_app_path_for_the_desktop_entry(tmp_path: Path):
    build = _build_app()
    assert build.exec_quote("/opt/Studio/Studio") == "/opt/Studio/Studio"
    assert build.exec_quote('/a b/S"t$u%d') == '"/a b/S\\\\"t\\\\$u%%d"'
    exe = tmp_path / 'odd "name" $HOME 100%' / "Studio"
    build.install_desktop_entry(exe, tmp_path / "share")
    _validate(["desktop-file-validate"], tmp_path / "share" / "applications" / "studio.desktop")
