#!/usr/bin/env bash
# The GPU check (docs/gpu.md): install what is missing (from .whl/ without network), run the GPU
# tests of cupy, torch on CUDA and jax on GPU, time the kernels against the HBM copy floor and the
# per-example gradient sketches of the GPT-2 config, all within one time budget (default 420 s).
# Results go to $OUT (default gpu-check-out/). Extra arguments go to benchmarks/gpu_check.py,
# e.g. --pypi (install from PyPI), --budget-s 300, --stages tests,kernels, --tiny (CPU smoke run).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "${OUT:-gpu-check-out}" "$@"
