#!/usr/bin/env bash
# The GPU check: SFT, DPO, GRPO with and without the micro-batch memory budget, PPO with a reward model on the
# device, one agent-RL step, LoRA with gradient checkpointing, a save and resume, and bf16 loss parity with the
# committed CPU losses; throughput and MFU where a phase trains the Qwen2-0.5B-shaped model. One JSON file in
# $OUT (else benchmarks/results/), rewritten after every phase. `--tiny` runs every phase on CPU in seconds.
#
#   benchmarks/gpu_check.sh [--tiny] [gpu_check.py options]
#
# The device image lacks some of tandem's pure-Python dependencies (pydantic; gymnasium and minigrid for the
# agent phase): put their wheels in .whl/ and they are installed from there first (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# 7 minutes at most, inside the 8 a lent GPU session gives this check; SIGTERM marks the phase it cuts timed_out
exec timeout 420 "$PYTHON" benchmarks/gpu_check.py "$@"
