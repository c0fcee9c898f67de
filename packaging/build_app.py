"""Build Studio as a frozen one-folder application with PyInstaller, in one command:

    python packaging/build_app.py                 # torch: CPU build unless an NVIDIA GPU is found
    python packaging/build_app.py --torch cuda    # or cpu: choose the torch build yourself
    python packaging/build_app.py --smoke-test    # then run packaging/smoke_test.py on the result
    python packaging/build_app.py --dry-run       # print the commands only
    python packaging/build_app.py --torch-index https://download.pytorch.org/whl/cu128  # any index
    python packaging/build_app.py --torch-requirement "torch==2.13.0"  # exactly this requirement

PyPI's torch is a CUDA build on Linux and a CPU one on Windows and macOS; a CUDA build for Windows
comes from the index pytorch.org names (``--torch-index``).

It makes a build environment (build/app-venv), installs the chosen torch build, Studio itself (a
normal install, not an editable one, so the resources come from the package data) and
PyInstaller, and freezes packaging/app_entry.py into dist/Studio/ (run dist/Studio/Studio; with
no arguments it is the window, with a subcommand the command line, like ``studio``). The torch
build decides the size: a CUDA build brings about 3 GB of CUDA libraries that the CPU build lacks.

``--desktop-entry`` (Linux) then installs the desktop entry, the icon set and the AppStream
metadata for the current user (under $XDG_DATA_HOME, default ~/.local/share), pointing at the
built app, so Studio appears in the application menu.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
DESKTOP_ID = "studio"
APP_ID = "io.github.studio.Studio"


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def torch_install_args(
    torch: str, index: str | None = None, requirement: str | None = None
) -> list[str]:
    """pip arguments that install the torch build ``torch`` (auto, cpu or cuda), or torch from
    the package index ``index`` (a CUDA build for Windows: pytorch.org names the address), or
    the pip requirement ``requirement`` as it stands (a pinned version, a wheel file) from pip's
    own configured index."""
    if requirement:
        return ["install", requirement]
    if index:
        return ["install", "torch", "--index-url", index]
    if sys.platform == "darwin":  # PyPI's macOS torch has no CUDA (Apple GPUs through MPS)
        return ["install", "torch"]
    if torch == "auto":
        torch = "cuda" if has_nvidia_gpu() else "cpu"
    if torch == "cpu":
        return ["install", "torch", "--index-url", CPU_INDEX]
    return ["install", "torch"]  # PyPI's Linux torch brings its CUDA libraries


def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    icon = RESOURCES / "icons" / "studio-256.png"  # PyInstaller converts it where Pillow is found
    return [
        "--noconfirm",
        "--clean",
        "--onedir",
        "--name",
        "Studio",
        "--icon",
        str(icon),
        "--distpath",
        str(dist),
        "--workpath",
        str(work),
        "--specpath",
        str(work),
        "--collect-submodules",
        "studio",  # families and plugins are found by name, not by import statements
        "--collect-data",
        "studio",  # studio.resources: icons, theme, desktop entry, AppStream metadata
        "--copy-metadata",
        "studio",  # `studio --version` reads it
        str(ROOT / "packaging" / "app_entry.py"),
    ]


def build_commands(
    torch: str,
    venv: Path,
    dist: Path,
    work: Path,
    index: str | None = None,
    requirement: str | None = None,
) -> list[list[str]]:
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    pip = [str(bindir / "python"), "-m", "pip"]
    return [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, *torch_install_args(torch, index, requirement)],
        [*pip, "install", str(ROOT), "pyinstaller"],
        [str(bindir / "pyinstaller"), *pyinstaller_args(dist, work)],
    ]


def exec_quote(path: str) -> str:
    """``path`` as one argument of a desktop entry's Exec key (the Desktop Entry Specification:
    double quotes, backslash before ``"`` `` ` `` ``$`` and itself, then the file's own escaping
    doubles each backslash again; ``%`` is ``%%``)."""
    path = path.replace("%", "%%")
    if not re.search(r"[\s\"'\\<>~|&;$*?#()`]", path):
        return path
    inner = re.sub(r'(["`$\\])', r"\\\1", path)
    return '"' + inner.replace("\\", "\\\\") + '"'


def desktop_entry(executable: Path) -> str:
    """resources/studio.desktop with Exec and TryExec pointing at ``executable``."""
    lines = []
    for line in (RESOURCES / "studio.desktop").read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            try_exec = str(executable).replace("\\", "\\\\")
            lines += [f"TryExec={try_exec}", f"Exec={exec_quote(str(executable))}"]
        elif not line.startswith("TryExec="):
            lines.append(line)
    return "\n".join(lines) + "\n"


def install_desktop_entry(executable: Path, data_home: Path) -> list[Path]:
    """Install the desktop entry, icons and AppStream metadata under ``data_home``; the paths."""
    written = []
    apps = data_home / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    entry = apps / f"{DESKTOP_ID}.desktop"
    entry.write_text(desktop_entry(executable), encoding="utf-8")
    written.append(entry)
    icons = data_home / "icons" / "hicolor"
    for size in ICON_SIZES:
        target = icons / f"{size}x{size}" / "apps" / f"{DESKTOP_ID}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RESOURCES / "icons" / f"studio-{size}.png", target)
        written.append(target)
    svg = icons / "scalable" / "apps" / f"{DESKTOP_ID}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RESOURCES / "icons" / "studio.svg", svg)
    written.append(svg)
    meta = data_home / "metainfo" / f"{APP_ID}.metainfo.xml"
    meta.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RESOURCES / f"{APP_ID}.metainfo.xml", meta)
    written.append(meta)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--torch", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--torch-index", help="install torch from this package index instead")
    ap.add_argument(
        "--torch-requirement",
        help="install torch as this pip requirement instead ('torch==2.13.0', a wheel file)",
    )
    ap.add_argument("--venv", type=Path, default=ROOT / "build" / "app-venv")
    ap.add_argument("--dist", type=Path, default=ROOT / "dist")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--smoke-test", action="store_true", help="smoke-test the built app")
    ap.add_argument("--desktop-entry", action="store_true", help="add it to the app menu (Linux)")
    args = ap.parse_args(argv)
    work = ROOT / "build" / "pyinstaller"
    executable = args.dist / "Studio" / ("Studio.exe" if os.name == "nt" else "Studio")
    commands = build_commands(
        args.torch, args.venv, args.dist, work, args.torch_index, args.torch_requirement
    )
    if args.smoke_test:
        smoke = ROOT / "packaging" / "smoke_test.py"
        commands.append([sys.executable, str(smoke), "--app", str(executable)])
    for cmd in commands:
        print("$", shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    if args.desktop_entry:
        data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        if args.dry_run:
            print(f"would install the desktop entry under {data_home}")
        else:
            for path in install_desktop_entry(executable, data_home):
                print("installed", path)
    if not args.dry_run:
        print(f"built {executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
