#!/usr/bin/env bash
# The checks that need a GPU, as one script for a lent GPU machine (or any CUDA machine with
# the package's dependencies): the training-step speed of each config on the GPU, wav -> wav
# conversion speed with the shipped model on the GPU, and the test suite with CUDA visible
# (every `clsvc train` in it then runs on the GPU with autocast).
#
#   bash benchmarks/device_check.sh OUTDIR     # writes OUTDIR/{env.txt,pytest.log,junit.xml,speed-*.json/.md}
#
# Each part is bounded and runs whatever the part before it did; the exit status is the tests'.
# On a GPU machine with its own Python and PyTorch but no network, carry the package's other
# dependencies as wheels for that Python and put them beside src/ on PYTHONPATH, e.g. for 3.12:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       soundfile soxr librosa audioread pooch decorator platformdirs dacite cffi pycparser
#   python3.12 -m pip wheel --no-deps -w .whl pyworld==0.3.5    # no 3.12 wheel on PyPI: build one
#   (there) pip install --no-index --no-deps --target /tmp/site .whl/*.whl
#           PYTHONPATH=$PWD/src:/tmp/site bash benchmarks/device_check.sh OUT
# Tests that need Resemblyzer (webrtcvad has no wheel) or the eval extras then fail at import.
set -u
out=${1:?usage: device_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{
    nvidia-smi -L || true
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

timeout 120 "$py" benchmarks/speed.py --device cuda --threads 4 --rounds 30 --warmup 5 \
    --train-config autovc --train-config paper --train-config paper-lean --train-config real \
    --train-config real-gpu --out "$out/speed-train-cuda.json" || true
timeout 80 "$py" benchmarks/speed.py --device cuda --threads 4 --no-train --convert arctic --repeats 5 \
    --out "$out/speed-convert-cuda.json" || true

# The whole suite; tests that need what the machine lacks (the eval extra, a browser) fail at
# import and are read off junit.xml, not mistaken for GPU faults.
# Parallel workers and a per-test bound where pytest-xdist and pytest-timeout are installed.
extra=()
if "$py" -c "import xdist" 2>/dev/null; then
    extra+=(-n "$("$py" -c "import os; print(max(1, min(12, (os.cpu_count() or 2) - 2)))")")
fi
if "$py" -c "import pytest_timeout" 2>/dev/null; then
    extra+=(--timeout 150)
fi
timeout "${TEST_TIMEOUT:-360}" "$py" -m pytest -v -p no:cacheprovider -rfE "${extra[@]}" \
    --junitxml "$out/junit.xml" tests > "$out/pytest.log" 2>&1
status=$?
tail -n 40 "$out/pytest.log"

exit $status
