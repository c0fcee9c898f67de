#!/bin/sh
# Install Studio into a virtual environment (.venv beside pyproject.toml) and launch it, with the
# torch build that fits this machine:
#   - an NVIDIA GPU (nvidia-smi lists one): PyPI's torch, which brings its CUDA libraries (~6 GB
#     environment in all);
#   - no NVIDIA GPU on Linux or Windows: the CPU build from PyTorch's CPU index (~1.5 GB);
#   - macOS: PyPI's torch (it has no CUDA; Apple GPUs are used through MPS).
#
#   sh packaging/install.sh                      # detect, install, launch
#   STUDIO_TORCH=cpu sh packaging/install.sh     # or cuda: skip the detection
#   STUDIO_NO_LAUNCH=1 sh packaging/install.sh   # install only
#
# PYTHON (default python3) makes the environment; STUDIO_VENV (default .venv) names it.
# Running it again reuses the environment and keeps the torch already in it.
set -eu

case $0 in
*/*) here=${0%/*} ;;
*) here=. ;;
esac
cd "$here/.."

PYTHON=${PYTHON:-python3}
VENV=${STUDIO_VENV:-.venv}
CPU_INDEX=https://download.pytorch.org/whl/cpu
torch=${STUDIO_TORCH:-auto}

if [ "$torch" = auto ]; then
    if [ "$(uname -s)" = Darwin ]; then
        torch=pypi
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        torch=cuda
    else
        torch=cpu
    fi
fi

case $torch in
cpu)
    echo "Studio: no NVIDIA GPU found; installing the CPU build of torch (about 1.5 GB in all)."
    set -- install torch --index-url "$CPU_INDEX"
    ;;
cuda)
    echo "Studio: NVIDIA GPU found; installing torch with its CUDA libraries (about 6 GB in all)."
    set -- install torch
    ;;
pypi)
    echo "Studio: installing PyPI's torch for macOS."
    set -- install torch
    ;;
*)
    echo "Studio: STUDIO_TORCH must be auto, cpu or cuda, not '$torch'." >&2
    exit 2
    ;;
esac

[ -x "$VENV/bin/pip" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" "$@"
"$VENV/bin/pip" install -e .
[ -n "${STUDIO_NO_LAUNCH:-}" ] || exec "$VENV/bin/studio"
