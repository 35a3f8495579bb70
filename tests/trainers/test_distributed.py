"""A 2-process data-parallel run (gloo on CPU) ends with the weights of a 1-process run with the same global batch."""

import os
import subprocess
import sys

from checks import assert_same_weights, max_weight_change


def launch(processes, model, out, command="sft", *extra):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "tandem.cli", command, "--model", str(model), "--out", str(out),
            "--n-train", "128", "--n-eval", "4", "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "4",
            "--mixed-precision", "no", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "model"


def test_two_processes_match_one_process_sft(tmp_path, tiny_model_dir):
    one = launch(1, tiny_model_dir, tmp_path / "one")
    two = launch(2, tiny_model_dir, tmp_path / "two")
    assert max_weight_change(tiny_model_dir, one) > 1e-3
    assert_same_weights(one, two, atol=1e-5)


def test_two_processes_match_one_process_reward_model(tmp_path, tiny_model_dir):
    one = launch(1, tiny_model_dir, tmp_path / "one", "rm")
    two = launch(2, tiny_model_dir, tmp_path / "two", "rm")
    assert_same_weights(one, two, atol=1e-5)
