"""Smoke test of the built artefact: build a wheel, install it into a fresh virtual environment,
and run the installed app the way a user would (CLI, demo training, the window offscreen).

    python packaging/smoke_test.py            # builds into a temp folder, cleans up after
    python packaging/smoke_test.py --keep     # keeps the venv for inspection
    python packaging/smoke_test.py --app dist/Studio/Studio   # the frozen app (build_app.py)
    python packaging/smoke_test.py --app .venv/bin/studio     # an installed app

Not part of the unit tests (it installs torch into a new environment: a minute or more).
Extra pip arguments for the torch install (a CPU-only index, say) go after ``--pip-args``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}")
    return result


def check_app(app: list[str], tmp: Path) -> None:
    """Run the app as a user would: the CLI, the demo dataset, five training steps, sampling,
    and the window opened offscreen and closed again. ``app`` starts it (``studio``, or the
    frozen app's executable)."""
    env = dict(os.environ, STUDIO_HOME=str(tmp / "home"), QT_QPA_PLATFORM="offscreen")
    print(run([*app, "--version"], env=env).stdout.strip())
    assert "gan.dcgan" in run([*app, "families"], env=env).stdout
    run([*app, "demo", "--count", "200"], env=env)
    out = run(
        [
            *app,
            "train",
            "--data",
            "demo",
            "--steps",
            "5",
            "--batch-size",
            "16",
            "--set",
            "width=8",
            "--out",
            str(tmp / "run"),
            "--device",
            "cpu",
        ],
        env=env,
    )
    assert "step 5/5" in out.stdout, out.stdout
    run(
        [*app, "sample", "--run", str(tmp / "run"), "-n", "4", "--out", str(tmp / "g.png")],
        env=env,
    )
    assert (tmp / "g.png").stat().st_size > 0
    # The window opens offscreen and closes cleanly.
    run(app, env=dict(env, STUDIO_QUIT_AFTER_MS="3000"), timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--app",
        help="check this already built or installed app instead of building a wheel "
        "(dist/Studio/Studio, .venv/bin/studio)",
    )
    ap.add_argument("--pip-args", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="studio-smoke-"))
    try:
        if args.app:
            check_app([str(Path(args.app).resolve())], tmp)
            print("smoke test passed")
            return
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist"), str(ROOT)])
        wheel = next((tmp / "dist").glob("studio-*.whl"))
        run([sys.executable, "-m", "venv", str(tmp / "venv")])
        bindir = tmp / "venv" / ("Scripts" if os.name == "nt" else "bin")
        pip = [str(bindir / "python"), "-m", "pip", "install", "-q"]
        run(pip + [*args.pip_args, str(wheel)])
        check_app([str(bindir / "studio")], tmp)
        print("smoke test passed")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
