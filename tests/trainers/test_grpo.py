"""`tandem grpo` end to end, and its reward shaping."""

import json

import pytest
import torch

from tandem.algorithms.policy_losses import POLICY_LOSSES, policy_loss
from tandem.trainers.grpo import GRPOConfig, overlong_penalty, run_grpo
from tandem.trainers.online import OnlineRLConfig


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
    from tandem.rewards.safety import RewardError

    with pytest.raises(RewardError, match="returned NaN") as caught:
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="bad_reward:score",
                            max_steps=1, batch_size=2, samples_per_prompt=2, max_new_tokens=4, n_eval=0,
                            progress=False, mixed_precision="no"))
    problem = caught.value.problem
    assert problem.kind == "nan" and problem.source.endswith("bad_reward:score")
    assert problem.index is not None and problem.prompt and problem.prompt in str(caught.value)  # the sample is named


def test_dynamic_sampling_trains_only_on_groups_whose_rewards_differ(tmp_path, tiny_model_dir, monkeypatch):
    # prompts of even length get 1.0 whatever the completion (a group with nothing to learn), others vary
    def reward(prompts, completions):
        return [1.0 if len(p) % 2 == 0 else float(len(c) % 3 == 0) for p, c in zip(prompts, completions)]

    module = tmp_path / "word_reward.py"
    module.write_text("def score(prompts, completions, **kw):\n"
                      "    return [1.0 if len(p) % 2 == 0 else float(len(c) % 3 == 0) for p, c in zip(prompts, completions)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from tandem.trainers.grpo import GRPOTrainer
    from tandem.trainers.online import OnlineTrainer

    seen = []
    original = OnlineTrainer.collect

    def spy(self, step):
        data = original(self, step)
        seen.append(data)
        return data

    monkeypatch.setattr(GRPOTrainer, "collect", spy)
    run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="word_reward:score",
                        dynamic_sampling=True, max_sampling_rounds=6, max_steps=2, batch_size=4, samples_per_prompt=4,
                        max_new_tokens=6, n_eval=0, progress=False, log_every=1, mixed_precision="no"))
    assert len(seen) == 2
    for data in seen:
        batch, stats = data.batch, data.stats
        assert batch.input_ids.shape[0] == 16  # the batch keeps its size
        assert sorted(set(batch.group_ids.tolist())) == [0, 1, 2, 3]
        rewards = torch.tensor(reward(batch.prompts, batch.completions))
        mixed = [len(set(rewards[batch.group_ids == g].tolist())) > 1 for g in range(4)]
        assert sum(mixed) == 4 - stats["dynamic/filler_groups"]
        assert stats["dynamic/rounds"] >= 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["train/dynamic/rounds"] > 1 for r in records)  # some groups were dropped and refilled
    assert all(r["train/dynamic/informative_fraction"] < 1 for r in records)


def test_dynamic_sampling_needs_groups():
    with pytest.raises(ValueError, match="samples-per-prompt"):
        OnlineRLConfig(dynamic_sampling=True, samples_per_prompt=1)


def test_the_adaptive_kl_coefficient_continues_after_resume(tmp_path, tiny_model_dir):
    options = dict(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", batch_size=2, samples_per_prompt=2,
                   max_new_tokens=6, n_eval=0, progress=False, log_every=1, mixed_precision="no", kl_coef=0.1,
                   target_kl=1e-3, kl_horizon=10, lr=1e-3, final_checkpoint=True)
    run_grpo(GRPOConfig(max_steps=2, **options))
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    assert saved["kl_coef"] != pytest.approx(0.1)  # the controller moved beta
    run_grpo(GRPOConfig(max_steps=3, resume=True, **options))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["step"] == 3 and "train/kl_coef" in r][0]
    assert resumed["train/kl_coef"] == pytest.approx(saved["kl_coef"])


def test_single_pass_skips_the_extra_forwards_and_takes_the_same_step(tmp_path, tiny_model_dir):
    from checks import assert_same_weights

    options = dict(model=tiny_model_dir, task="sentiment", batch_size=2, samples_per_prompt=4, max_new_tokens=6,
                   n_eval=0, progress=False, mixed_precision="no", kl_coef=0.0, max_steps=2, lr=1e-3)
    run_grpo(GRPOConfig(out=tmp_path / "two-pass", kl_metrics=True, **options))
    single = run_grpo(GRPOConfig(out=tmp_path / "single-pass", **options))  # the default with nothing reading the KL
    assert_same_weights(tmp_path / "two-pass" / "model", single.model_dir, atol=1e-5)
    records = [json.loads(line) for line in (tmp_path / "single-pass" / "metrics.jsonl").read_text().splitlines()]
    assert "train/kl" not in records[0]  # no reference forward, so no KL claimed
    assert "train/kl" in json.loads((tmp_path / "two-pass" / "metrics.jsonl").read_text().splitlines()[0])


def test_the_trained_log_probs_are_those_of_the_sampling_temperature(tmp_path, tiny_model_dir, monkeypatch):
    from tandem.trainers.grpo import GRPOTrainer
    from tandem.trainers.online import OnlineTrainer

    seen = []
    original = OnlineTrainer.collect
    monkeypatch.setattr(GRPOTrainer, "collect", lambda self, step: seen.append(original(self, step)) or seen[-1])
    run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=1, batch_size=2,
                        samples_per_prompt=2, max_new_tokens=6, n_eval=0, progress=False, mixed_precision="no",
                        temperature=0.6, kl_metrics=True))
    data = seen[0]
    sampled = data.batch.sampled_log_probs[:, 1:]  # aligned with the labels shifted by one
    mask = data.mask
    assert mask.any()
    assert torch.allclose(data.old_logp[mask], sampled[mask], atol=1e-4)


def test_a_proxy_reward_run_logs_the_reward_hacking_monitor(tmp_path, tiny_model_dir, monkeypatch):
    module = tmp_path / "proxy_length_reward.py"  # a module name of its own: sys.modules keeps the first one imported
    module.write_text("def score(prompts, completions, **kw):\n    return [len(c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="proxy_length_reward:score",
                        max_steps=2, batch_size=2, samples_per_prompt=2, max_new_tokens=4, n_eval=0, progress=False,
                        log_every=1, mixed_precision="no"))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("gold", "monitor/proxy", "monitor/gold", "monitor/sqrt_kl", "monitor/divergence"):
        assert f"train/{key}" in record, key
    assert (tmp_path / "run" / "monitor" / "monitor.json").exists()


def test_rows_with_no_advantage_are_left_out_of_the_update_and_the_step_is_the_same(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    """A group whose samples all score alike has advantage 0 everywhere: its rows train nothing, so the update
    skips them and takes the step the full update takes."""
    from checks import assert_same_weights
    from tandem.trainers.online import OnlineTrainer

    module = tmp_path / "half_flat_reward.py"
    module.write_text("def score(prompts, completions, **kw):\n"
                      "    return [len(c) / 10 if p == prompts[0] else 1.0 for p, c in zip(prompts, completions)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    options = dict(model=tiny_model_dir, task="sentiment", reward="half_flat_reward:score", batch_size=2,
                   samples_per_prompt=4, max_new_tokens=6, n_eval=0, progress=False, mixed_precision="no",
                   max_steps=2, lr=1e-3, log_every=1, micro_batch_size=2)
    skipping = run_grpo(GRPOConfig(out=tmp_path / "skip", **options))
    records = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/trained_row_fraction"] for r in records if "train/trained_row_fraction" in r] == [0.5, 0.5]
    monkeypatch.setattr(OnlineTrainer, "skips_idle_rows", property(lambda self: False))
    run_grpo(GRPOConfig(out=tmp_path / "all", **options))
    assert_same_weights(tmp_path / "all" / "model", skipping.model_dir, atol=1e-6)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_policy_loss_is_zero_with_zero_gradient_at_zero_advantage(name):
    """What lets the update skip rows without advantage (`OnlineTrainer.skips_idle_rows`)."""
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    old = logp.detach() + 0.3 * torch.randn(3, 5)
    out = policy_loss(name, logp, old, torch.zeros(3, 5), torch.ones(3, 5))
    out.loss.sum().backward()
    assert float(out.loss.detach().abs().sum()) == 0.0 and float(logp.grad.abs().sum()) == 0.0
