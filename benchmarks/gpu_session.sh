#!/usr/bin/env bash
# The GPU checks and measurements the CPU suite cannot make, in phases that each fit in a
# 10-minute command on a CUDA machine. Output goes to $OUT (or benchmarks/out/gpu).
#
# On a CUDA machine with this checkout and torch installed:
#     bash benchmarks/gpu_session.sh tests      # tests/test_cuda.py: options, fp16 scaling, compile,
#                                               # CUDA graphs, real OOM, memory rungs, offload
#     bash benchmarks/gpu_session.sh train      # train_speed.py --device cuda, loader.py --device cuda
#     bash benchmarks/gpu_session.sh generate   # generate_overhead.py --sd15-unet --compile
#     bash benchmarks/gpu_session.sh all        # the three, one after the other
#
# Packages the machine lacks can be brought as wheels in ./.whl (see `fetch`, run where pip can
# reach the registry); they are installed into /tmp/site and put on PYTHONPATH.
#     bash benchmarks/gpu_session.sh fetch      # download the wheels into ./.whl (not on the GPU box)
set -uo pipefail
cd "$(dirname "$0")/.."
phase="${1:-all}"
out="${OUT:-benchmarks/out/gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$phase" == fetch ]]; then
    # What a bare CUDA image with torch, transformers and accelerate usually lacks for these phases.
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 pytest-timeout
    exit $?
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" \
    | tee "$out/machine.txt" || exit 1

run() {  # run NAME COMMAND...: tee the output to $out/NAME.txt, keep going on failure
    local name="$1"; shift
    echo "== $name: $*" | tee "$out/$name.txt"
    "$@" 2>&1 | tee -a "$out/$name.txt"
    echo "== $name exit ${PIPESTATUS[0]}" | tee -a "$out/$name.txt"
}

if [[ "$phase" == tests || "$phase" == all ]]; then
    # -p no:pytest-qt: the CUDA tests need no Qt, and the GPU image may have no PySide6.
    run cuda_tests "$py" -m pytest tests/test_cuda.py -v -p no:pytest-qt -p no:cacheprovider -o addopts="" \
        --timeout 540
fi
if [[ "$phase" == train || "$phase" == all ]]; then
    run train_speed "$py" benchmarks/train_speed.py --device cuda
    run loader "$py" benchmarks/loader.py --device cuda
fi
if [[ "$phase" == generate || "$phase" == all ]]; then
    run generate_overhead "$py" benchmarks/generate_overhead.py --sd15-unet --compile --device cuda
fi
