"""DQN pieces against their formulas, and LLM-guided exploration (eq. 11) end to end on FrozenLake."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from tandem.lm_inside_agents.backends import FunctionBackend, oracle_backend
from tandem.lm_inside_agents.dqn import (
    GREEDY,
    LLM,
    RANDOM,
    DQNConfig,
    QNetwork,
    ReplayBuffer,
    double_q_targets,
    exploration_sources,
    exponential_schedule,
    linear_schedule,
    same_step_vector_env,
    train_dqn,
)



def test_replay_buffer_capacity_and_wrap_around():
    buffer = ReplayBuffer(capacity=5, obs_shape=(2,))
    for start in (0, 3, 6):  # batches of 3 transitions: 9 in all, the first 4 overwritten
        ids = np.arange(start, start + 3)
        buffer.add(np.stack([ids, ids], 1), ids, ids * 0.5, np.stack([ids + 1, ids + 1], 1), ids % 2)
    assert len(buffer) == 5 and buffer.position == 4
    assert buffer.actions.tolist() == [5, 6, 7, 8, 4]
    assert buffer.obs[:, 0].tolist() == [5, 6, 7, 8, 4]
    assert buffer.next_obs[:, 0].tolist() == [6, 7, 8, 9, 5]
    assert buffer.rewards.tolist() == [2.5, 3.0, 3.5, 4.0, 2.0]
    batch = buffer.sample(32, np.random.default_rng(0))
    assert batch["obs"].shape == (32, 2) and batch["next_obs"].shape == (32, 2)
    assert batch["actions"].shape == batch["rewards"].shape == batch["terminated"].shape == (32,)
    assert set(batch["actions"].tolist()) <= {4, 5, 6, 7, 8}
    assert torch.equal(batch["obs"][:, 0].long(), batch["actions"])  # rows stay aligned across fields
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, (1,)).sample(2, np.random.default_rng(0))


def test_double_q_target_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    online = torch.tensor([[1.0, 3.0], [5.0, 0.0], [0.2, 0.1]])  # argmax: 1, 0, 0
    target = torch.tensor([[10.0, 20.0], [30.0, 40.0], [7.0, 9.0]])
    y = double_q_targets(rewards, terminated, online, target, gamma=0.9)
    expected = [1.0 + 0.9 * 20.0, 0.0, 0.5 + 0.9 * 7.0]  # target evaluates the online argmax, not its own max
    assert torch.allclose(y, torch.tensor(expected))


def test_exploration_frequencies_match_eq_11():
    rng = np.random.default_rng(0)
    sources = exploration_sources(200_000, p_explore=0.3, epsilon=0.2, rng=rng)
    assert abs(np.mean(sources == LLM) - 0.3) < 0.005
    assert abs(np.mean(sources == RANDOM) - 0.7 * 0.2) < 0.005
    assert abs(np.mean(sources == GREEDY) - 0.7 * 0.8) < 0.005
    assert np.all(exploration_sources(100, 0.0, 0.0, rng) == GREEDY)
    assert np.all(exploration_sources(100, 1.0, 0.5, rng) == LLM)


def test_annealing_schedules():
    assert linear_schedule(1.0, 0.0, 0, 100) == 1.0
    assert linear_schedule(1.0, 0.0, 25, 100) == pytest.approx(0.75)
    assert linear_schedule(1.0, 0.2, 100, 100) == linear_schedule(1.0, 0.2, 500, 100) == pytest.approx(0.2)
    assert exponential_schedule(0.5, 0.0, 0, 100) == pytest.approx(0.5)
    assert exponential_schedule(0.5, 0.0, 50, 100) == pytest.approx(0.5 * 0.1)  # 0.01 ** 0.5
    assert exponential_schedule(0.5, 0.1, 100, 100) == 0.1
    values = [exponential_schedule(1.0, 0.0, t, 100) for t in range(0, 101, 10)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_q_network_shapes():
    net = QNetwork(gym.spaces.Discrete(16), 4, hidden=8)
    assert net(torch.tensor([0, 5, 15])).shape == (3, 4)
    net = QNetwork(gym.spaces.Box(0, 1, (3, 2)), 5, hidden=8)
    assert net(torch.zeros(7, 3, 2)).shape == (7, 5)
    with pytest.raises(ValueError, match="Discrete or Box"):
        QNetwork(gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), 2)


def _lake():
    return gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)


def test_llm_actions_are_used_and_unusable_answers_fall_back():
    calls = []

    def always_right(text, names):
        calls.append(text)
        return names.index("right")

    config = DQNConfig(total_steps=40, n_envs=2, learning_starts=1000, p_explore_start=1.0, p_explore_end=1.0, eval_every=1000)
    result = train_dqn(config, same_step_vector_env(_lake, 2), backend=FunctionBackend(propose=always_right), progress=False)
    assert result.llm_actions == 40 and len(calls) == 40 and "you: row" in calls[0]
    unusable = FunctionBackend(propose=lambda text, names: None)
    result = train_dqn(config, same_step_vector_env(_lake, 2), backend=unusable, progress=False)
    assert result.llm_actions == 0 and result.env_steps == 40


@pytest.mark.e2e
def test_guided_dqn_learns_frozen_lake():
    """Learning happened: the greedy policy reaches the goal, which a random policy does ~1.5% of the time."""
    config = DQNConfig(total_steps=4000, n_envs=2, learning_starts=200, target_update_every=100, lr=3e-3, gamma=0.95,
                       epsilon_steps=1500, p_explore_steps=1500, eval_every=500, eval_episodes=1, target_success=0.9)
    result = train_dqn(config, same_step_vector_env(_lake, 2), _lake(), backend=oracle_backend(_lake(), noise=0.3), progress=False)
    assert result.llm_actions > 0 and result.updates > 0
    assert result.steps_to_target is not None and result.curve[-1]["success"] == 1.0
    # a single env, and a vector env in Gymnasium's default next-step autoreset mode, also train
    for env in (_lake(), gym.vector.SyncVectorEnv([_lake])):
        single = train_dqn(config.model_copy(update={"n_envs": 1}), env, _lake(),
                           backend=oracle_backend(_lake(), noise=0.3), progress=False)
        assert single.curve[-1]["success"] == 1.0


def _cli_app():
    import tandem.cli as cli
    from tandem.lm_inside_agents.commands import register

    if "explore" not in {command.name for command in cli.app.registered_commands}:
        register(cli.add_command)
    return cli.app


@pytest.mark.e2e
def test_explore_command(tmp_path):
    import json

    from typer.testing import CliRunner

    out = tmp_path / "explore"
    result = CliRunner().invoke(_cli_app(), [
        "explore", "--out", str(out), "--env", "frozenlake4x4", "--total-steps", "2000", "--n-envs", "2",
        "--learning-starts", "200", "--epsilon-steps", "1500", "--p-explore-steps", "1500", "--lm-noise", "0.3",
        "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    guided, plain = report["runs"]
    assert guided["llm_actions"] > 0 and plain["llm_actions"] == 0
    assert max(c["success"] for c in guided["curve"]) == 1.0  # a random policy succeeds ~1.5% of the time
    assert (out / "learning_curve.png").stat().st_size > 0
    bad = CliRunner().invoke(_cli_app(), ["explore", "--out", str(out), "--env", "nowhere", "--no-baseline"])
    assert bad.exit_code == 1 and "unknown environment" in bad.output  # one line, no traceback
