"""Potential-based shaping (eq. 12): the Ng-Harada-Russell guarantee, the telescoping sum, caching, and learning."""

import gymnasium as gym
import numpy as np
import pytest

from tandem.lm_inside_agents.backends import FunctionBackend, oracle_backend
from tandem.lm_inside_agents.dqn import DQNConfig, same_step_vector_env, train_dqn
from tandem.lm_inside_agents.render import render_state
from tandem.lm_inside_agents.shaping import PotentialShaping, progress_potential, q_value_iteration, shaped_model, shaping_reward



def random_mdp(n_states=6, n_actions=3, seed=0):
    """A stochastic episodic MDP in Gymnasium's P format; the last state is an absorbing terminal."""
    rng = np.random.default_rng(seed)
    terminal = n_states - 1
    model = {terminal: {a: [(1.0, terminal, 0.0, True)] for a in range(n_actions)}}
    for s in range(n_states - 1):
        model[s] = {}
        for a in range(n_actions):
            successors = rng.choice(n_states, size=2, replace=False)
            probs = rng.dirichlet([1.0, 1.0])
            model[s][a] = [(float(p), int(s2), float(rng.normal()), bool(s2 == terminal)) for p, s2 in zip(probs, successors)]
    return model


def test_shaping_reward_formula():
    assert shaping_reward(0.3, 0.8, 0.9, terminated=False) == pytest.approx(0.9 * 0.8 - 0.3)
    assert shaping_reward(0.3, 0.8, 0.9, terminated=True) == pytest.approx(-0.3)  # Phi(terminal) = 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ng_harada_russell_guarantee(seed):
    gamma = 0.9
    model = random_mdp(seed=seed)
    phi = np.random.default_rng(100 + seed).uniform(-2, 2, size=len(model))
    q = q_value_iteration(model, gamma)
    q_shaped = q_value_iteration(shaped_model(model, phi, gamma), gamma)
    live = list(range(len(model) - 1))
    assert np.allclose(q_shaped[live], q[live] - phi[live, None], atol=1e-8)  # Q*_shaped = Q* - Phi
    assert np.array_equal(q_shaped[live].argmax(1), q[live].argmax(1))  # optimal policy unchanged
    assert not np.allclose(q_shaped, q)  # the shaping did change the values


def test_ng_harada_russell_on_frozen_lake():
    env = gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True)
    model = env.unwrapped.P
    phi = np.linspace(0, 1, len(model))
    q = q_value_iteration(model, 0.95)
    q_shaped = q_value_iteration(shaped_model(model, phi, 0.95), 0.95)
    assert np.allclose(q_shaped, q - phi[:, None], atol=1e-8)


def test_telescoping_sum_and_cache():
    gamma = 0.9
    calls = []

    def potential(text):
        calls.append(text)
        return (sum(map(ord, text)) % 97) / 97.0

    env = PotentialShaping(gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True), potential, gamma)
    rng = np.random.default_rng(0)
    for episode in range(20):
        obs, info = env.reset(seed=episode)
        phi_0 = info["potential"]
        assert phi_0 == potential(render_state(env, obs))
        discounted_f, t = 0.0, 0
        while True:
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
            assert reward == pytest.approx(info["env_reward"] + info["shaping"])
            discounted_f += gamma**t * info["shaping"]
            t += 1
            if terminated or truncated:
                break
        phi_last = 0.0 if terminated else potential(render_state(env, obs))
        assert info["potential"] == phi_last
        assert discounted_f == pytest.approx(gamma**t * phi_last - phi_0)
    distinct = len(env.cache)
    assert len(calls) - 2 * 20 <= distinct <= 16  # one potential call per distinct state (plus the test's own)


def test_progress_potential_uses_backend_and_goal():
    seen = []
    backend = FunctionBackend(rate=lambda state, goal: seen.append(goal) or 0.5)
    phi = progress_potential(backend)
    env = gym.make("FrozenLake-v1", map_name="4x4")
    env.reset(seed=0)
    assert phi(render_state(env)) == 0.5
    assert seen == ["walk from S to the goal G without stepping into a hole H"]
    assert progress_potential(backend, goal="reach G")(render_state(env)) == 0.5 and seen[-1] == "reach G"


@pytest.mark.e2e
def test_shaped_dqn_learns_frozen_lake():
    """LM-rated (oracle) shaping on the sparse 4x4 lake: the greedy policy reaches the goal (random: ~1.5%)."""
    lake = lambda: gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)  # noqa: E731
    backend = oracle_backend(lake())
    shaped = lambda: PotentialShaping(lake(), progress_potential(backend), gamma=0.95)  # noqa: E731
    config = DQNConfig(total_steps=4000, n_envs=2, learning_starts=200, target_update_every=100, lr=3e-3, gamma=0.95,
                       epsilon_steps=1500, eval_every=500, eval_episodes=1, target_success=0.9)
    result = train_dqn(config, same_step_vector_env(shaped, 2), lake(), progress=False)
    assert result.steps_to_target is not None and result.curve[-1]["success"] == 1.0


@pytest.mark.e2e
def test_shape_command(tmp_path):
    import json

    from typer.testing import CliRunner

    import tandem.cli as cli
    from tandem.lm_inside_agents.commands import register

    if "shape" not in {command.name for command in cli.app.registered_commands}:
        register(cli.add_command)
    out = tmp_path / "shape"
    result = CliRunner().invoke(cli.app, [
        "shape", "--out", str(out), "--env", "frozenlake4x4", "--total-steps", "2000", "--n-envs", "2",
        "--learning-starts", "200", "--epsilon-steps", "1500", "--no-baseline", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    (run,) = json.loads((out / "metrics.json").read_text())["runs"]
    assert max(c["success"] for c in run["curve"]) == 1.0 and run["llm_actions"] == 0
