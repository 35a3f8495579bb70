"""Nothing silent: invalid options fail at parse time, a non-finite gradient never reaches the weights."""

import math

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from tandem.data import records_from_dicts, validate
from tandem.data.errors import DataError
from tandem.trainers.loop import NonFiniteError, too_few_examples_message
from tandem.trainers.sft import SFTConfig, SFTTrainer, run_sft


@pytest.mark.parametrize("options, field", [
    ({"lr": math.inf}, "lr"), ({"lr": 1e10}, "lr"), ({"lr": -1.0}, "lr"), ({"max_grad_norm": math.nan}, "max_grad_norm"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"), ({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"),
    ({"warmup_ratio": math.nan}, "warmup_ratio"),
])
def test_invalid_options_fail_at_parse_time(options, field):
    with pytest.raises(ValidationError) as caught:
        SFTConfig(**options)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_a_nan_margin_is_a_data_error(sentiment_tokenizer):
    rows = [{"prompt": "a", "chosen": " good", "rejected": " bad", "margin": 0.5},
            {"prompt": "a", "chosen": " good", "rejected": " bad", "margin": float("nan")}]
    with pytest.raises(DataError, match="row 2, field 'margin': expected a finite number"):
        validate(records_from_dicts(rows), "preference", sentiment_tokenizer)


def _nan_loss_sft(monkeypatch, bad_steps: set[int]):
    """SFT whose loss is NaN at the given (0-based) steps."""
    original = SFTTrainer.compute_loss
    calls = {"n": 0}

    def compute_loss(self, model, batch):
        out = original(self, model, batch)
        step = calls["n"]
        calls["n"] += 1
        if step in bad_steps:
            out.loss_sum = out.loss_sum * float("nan")
        return out

    monkeypatch.setattr(SFTTrainer, "compute_loss", compute_loss)


def options(model_dir, out, **extra):
    return dict(model=model_dir, out=out, n_train=32, n_eval=0, batch_size=8, micro_batch_size=8,
                mixed_precision="no", progress=False, log_every=1, **extra)


def test_a_nan_step_is_skipped_and_the_saved_weights_are_finite(tmp_path, tiny_model_dir, monkeypatch, capsys):
    _nan_loss_sft(monkeypatch, bad_steps={1})
    result = run_sft(SFTConfig(**options(tiny_model_dir, tmp_path / "run", max_steps=3)))
    weights = load_file(str(result.model_dir / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert "non-finite gradient at step 2" in capsys.readouterr().out
    last = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert '"train/skipped_steps": 1' in last


def test_too_many_nan_steps_stop_the_run_without_saving_a_model(tmp_path, tiny_model_dir, monkeypatch):
    _nan_loss_sft(monkeypatch, bad_steps={0, 1, 2, 3})
    with pytest.raises(NonFiniteError, match="not finite 2 times .* step 2"):
        run_sft(SFTConfig(**options(tiny_model_dir, tmp_path / "run", max_steps=4, max_bad_steps=1)))
    assert not (tmp_path / "run" / "model").exists()


def test_the_cli_reports_a_bad_config_file_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from tandem.cli import app

    broken = tmp_path / "bad.yaml"
    broken.write_text("lr: [1, 2\n")
    for config in (broken, tmp_path / "missing.yaml"):
        result = CliRunner().invoke(app, ["sft", "--config", str(config)])
        assert result.exit_code == 2 and "--config" in result.output and "Traceback" not in result.output


def test_rewards_are_bounded_and_overflow_or_exit_is_reported():
    from tandem.rewards import RewardError, score_safely

    def huge(prompts, completions):
        return [1e300, 0.5]

    with pytest.raises(RewardError, match="beyond the bound"):
        score_safely(huge, ["a", "b"], ["x", "y"])
    skipped = score_safely(huge, ["a", "b"], ["x", "y"], on_error="skip")
    assert skipped.rewards == [None, 0.5] and skipped.report.counts == {"out_of_bounds": 1}
    assert score_safely(huge, ["a", "b"], ["x", "y"], bound=1e301).rewards == [1e300, 0.5]
    with pytest.raises(RewardError, match="too large"):
        score_safely(lambda p, c: [10**400] * len(p), ["a"], ["x"])
    with pytest.raises(RewardError, match="SystemExit"):
        score_safely(lambda p, c: exit(0), ["a"], ["x"])

    def mutating(prompts, completions):
        prompts.clear()
        return [1.0]

    prompts = ["a"]
    assert score_safely(mutating, prompts, ["x"]).rewards == [1.0] and prompts == ["a"]


def test_skip_with_every_sample_failing_stops_the_run(tmp_path, tiny_model_dir, monkeypatch):
    from tandem.rewards import RewardError
    from tandem.trainers.grpo import GRPOConfig, run_grpo

    (tmp_path / "broken_reward.py").write_text("def score(prompts, completions, **kw):\n    raise KeyError('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardError, match="KeyError"):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="broken_reward:score",
                            reward_errors="skip", max_steps=1, batch_size=2, samples_per_prompt=2, max_new_tokens=4,
                            n_eval=0, progress=False, mixed_precision="no"))
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("field, value, listed", [
    ("advantage", "grpoo", "dr_grpo, gae, grpo"), ("policy_loss", "ppo", "gspo, ppo_clip"),
    ("kl_estimator", "k4", "k1, k2, k3"), ("loss_agg", "mean", "token-mean"), ("task", "nope", "arithmetic"),
])
def test_registered_names_are_checked_when_the_config_is_parsed(field, value, listed):
    from tandem.trainers.grpo import GRPOConfig

    with pytest.raises(ValidationError, match=listed):
        GRPOConfig(**{field: value})


def test_score_only_advantages_come_from_the_registry():
    from tandem.algorithms.advantages import SCORE_ONLY

    assert {name for name, flag in SCORE_ONLY.items() if flag} == {"grpo", "dr_grpo", "rloo", "reinforce_plus_plus_baseline"}


def test_an_advantage_that_needs_values_fails_before_any_rollout_without_a_value_head(tmp_path, tiny_model_dir):
    from tandem.trainers.grpo import GRPOConfig, run_grpo

    with pytest.raises(ValueError, match="'gae' needs critic values, which GRPOTrainer has not"):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", advantage="gae", max_steps=1, batch_size=2,
                            samples_per_prompt=2, n_eval=0, progress=False, mixed_precision="no"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_dual_clip_reaches_ppo_clip():
    from tandem.trainers.grpo import GRPOConfig, GRPOTrainer

    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.config = GRPOConfig(dual_clip=3.0)
    assert trainer._policy_options() == {"dual_clip": 3.0}


def test_too_few_examples_for_one_batch_says_which_data_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.jsonl").write_text("")
    config = SFTConfig(data="tiny.jsonl", batch_size=8)
    assert too_few_examples_message(config, 3) == (
        "the training data (tiny.jsonl) has 3 examples after any evaluation split, fewer than one batch of 8: "
        "lower --batch-size to at most 3 or give more records")
    no_data = too_few_examples_message(SFTConfig(task="sentiment"), 0)
    assert "(task 'sentiment') has 0 examples" in no_data and no_data.endswith(": give more records")


def test_a_reward_that_hangs_is_a_reported_timeout():
    import time as clock

    from tandem.rewards import RewardError, score_safely

    def slow(prompts, completions):
        clock.sleep(30)
        return [1.0] * len(prompts)

    started = clock.monotonic()
    with pytest.raises(RewardError, match="within 0.2 s"):
        score_safely(slow, ["a", "b"], ["x", "y"], timeout=0.2)
    skipped = score_safely(slow, ["a", "b"], ["x", "y"], timeout=0.2, on_error="skip")
    assert skipped.rewards == [None, None] and skipped.report.counts == {"timeout": 2}
    assert clock.monotonic() - started < 5
    assert score_safely(lambda p, c: [0.5] * len(p), ["a"], ["x"], timeout=5).rewards == [0.5]
