"""Beyond one process, through accelerate on 2 CPU processes (gloo): FSDP2 for SFT, RM, DPO and GRPO matches a
1-process run; its sharded checkpoints resume exactly and export to one ordinary HF directory; 2 "nodes" of one
process each on 127.0.0.1 match a 1-process run; engines that cannot run here are refused with a message."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from checks import max_weight_difference

pytestmark = pytest.mark.e2e

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
COMMON = ["--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "4", "--lr", "1e-3", "--mixed-precision", "no",
          "--no-progress", "--threads", "1"]
OPTIONS = {
    "sft": ["--n-train", "128", "--n-eval", "4"],
    "rm": ["--n-train", "128", "--n-eval", "4"],
    "dpo": ["--n-train", "64", "--n-eval", "4"],
    "grpo": ["--task", "sentiment", "--reward", "length_reward:score", "--n-prompts", "64", "--n-eval", "4",
             "--samples-per-prompt", "4", "--micro-batch-size", "4", "--max-steps", "2", "--max-new-tokens", "8",
             "--kl-coef", "0.04"],
}
REWARD = "def score(prompts, completions, **kw):\n    return [len(c) / 10.0 for c in completions]\n"


def run(args, out, check=True):
    (out.parent / "length_reward.py").write_text(REWARD)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(out.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def tandem_args(command, model, out, *extra):
    return ["-m", "tandem.cli", command, "--model", str(model), "--out", str(out), *COMMON, *OPTIONS[command], *extra]


def one_process(command, model, out, *extra):
    run([sys.executable, *tandem_args(command, model, out, *extra)], out)
    return out / "model"


def accelerate(config, command, model, out, *extra, launcher=(), check=True):
    args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--num_processes", "2", *launcher, *tandem_args(command, model, out, *extra)]
    return run(args, out, check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny_model_dir):
    """One 1-process SFT run, and one FSDP2 run on 2 processes with a sharded checkpoint every 2 steps."""
    root = tmp_path_factory.mktemp("sft-runs")
    one = one_process("sft", tiny_model_dir, root / "one")
    accelerate("fsdp2.yaml", "sft", tiny_model_dir, root / "fsdp", "--save-every", "2", "--final-checkpoint")
    return root, one, root / "fsdp"


def test_fsdp_sft_matches_one_process(sft_runs, tiny_model_dir):
    _, one, fsdp = sft_runs
    assert max_weight_difference(tiny_model_dir, one) > 1e-3  # 4 Adam steps (warm-up, decay) moved the weights
    # measured 1.2e-7: the same global batches, sums in another order
    assert max_weight_difference(one, fsdp / "model") < 1e-5
    # it really was sharded: each process wrote its own shard of the weights and of the optimizer state
    for state in ("model", "optimizer"):
        assert sorted(p.name for p in (fsdp / "checkpoints" / "step-0000004" / "sharded" / state).glob("*.distcp")) \
            == ["__0_0.distcp", "__1_0.distcp"]


def test_fsdp_out_model_is_a_plain_hf_directory(sft_runs):
    from transformers import AutoModelForCausalLM

    model_dir = sft_runs[2] / "model"
    assert (model_dir / "model.safetensors").is_file() and not (model_dir / "sharded").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_a_sharded_checkpoint_exports_to_the_final_model(sft_runs, tmp_path):
    from tandem.models.commands import ConvertConfig, run_convert

    _, _, fsdp = sft_runs
    exported = run_convert(ConvertConfig(model=fsdp / "checkpoints" / "step-0000004", out=tmp_path / "exported"))
    assert (exported / "tokenizer.json").is_file()
    assert max_weight_difference(fsdp / "model", exported) == 0.0


def test_a_sharded_checkpoint_resumes_exactly(sft_runs, tiny_model_dir, tmp_path):
    root, _, fsdp = sft_runs
    interrupted = tmp_path / "interrupted"
    shutil.copytree(fsdp, interrupted)
    shutil.rmtree(interrupted / "model")
    shutil.rmtree(interrupted / "checkpoints" / "step-0000004")
    (interrupted / "checkpoints" / "latest").write_text("step-0000002")
    result = accelerate("fsdp2.yaml", "sft", tiny_model_dir, interrupted, "--save-every", "2", "--final-checkpoint",
                        "--resume")
    assert "resumed from" in result.stdout + result.stderr
    assert max_weight_difference(fsdp / "model", interrupted / "model") == 0.0


@pytest.mark.parametrize("command", ["rm", "dpo", "grpo"])
def test_fsdp_matches_one_process(command, tmp_path, tiny_model_dir):
    one = one_process(command, tiny_model_dir, tmp_path / "one")
    accelerate("fsdp2.yaml", command, tiny_model_dir, tmp_path / "fsdp")
    assert max_weight_difference(tiny_model_dir, one, shared_only=True) > 1e-3  # the run moved the weights
    # measured: rm 6e-8, dpo 2e-8, grpo 2.5e-6 (keyed rollouts: the same completions on 1 and 2 processes)
    assert max_weight_difference(one, tmp_path / "fsdp" / "model") < 5e-5


def test_two_nodes_of_one_process_match_one_process(sft_runs, tiny_model_dir, tmp_path):
    """2 'machines' on 127.0.0.1, each launched by its own accelerate launch (machine rank 0 and 1), as on a cluster."""
    root, one, _ = sft_runs
    port = str(free_port())
    launches = []
    for rank in (0, 1):
        launcher = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                    "--main_process_port", port]
        args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                "--num_processes", "2", *launcher, *tandem_args("sft", tiny_model_dir, tmp_path / "nodes")]
        (tmp_path / "length_reward.py").write_text(REWARD)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        launches.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    # measured 1.2e-7
    assert max_weight_difference(one, tmp_path / "nodes" / "model") < 1e-5


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="FSDP1 runs on GPUs")
def test_fsdp1_is_refused_on_cpu_with_a_message(monkeypatch):
    """accelerate launch itself refuses FSDP1 on a CPU-only machine ("no available devices found"); launched
    otherwise (torchrun with accelerate's variables), tandem says what to change instead of running DDP."""
    from tandem.trainers.distributed import EngineError, make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(EngineError, match="only FSDP2 runs: set fsdp_version: 2"):
        make_accelerator("no")


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_matches_one_process(stage, sft_runs, tiny_model_dir, tmp_path):
    """Where DeepSpeed is installed (not a tandem dependency): ZeRO-2 and ZeRO-3 on its CPU accelerator over gloo."""
    pytest.importorskip("deepspeed")
    _, one, _ = sft_runs
    accelerate(f"deepspeed_zero{stage}.yaml", "sft", tiny_model_dir, tmp_path / "zero")
    # measured: ZeRO-2 4.3e-8, ZeRO-3 6.8e-7
    assert max_weight_difference(one, tmp_path / "zero" / "model") < 1e-5


def test_deepspeed_without_deepspeed_installed_says_how_to_install_it(tmp_path, tiny_model_dir):
    try:
        import deepspeed  # noqa: F401
        pytest.skip("deepspeed is installed")
    except ImportError:
        pass
    result = accelerate("deepspeed_zero2.yaml", "sft", tiny_model_dir, tmp_path / "zero", check=False)
    assert result.returncode != 0 and "pip3 install deepspeed" in result.stderr
