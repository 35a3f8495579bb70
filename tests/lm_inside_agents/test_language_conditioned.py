"""Language-conditioned BabyAI policies (seed eq. 14): missions, held-out splits, the policy, imitation and PPO."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tandem.lm_inside_agents.language_conditioned import (
    FiLMPolicy,
    MissionVocab,
    collect_demonstrations,
    episodes_to_success,
    imitation_loss,
    is_held_out,
    make_task_env,
    mission_pairs,
    obs_to_tensors,
    parse_pairs,
    success_rate,
    train_imitation,
    train_ppo_language,
)
from tandem.lm_inside_agents.ppo import AgentPPOConfig

HELD_OUT = parse_pairs("red box, green key, blue ball")


def test_mission_pairs_and_held_out():
    assert mission_pairs("go to the red ball") == [("red", "ball")]
    assert mission_pairs("pick up a blue key and go to the grey door") == [("blue", "key"), ("grey", "door")]
    assert is_held_out("go to a green key", HELD_OUT)
    assert not is_held_out("go to the green ball", HELD_OUT)


@pytest.mark.parametrize("bad", ["red", "pink ball", "red dragon", "red ball box"])
def test_parse_pairs_names_the_bad_item(bad):
    with pytest.raises(ValueError, match=bad):
        parse_pairs(f"green key, {bad}")


def test_mission_vocab_pads_and_marks_unknown_words():
    vocab = MissionVocab(max_words=6)
    ids = vocab.encode("Go to the RED zorb")
    assert ids.shape == (6,) and ids.dtype == np.int64
    assert ids[4] == 1 and ids[5] == 0  # unknown word, then padding
    assert [vocab.words[i] for i in ids[:4]] == ["go", "to", "the", "red"]


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_language_task_draws_only_its_split(split):
    env = make_task_env("BabyAI-GoToLocal-v0", HELD_OUT, split)
    for seed in range(15):
        obs, info = env.reset(seed=seed)
        assert is_held_out(info["mission"], HELD_OUT) == (split == "held_out")
        assert obs["mission"].shape == (env.vocab.max_words,)
        assert env.observation_space.contains(obs)


def test_held_out_split_needs_missions():
    with pytest.raises(ValueError, match="held-out"):
        make_task_env("BabyAI-GoToLocal-v0", frozenset(), "held_out")


def test_policy_shapes_and_mission_conditioning():
    torch.manual_seed(0)
    env = make_task_env("BabyAI-GoToLocal-v0", HELD_OUT, "train")
    obs, _ = env.reset(seed=3)
    policy = FiLMPolicy(int(env.action_space.n), len(env.vocab))
    batch = obs_to_tensors({k: np.stack([obs[k], obs[k]]) for k in ("image", "direction", "mission")})
    batch["mission"][1] = torch.as_tensor(env.vocab.encode("go to the purple key"))
    dist, value = policy(batch)
    assert dist.logits.shape == (2, env.action_space.n) and value.shape == (2,)
    assert not torch.allclose(dist.logits[0], dist.logits[1])  # same view, different instruction
    single_dist, _ = policy(obs_to_tensors(obs))  # an unbatched observation gets a batch of one
    assert torch.allclose(single_dist.logits[0], dist.logits[0], atol=1e-6)


def test_imitation_loss_is_mean_negative_log_likelihood():
    torch.manual_seed(0)
    env = make_task_env("BabyAI-GoToObj-v0", HELD_OUT, "train", navigation_only=True)
    obs, _ = env.reset(seed=0)
    policy = FiLMPolicy(3, len(env.vocab))
    batch = obs_to_tensors({k: np.stack([obs[k]] * 3) for k in ("image", "direction", "mission")})
    actions = torch.tensor([0, 2, 2])
    log_probs = torch.log_softmax(policy(batch)[0].logits, -1)
    expected = -(log_probs[0, 0] + log_probs[1, 2] + log_probs[2, 2]) / 3
    assert imitation_loss(policy, batch, actions).item() == pytest.approx(expected.item(), rel=1e-6)


def test_episodes_to_success_matches_a_loop():
    rng = np.random.default_rng(0)
    successes = list(rng.random(300) < np.linspace(0.2, 1.0, 300))
    for threshold, window in [(0.9, 20), (0.5, 10), (0.99, 50)]:
        expected = next((end for end in range(window, len(successes) + 1)
                         if np.mean(successes[end - window:end]) >= threshold), None)
        assert episodes_to_success(successes, threshold, window) == expected
    assert episodes_to_success([True] * 5, 0.9, window=10) is None


def test_demonstrations_respect_the_split():
    env = make_task_env("BabyAI-GoToLocal-v0", HELD_OUT, "train", navigation_only=True)
    demos = collect_demonstrations(env, 8, seed=0)
    assert 6 <= demos.episodes <= 8 and len(demos) == len(demos.image) == len(demos.mission) > 8
    assert not any(is_held_out(m, HELD_OUT) for m in demos.missions)
    assert set(demos.action.tolist()) <= {0, 1, 2}


def test_ppo_runs_on_language_task():
    torch.manual_seed(0)
    make = lambda: make_task_env("BabyAI-GoToRedBallGrey-v0", frozenset(), "train", navigation_only=True)
    policy = FiLMPolicy(3, len(make().vocab))
    before = [p.detach().clone() for p in policy.parameters()]
    config = AgentPPOConfig(total_steps=128, num_steps=32, num_minibatches=2, update_epochs=1, progress=False)
    history = train_ppo_language(policy, make, config, num_envs=4)
    assert len(history.records) == 1 and history.records[0]["env_steps"] == 128
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


@pytest.mark.e2e
def test_imitation_beats_random_on_held_out_missions():
    """End to end: cloning BabyAIBot on training missions succeeds on held-out missions far above chance.

    GoToObj (one object per room) keeps this fast; `benchmarks/agents_babyai.py` measures GoToLocal, where the
    mission must be read to pick the right object among distractors.
    """
    torch.manual_seed(0)
    make = lambda split: (lambda: make_task_env("BabyAI-GoToObj-v0", HELD_OUT, split, navigation_only=True))
    demos = collect_demonstrations(make("train")(), 150, seed=0)
    policy = FiLMPolicy(3, len(MissionVocab()))
    losses = train_imitation(policy, demos, epochs=10, batch_size=64, seed=0)
    assert losses[-1] < 0.5 * losses[0]
    random_policy = success_rate(None, make("held_out"), 60, seed=5)["success_rate"]
    cloned = success_rate(policy, make("held_out"), 60, seed=5)["success_rate"]
    assert cloned > random_policy + 0.25, (cloned, random_policy)


def test_babyai_command_through_the_cli(tmp_path):
    from tandem.lm_inside_agents.commands import register
    from tandem.cli import add_command, app

    names = {c.name for c in app.registered_commands}
    if "babyai" not in names:
        register(add_command)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["babyai", "--out", str(out), "--env", "BabyAI-GoToObj-v0", "--demos", "10",
                                      "--imitation-epochs", "1", "--eval-episodes", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["imitation"]["held_out_missions"]["success_rate"] <= 1
    assert (out / "babyai_success.png").exists()
    bad = CliRunner().invoke(app, ["babyai", "--out", str(out), "--held-out", "pink ball"])
    assert bad.exit_code != 0
