#!/usr/bin/env bash
# The first thing to run on a GPU machine (a plain checkout, nothing installed): compiled scan kernels vs the
# reference, determinism, timings vs the floor and the torch path, one bf16 training step of ViT base and Mamba
# base. Results: scripts/results/gpu_check_<device>.md and .json. `--dry-run`: the same on CPU, tiny, interpreted.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
