"""`tandem dpo` through its Python API: reference facts at the first step, learning, LoRA, reference-free losses."""

import json
import math

import pytest
from pydantic import ValidationError

from tandem.trainers.dpo import DPOConfig, run_dpo

FAST = {"mixed_precision": "no", "progress": False, "n_train": 64, "n_eval": 16, "batch_size": 16,
        "micro_batch_size": 8, "log_every": 1}


def first_logged(out, key="train/loss"):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r[key] for r in records if key in r)


@pytest.mark.parametrize("loss, beta, expected", [
    ("sigmoid", 0.1, math.log(2)),
    ("robust", 0.1, math.log(2)),   # with label_smoothing 0.1 the robust loss at h = 0 is still ln 2
    ("ipo", 0.1, 1 / (4 * 0.1**2)),
    ("ipo", 0.5, 1 / (4 * 0.5**2)),
    ("hinge", 0.1, 1.0),
])
def test_first_step_loss_equals_the_reference_fact(tmp_path, tiny_model_dir, loss, beta, expected):
    config = DPOConfig(model=tiny_model_dir, out=tmp_path / "run", loss=loss, beta=beta, max_steps=1,
                       label_smoothing=0.1 if loss == "robust" else 0.0, **FAST)
    run_dpo(config)
    assert first_logged(tmp_path / "run") == pytest.approx(expected, rel=1e-5)


def test_dpo_separates_chosen_from_rejected(tmp_path, tiny_model_dir):
    result = run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", max_steps=12, lr=3e-3,
                               **{**FAST, "n_train": 128}))
    assert result.metrics["eval/rewards/accuracy"] > 0.7
    assert result.metrics["eval/rewards/margin"] > 0
    assert result.metrics["eval/kl_to_reference"] > 0


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_train(tmp_path, tiny_model_dir, loss):
    result = run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", loss=loss, max_steps=6, lr=3e-3, **FAST))
    assert math.isfinite(result.metrics["eval/loss"])


def test_lora_dpo_uses_the_base_as_reference(tmp_path, tiny_model_dir):
    result = run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", lora_rank=4, max_steps=4, lr=3e-3, **FAST))
    assert first_logged(tmp_path / "run") == pytest.approx(math.log(2), rel=1e-5)
    assert (result.model_dir / "adapter_model.safetensors").exists()
    assert result.metrics["eval/kl_to_reference"] != 0


def test_unknown_loss_name_lists_the_known_ones():
    with pytest.raises(ValidationError, match="known: sigmoid"):
        DPOConfig(loss="dpo-plus-plus")


@pytest.mark.parametrize("loss, expected", [
    ("sigmoid", {"label_smoothing": 0.2}),
    ("orpo", {"orpo_lambda": 0.7}),
    ("ipo", {"ipo_average": False}),
    ("simpo", {"simpo_gamma": 0.5, "label_smoothing": 0.2}),
    ("kto", {"desirable_weight": 1.0, "undesirable_weight": 2.0}),
    ("hinge", {}),
])
def test_each_loss_gets_the_options_its_registry_entry_declares(loss, expected):
    from tandem.trainers.dpo import loss_options

    config = DPOConfig(loss=loss, label_smoothing=0.2, orpo_lambda=0.7, ipo_average=False, undesirable_weight=2.0)
    assert loss_options(config) == expected


def test_orpo_lambda_and_ipo_average_are_command_line_options():
    from typer.testing import CliRunner

    from tandem.cli import app

    result = CliRunner().invoke(app, ["dpo", "--help"], env={"COLUMNS": "200"})
    assert "--orpo-lambda" in result.output and "--ipo-average" in result.output


@pytest.mark.e2e
def test_dpo_on_sampled_pairs_raises_gold_reward_over_sft(tmp_path, smoke_pipeline):
    out, report = smoke_pipeline
    sft_gold = next(s["gold_reward"] for s in report["stages"] if s["name"] == "sft")
    result = run_dpo(DPOConfig(model=out / "sft" / "model", out=tmp_path / "dpo", pairs="sampled", n_train=512,
                               n_eval=64, batch_size=32, epochs=2, progress=False))
    assert result.metrics["eval/gold_reward"] > sft_gold + 0.1


def test_kto_first_step_is_half_and_reference_point_zero(tmp_path, tiny_model_dir):
    run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", loss="kto", max_steps=1, **FAST))
    assert first_logged(tmp_path / "run") == pytest.approx(0.5, rel=1e-5)
    assert first_logged(tmp_path / "run", "train/kl_reference_point") == pytest.approx(0.0, abs=1e-6)


def test_kto_learns_desirable_from_undesirable(tmp_path, tiny_model_dir):
    result = run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", loss="kto", max_steps=12, lr=3e-3,
                               **{**FAST, "n_train": 128}))
    assert result.metrics["eval/rewards/accuracy"] > 0.6


def test_reference_log_probs_are_computed_only_for_the_examples_the_run_reads(tmp_path, tiny_model_dir, monkeypatch):
    """One step of 16 pairs out of 64: 16 train examples (and the 16 held out at evaluation) get a reference
    forward, each once, not the whole dataset up front."""
    from tandem.trainers.dpo import DPOTrainer

    cached = []
    original = DPOTrainer._cache_reference
    monkeypatch.setattr(DPOTrainer, "_cache_reference", lambda self, examples: (cached.extend(map(id, examples)),
                                                                                   original(self, examples))[1])
    run_dpo(DPOConfig(model=tiny_model_dir, out=tmp_path / "run", max_steps=1, **FAST))
    assert len(cached) == 16 + 16 and len(set(cached)) == len(cached)
    assert first_logged(tmp_path / "run") == pytest.approx(math.log(2), rel=1e-5)
