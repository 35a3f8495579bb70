"""Checkpoints are atomic and an interrupted run (even by SIGKILL) resumes to the same weights."""

import os
import signal
import subprocess
import sys
import time

import pytest

from checks import assert_same_weights
from tandem.trainers.checkpoint import atomic_directory, latest_checkpoint, mark_latest
from tandem.trainers.sft import SFTConfig, run_sft


def sft_command(model, out, *extra):
    return [sys.executable, "-m", "tandem.cli", "sft", "--model", str(model), "--out", str(out), "--n-train", "256",
            "--n-eval", "4", "--batch-size", "8", "--micro-batch-size", "4", "--max-steps", "60", "--save-every", "4",
            "--mixed-precision", "no", "--no-progress", *extra]


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path, tiny_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(sft_command(tiny_model_dir, reference), check=True, env=env, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(sft_command(tiny_model_dir, interrupted), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(interrupted / "checkpoints") is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    found = latest_checkpoint(interrupted / "checkpoints")
    assert found is not None and found.name < "step-0000060", "the run should have been killed part-way"
    assert not (interrupted / "model").exists()

    resumed = subprocess.run(sft_command(tiny_model_dir, interrupted, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert_same_weights(reference / "model", interrupted / "model")


def test_rerun_without_resume_refuses_to_overwrite(tmp_path, tiny_model_dir):
    config = SFTConfig(model=tiny_model_dir, out=tmp_path / "run", n_train=32, n_eval=0, batch_size=8, max_steps=1,
                       mixed_precision="no", progress=False)
    run_sft(config)
    with pytest.raises(FileExistsError, match="--resume"):
        run_sft(config)


def test_atomic_directory_keeps_the_old_version_when_writing_fails(tmp_path):
    target = tmp_path / "step-0000001"
    atomic_directory(target, lambda folder: (folder / "weights").write_text("old"))

    def crash(folder):
        (folder / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_directory(target, crash)
    assert (target / "weights").read_text() == "old"


def test_latest_pointer_and_pruning(tmp_path):
    for step in (1, 2, 3):
        folder = atomic_directory(tmp_path / f"step-{step:07d}", lambda f: (f / "x").write_text("x"))
        mark_latest(tmp_path, folder, keep=2)
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-0000002", "step-0000003"]


def test_resume_falls_back_past_a_damaged_checkpoint_and_a_lost_pointer(tmp_path, tiny_model_dir, capsys):
    import yaml

    options = dict(model=tiny_model_dir, out=tmp_path / "run", n_train=32, n_eval=0, batch_size=8, save_every=1,
                   keep_checkpoints=3, mixed_precision="no", progress=False)
    run_sft(SFTConfig(max_steps=3, **options))
    checkpoints = tmp_path / "run" / "checkpoints"
    weights = checkpoints / "step-0000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    (checkpoints / "latest").unlink()  # and the pointer lost
    import shutil

    shutil.rmtree(tmp_path / "run" / "model")
    run_sft(SFTConfig(max_steps=4, resume=True, lr=2e-3, **options))
    out = capsys.readouterr().out
    assert "step-0000003 cannot be loaded" in out and "resumed from" in out and "(step 2)" in out
    assert "max_steps: 3 -> 4" in out and "lr:" in out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["max_steps"] == 4
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
