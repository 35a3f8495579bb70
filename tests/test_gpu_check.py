"""The GPU check (`benchmarks/gpu_check.sh`) runs end to end in its --tiny mode on CPU: the GPU is never needed here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_gpu_check_tiny_writes_throughput_and_mfu_of_sft_dpo_and_grpo(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert report["mode"] == "tiny" and report["model"]["shape"] == "tiny"
    for name in ("sft", "dpo", "grpo"):
        result = report[name]
        assert result["tokens_per_s"] > 0 and result["timed_steps"] >= 1, name
        assert result["mfu_vs_measured_bf16_peak"] > 0 and result["achieved_tflops"] > 0, name
    assert report["grpo"]["sequences_per_step"] == 4 and report["grpo"]["mean_seconds_per_step"]["train/time/generate"] > 0
