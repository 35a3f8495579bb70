"""agent-rl: credit assignment (trajectory and turn level) and end-to-end learning on a tiny model."""

import json

import pytest
import torch

from tandem.lm_as_agent.rollout import Episode, Turn, episode_batch
from tandem.lm_as_agent.trainer import AgentRLConfig, filter_groups, run_agent_rl
from tandem.algorithms.advantages import AdvantageInputs, compute_advantages, gae_advantages
from tandem.trainers.online import bootstrap_from_next_row, per_sample_advantages, place_scores


def _episode(group, rewards):
    episode = Episode(seed=0, group=group, system="", first_observation="")
    episode.turns = [Turn([5], 1, [1], [0.0], "x", True, reward=r, env_reward=r) for r in rewards]
    episode.ids = [5]
    episode.assistant_mask, episode.sampled_log_probs, episode.turn_of_token = [0], [0.0], [-1]
    for t, _ in enumerate(rewards):
        episode.ids += [1, 7]
        episode.assistant_mask += [1, 0]
        episode.sampled_log_probs += [0.0, 0.0]
        episode.turn_of_token += [t, -1]
    return episode


def test_trajectory_advantages_are_group_relative_per_episode_in_either_layout():
    """An episode's advantage compares its return with its group's, whether it is one row or one row per turn."""
    episodes = [_episode(0, [0.0, 1.0]), _episode(0, [0.0]), _episode(0, [0.0, 0.0, 0.0]), _episode(1, [0.5]),
                _episode(1, [0.25, 0.25])]
    returns = torch.tensor([1.0, 0.0, 0.0])
    expected = (returns - returns.mean()) / (returns.std() + 1e-6)
    for history in ("full", "none"):
        batch = episode_batch(episodes, history, pad_token_id=0)
        mask = batch.completion_mask[:, 1:].bool()
        scores = batch.step_rewards.sum(-1)
        rewards = place_scores(scores, mask, batch)
        inputs = AdvantageInputs(rewards=rewards, mask=mask, group_ids=batch.group_ids)
        if history == "full":
            advantages, _ = compute_advantages("grpo", inputs)
            owner = torch.arange(len(episodes))
        else:
            advantages = per_sample_advantages("grpo", inputs, batch.sample_ids)
            owner = batch.sample_ids
        for row in range(len(owner)):
            values = advantages[row][mask[row]]
            want = expected[owner[row]] if owner[row] < 3 else 0.0  # a group of equal returns teaches nothing
            assert torch.allclose(values, torch.full_like(values, float(want)), atol=1e-5), (history, row)


def test_turn_rewards_sit_where_they_were_earned_and_gae_skips_the_environments_tokens():
    episode = _episode(0, [0.0, -0.1, 1.0])
    batch = episode_batch([episode], "full", pad_token_id=0)
    mask = batch.completion_mask[:, 1:].bool()
    rewards = place_scores(batch.step_rewards.sum(-1), mask, batch)
    assert rewards[0][mask[0]].tolist() == pytest.approx([0.0, -0.1, 1.0])
    values = torch.tensor([[0.2, 0.0, 0.4, 0.0, 0.6]])
    advantages, _ = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    r, v = [0.0, -0.1, 1.0], [0.2, 0.4, 0.6, 0.0]
    running, expected = 0.0, []
    for t in reversed(range(3)):  # GAE over turns, by hand
        running = r[t] + 0.9 * v[t + 1] - v[t] + 0.9 * 0.8 * running
        expected.append(running)
    assert advantages[0][mask[0]].tolist() == pytest.approx(expected[::-1], abs=1e-6)


def test_history_none_bootstraps_each_turn_from_the_next_turns_value():
    episode = _episode(0, [0.0, 1.0])
    batch = episode_batch([episode], "none", pad_token_id=0)
    mask = batch.completion_mask[:, 1:].bool()
    rewards = place_scores(batch.step_rewards.sum(-1), mask, batch)
    values = torch.tensor([[0.3], [0.7]])
    boot = bootstrap_from_next_row(rewards, values, mask, batch.next_row, gamma=0.5)
    assert boot[0, 0] == pytest.approx(0.0 + 0.5 * 0.7) and boot[1, 0] == pytest.approx(1.0)


def test_rollout_filtering_keeps_the_groups_whose_returns_vary_most():
    episodes = [_episode(0, [1.0]), _episode(0, [1.0]), _episode(1, [1.0]), _episode(1, [0.0]),
                _episode(2, [0.5]), _episode(2, [0.0])]
    assert {e.group for e in filter_groups(episodes, 0.3)} == {1}
    assert {e.group for e in filter_groups(episodes, 0.5)} == {1, 2}
    assert filter_groups(episodes, 1.0) == episodes


def test_unknown_names_fail_at_parse_time():
    with pytest.raises(ValueError, match="unknown advantage 'ppo'"):
        AgentRLConfig(advantage="ppo")
    with pytest.raises(ValueError, match="unknown environment"):
        AgentRLConfig(env="no-such-world")


def _train(corridor_model_dir, tmp_path, **options):
    config = AgentRLConfig(model=corridor_model_dir, env="corridor:length=3", max_turns=3, out=tmp_path / "run",
                           batch_size=4, episodes_per_start=4, n_eval=48, eval_temperature=1.0, max_new_tokens=4,
                           lr=3e-3, max_steps=10, progress=False, threads=1, **options)
    run_agent_rl(config)
    return json.loads((tmp_path / "run" / "report.json").read_text())


@pytest.mark.e2e
def test_grpo_agent_learns_to_walk_the_corridor(corridor_model_dir, tmp_path):
    report = _train(corridor_model_dir, tmp_path)
    before, after = report["before"]["eval/success_rate"], report["after"]["eval/success_rate"]
    assert after > before + 0.3, (before, after)
    assert report["env_steps"] > 0
    run = tmp_path / "run"
    assert (run / "curves.png").stat().st_size > 0 and (run / "model" / "config.json").exists()
    transcripts = sorted((run / "transcripts").glob("eval-step-*.txt"))
    assert len(transcripts) == 2 and "[assistant]" in transcripts[-1].read_text()


@pytest.mark.e2e
def test_turn_level_ppo_agent_learns_too(corridor_model_dir, tmp_path):
    report = _train(corridor_model_dir, tmp_path, advantage="gae", history="none", gamma=0.9)
    assert report["after"]["eval/success_rate"] > report["before"]["eval/success_rate"] + 0.2
    assert (tmp_path / "run" / "model" / "value_head.safetensors").exists()


def test_env_steps_count_only_what_the_environment_carried_out():
    from tandem.lm_as_agent.trainer import env_steps, episode_metrics

    episode = _episode(0, [0.0, 0.0, 1.0])
    episode.turns[0].tool = True      # a tool call: answered by the tool, not the env
    episode.turns[1].invalid = True   # an invalid reply: the env did not move
    episode.success = True
    assert env_steps([episode]) == 1
    metrics = episode_metrics([episode])
    assert metrics["tool_calls"] == 1 and metrics["invalid_rate"] == pytest.approx(1 / 3) and metrics["success_rate"] == 1
    episode.turns[2].tool = True  # two calls in one episode: one episode that called a tool, of two
    metrics = episode_metrics([episode, _episode(1, [0.0])])
    assert metrics["tool_calls"] == 1 and metrics["tool_call_rate"] == 0.5


@pytest.mark.e2e
def test_an_interrupted_run_resumes_to_the_same_weights(corridor_model_dir, tmp_path):
    from safetensors.torch import load_file

    common = dict(model=corridor_model_dir, env="corridor:length=3", max_turns=3, batch_size=2, episodes_per_start=2,
                  n_eval=0, max_new_tokens=4, lr=3e-3, progress=False, threads=1)
    run_agent_rl(AgentRLConfig(out=tmp_path / "straight", max_steps=3, **common))
    run_agent_rl(AgentRLConfig(out=tmp_path / "cut", max_steps=2, final_checkpoint=True, **common))
    (tmp_path / "cut" / "model").rename(tmp_path / "cut" / "model-at-2")
    run_agent_rl(AgentRLConfig(out=tmp_path / "cut", max_steps=3, resume=True, **common))
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_shaping_model_gives_a_bounded_potential(corridor_model_dir):
    from tandem.lm_as_agent.trainer import shaping_potential

    assert shaping_potential(AgentRLConfig()) is None
    phi = shaping_potential(AgentRLConfig(shaping_model=corridor_model_dir, shaping_scale=2.0))
    values = [phi(text) for text in ("@..G", ".@.G", "..@G")]
    assert all(0.0 <= v <= 2.0 for v in values) and len(set(values)) > 1  # a real rating, scaled


@pytest.mark.e2e
def test_the_sampler_and_trainer_agree_on_log_probs(corridor_model_dir, tmp_path):
    """The recorded sampling log-probs are those the training forward computes (up to bf16 rounding)."""
    config = AgentRLConfig(model=corridor_model_dir, env="corridor:length=3", max_turns=3, out=tmp_path / "run",
                           batch_size=2, episodes_per_start=2, n_eval=0, max_new_tokens=4, max_steps=1,
                           progress=False, threads=1, mixed_precision="no")
    run_agent_rl(config)
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0.0 <= record["train/logprob_mismatch"] < 1e-3


def test_a_run_with_nothing_to_learn_says_so_and_the_cli_exits_1(corridor_model_dir, tmp_path, capsys):
    """A corridor too long to finish in one turn, no invalid-reply penalty: every return is 0, no signal."""
    from typer.testing import CliRunner

    from tandem.cli import app

    options = dict(model=corridor_model_dir, env="corridor:length=6", max_turns=1, invalid_penalty=0.0,
                   batch_size=2, episodes_per_start=2, n_eval=0, max_new_tokens=4, max_steps=2, progress=False,
                   threads=1)
    args = ["agent-rl", "--out", str(tmp_path / "cli")]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag if value is not False else "--no-progress"] + ([] if value is False else [str(value)])
    ran = CliRunner().invoke(app, args)
    assert ran.exit_code == 1 and "nothing was learned" in ran.output, ran.output
    assert "none of the 2 steps had anything to learn from" in capsys.readouterr().out + ran.output


@pytest.mark.e2e
def test_the_kept_prefill_trains_the_weights_the_recomputing_update_trains(corridor_model_dir, tmp_path):
    """--prefill-memory: the update runs each reply over the rollout's kept prompt forward; the same rows, loss and
    weights (to rounding) as the update that computes every prompt again, and the metrics say it was used."""
    import json

    from safetensors.torch import load_file

    common = dict(model=corridor_model_dir, env="corridor:length=3", max_turns=3, batch_size=2, episodes_per_start=2,
                  n_eval=0, max_new_tokens=4, lr=3e-3, progress=False, threads=1, max_steps=2, micro_batch_size=3,
                  history="none")
    run_agent_rl(AgentRLConfig(out=tmp_path / "recomputed", **common))
    run_agent_rl(AgentRLConfig(out=tmp_path / "kept", prefill_memory=1.0, **common))

    def metrics(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if "train/loss" in line]
    recomputed, kept = metrics("recomputed"), metrics("kept")
    assert [m["train/prefill_reused"] for m in kept] == [1.0, 1.0]
    assert [m["train/prefill_reused"] for m in recomputed] == [0.0, 0.0]
    for a, b in zip(recomputed, kept):
        assert a["train/rows"] == b["train/rows"] and b["train/prefill_kept_tokens"] > 0
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-5)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-4)
    first = load_file(str(tmp_path / "recomputed" / "model" / "model.safetensors"))
    second = load_file(str(tmp_path / "kept" / "model" / "model.safetensors"))
    assert all(torch.allclose(first[k], second[k], atol=1e-5) for k in first)
