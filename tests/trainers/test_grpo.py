"""`tandem grpo` end to end, and its reward shaping."""

import json

import pytest
import torch

from tandem.trainers.grpo import GRPOConfig, overlong_penalty, run_grpo


def test_overlong_penalty_is_zero_before_the_buffer_and_linear_inside():
    lengths = torch.tensor([10, 16, 18, 20])
    assert overlong_penalty(lengths, max_new_tokens=20, buffer=4, penalty=1.0).tolist() == [0.0, 0.0, -0.5, -1.0]


def test_grpo_runs_and_logs_what_the_issue_asks(tmp_path, tiny_model_dir):
    result = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=2,
                                 batch_size=2, samples_per_prompt=4, max_new_tokens=8, n_eval=8, progress=False,
                                 log_every=1, kl_coef=0.04, entropy_coef=0.01, mixed_precision="no"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = records[0]
    for key in ("reward", "kl", "entropy", "clip_fraction", "response_length", "time/generate", "time/score",
                "time/update", "kl_loss"):
        assert f"train/{key}" in logged, key
    assert logged["train/kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout comes from the reference itself
    assert "eval/gold_reward" in result.metrics and "eval/kl_to_reference" in result.metrics


def test_a_reward_returning_nan_is_reported_with_the_sample(tmp_path, tiny_model_dir, monkeypatch):
    module = tmp_path / "bad_reward.py"
    module.write_text("def score(prompts, completions, **kw):\n    return [float('nan')] * len(prompts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match="nan|NaN"):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="bad_reward:score",
                            max_steps=1, batch_size=2, samples_per_prompt=2, max_new_tokens=4, n_eval=0,
                            progress=False, mixed_precision="no"))
