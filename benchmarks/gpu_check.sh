#!/usr/bin/env bash
# SFT, DPO and GRPO throughput and MFU on a Qwen2-0.5B-shaped random bf16 model: one JSON file in $OUT
# (else benchmarks/results/). About 3-4 minutes on an H200; `--tiny` checks the script on CPU in seconds.
#
#   benchmarks/gpu_check.sh [--tiny] [gpu_check.py options]
#
# A machine without tandem's pure-Python dependencies (the device image has torch, transformers, accelerate,
# peft, tokenizers, safetensors, typer, pyyaml, matplotlib but not pydantic): put their wheels in .whl/ and they
# are installed from there first (see benchmarks/README.md for the download command).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# 7 minutes at most, inside the 8 a lent GPU session gives this check
exec timeout 420 "$PYTHON" benchmarks/gpu_check.py "$@"
