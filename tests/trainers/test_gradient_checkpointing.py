"""--gradient-checkpointing: activations recomputed in the backward give the same training, in fp32 to rounding."""

import json

import pytest

from tandem.models.loading import add_lora, enable_gradient_checkpointing, load_causal_lm
from tandem.trainers.grpo import GRPOConfig, run_grpo
from tandem.trainers.ppo import PolicyWithValueHead
from tandem.trainers.sft import SFTConfig, run_sft


def _losses(folder):
    return [json.loads(line)["train/loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_checkpointed_sft_trains_exactly_as_without(tmp_path, tiny_model_dir):
    options = dict(model=tiny_model_dir, n_train=32, batch_size=8, micro_batch_size=4, max_steps=4, lr=1e-3,
                   mixed_precision="no", progress=False, n_eval=0, log_every=1)
    run_sft(SFTConfig(out=tmp_path / "plain", **options))
    run_sft(SFTConfig(out=tmp_path / "checkpointed", gradient_checkpointing=True, **options))
    plain, checkpointed = _losses(tmp_path / "plain"), _losses(tmp_path / "checkpointed")
    assert plain[-1] < plain[0] and checkpointed == pytest.approx(plain, rel=1e-5)


def test_checkpointed_grpo_runs_and_generates_with_its_cache(tmp_path, tiny_model_dir):
    result = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=1,
                                 batch_size=2, samples_per_prompt=2, max_new_tokens=6, n_eval=0, progress=False,
                                 mixed_precision="no", gradient_checkpointing=True, lora_rank=4))
    assert result.model_dir.exists()


@pytest.mark.parametrize("wrap", ["plain", "lora", "value_head"])
def test_checkpointing_reaches_the_model_under_its_wrappers(tiny_model_dir, wrap):
    model = load_causal_lm(tiny_model_dir)
    wrapped = {"plain": lambda m: m, "lora": lambda m: add_lora(m, 4, 8), "value_head": PolicyWithValueHead}[wrap](model)
    enable_gradient_checkpointing(wrapped)
    assert model.is_activation_checkpointing
