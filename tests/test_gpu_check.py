"""The GPU check (`benchmarks/gpu_check.sh`) runs every phase in its --tiny mode on CPU: the GPU is never needed here."""

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Spelled out, not read from the script: a phase dropped from it fails here.
PHASES = ("parity", "save_resume", "ppo_reward_model", "agent_rl", "sft", "dpo", "grpo", "grpo_no_budget",
          "lora_checkpointing")


@pytest.mark.e2e
def test_gpu_check_tiny_runs_every_phase_on_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    errors = {name: phase.get("error") for name, phase in report["phases"].items() if phase["status"] != "ok"}
    assert done.returncode == 0 and not errors, (errors, done.stderr[-3000:])
    assert report["mode"] == "tiny" and report["complete"] and report["failed"] == []
    assert tuple(report["phases"]) == PHASES
    assert {"torch", "transformers", "accelerate", "peft", "vllm"} <= set(report["packages"])
    assert report["packages"]["torch"] and report["memory_measure"]
    for name in PHASES:
        assert report["phases"][name]["seconds"] > 0 and "peak_memory_bytes" in report["phases"][name], name
    phases = report["phases"]
    parity = phases["parity"]
    assert parity["reference_source"] == "gpu_check_reference.json" and parity["tolerance"] == 1e-4
    assert max(parity["relative_gaps"].values()) <= 1e-4
    assert phases["save_resume"]["logged_steps"] == [1, 2, 3] and phases["save_resume"]["final_step"] == 3
    assert phases["ppo_reward_model"]["devices"]["reward_model"] == phases["ppo_reward_model"]["devices"]["policy"]
    # --tiny's budget is small enough to split the update's micro-batches; without one they hold every row
    no_budget = phases["grpo_no_budget"]
    assert phases["grpo"]["micro_batch_rows"] < no_budget["micro_batch_rows"] == no_budget["micro_batch_size"]
    agent = phases["agent_rl"]
    assert agent["kept_prefill_reused"] == 1.0 and agent["recomputed_reused"] == 0.0
    assert abs(agent["kept_prefill_loss"] - agent["recomputed_loss"]) <= 1e-3
    for name in ("sft", "dpo", "grpo", "lora_checkpointing"):
        assert phases[name]["tokens_per_s"] > 0 and phases[name]["mfu_vs_measured_bf16_peak"] > 0, name


def test_a_failing_phase_records_its_error_and_the_next_one_runs_after_the_json_is_written(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    gpu_check = importlib.import_module("gpu_check")
    out = tmp_path / "check.json"

    def broken(ctx):
        raise ValueError("this phase breaks")

    def reads_the_report(ctx):  # what a time-out at this point would leave behind
        return {"seen": {name: phase["status"] for name, phase in json.loads(out.read_text())["phases"].items()}}

    monkeypatch.setattr(gpu_check, "PHASES", {"broken": broken, "reads_the_report": reads_the_report})
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--tiny", "--device", "cpu", "--out", str(out)])
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            gpu_check.main()
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)  # main() turns SIGTERM into a time-out
    assert stopped.value.code == 1
    report = json.loads(out.read_text())
    broken_phase, next_phase = report["phases"]["broken"], report["phases"]["reads_the_report"]
    assert broken_phase["status"] == "error" and broken_phase["error"]["type"] == "ValueError"
    assert broken_phase["error"]["message"] == "this phase breaks" and "raise ValueError" in "\n".join(broken_phase["error"]["traceback"])
    assert next_phase["status"] == "ok" and next_phase["seen"] == {"broken": "error", "reads_the_report": "running"}
    assert report["failed"] == ["broken"] and not report["complete"]
