"""Potential-based shaping (eq. 12): the Ng-Harada-Russell guarantee, the telescoping sum, caching, and learning."""

import gymnasium as gym
import numpy as np
import pytest

from tandem.lm_inside_agents.backends import FunctionBackend, oracle_backend
from tandem.lm_inside_agents.dqn import DQNConfig, same_step_vector_env, train_dqn
from tandem.lm_inside_agents.render import render_state
from tandem.lm_inside_agents.shaping import (
    PotentialShaping,
    optimal_action_sets,
    policy_invariance,
    progress_potential,
    q_value_iteration,
    shaped_model,
    shaping_reward,
)



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


def test_optimal_action_sets_keep_ties_up_to_rounding():
    q = np.array([[1.0, 1.0 - 1e-13, 0.0], [0.0, 2.0, 1.0]])
    assert optimal_action_sets(q) == [frozenset({0, 1}), frozenset({1})]
    assert optimal_action_sets(q + np.array([[0.0, -1e-3, 0.0], [0.0, 0.0, 0.0]])) == [frozenset({0}), frozenset({1})]


def test_policy_invariance_on_the_deterministic_8x8_lake_with_many_ties():
    """Every shortest path to G is optimal (ties); an arbitrary Phi keeps each state's set of optimal actions."""
    model = gym.make("FrozenLake-v1", map_name="8x8", is_slippery=False).unwrapped.P
    phi = np.random.default_rng(0).uniform(0, 1, size=len(model))
    report = policy_invariance(model, phi, gamma=0.95)
    assert report["states"] == 64 - 10 - 1  # 10 holes and the goal are terminal
    assert report["same_optimal_actions"] == report["states"] and report["max_q_error"] < 1e-8
    ties = optimal_action_sets(q_value_iteration(model, 0.95))
    assert any(len(actions) > 1 for actions in ties)  # the tolerance matters here


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


def test_hf_rater_is_asked_the_documented_prompt_once_per_state(pretrained_llama_dir):
    """A tiny HF checkpoint as the rater: wrappers sharing one cache ask it about each distinct non-terminal state
    once, with `progress_prompt` as documented, and Phi is its probability-weighted digit."""
    from tandem.lm_inside_agents.backends import HFBackend, expected_digit_progress

    backend = HFBackend(pretrained_llama_dir)
    score, asked = backend.completion_log_probs, []

    def spy(prompt, completions):
        asked.append((prompt, tuple(completions)))
        return score(prompt, completions)

    backend.completion_log_probs = spy
    cache: dict = {}
    lake = lambda: gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False)  # noqa: E731
    envs = [PotentialShaping(lake(), progress_potential(backend), gamma=0.9, cache=cache) for _ in range(2)]
    rng, visited = np.random.default_rng(0), set()
    for env in envs:  # the second wrapper finds most of its states in the shared cache already
        for episode in range(6):
            obs, _ = env.reset(seed=episode)
            visited.add(render_state(env, obs))
            for _ in range(30):
                obs, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
                if terminated or truncated:
                    break
                visited.add(render_state(env, obs))
    goal = "walk from S to the goal G without stepping into a hole H"
    digits = tuple(f" {d}" for d in range(10))
    assert len(visited) > 3 and set(cache) == visited
    assert sorted(prompt for prompt, _ in asked) == sorted(f"{text}\ngoal: {goal}\nprogress from 0 to 9:" for text in visited)
    assert all(completions == digits for _, completions in asked)
    for text, phi in cache.items():
        assert phi == pytest.approx(expected_digit_progress(score(f"{text}\ngoal: {goal}\nprogress from 0 to 9:", digits)))
        assert 0.0 <= phi <= 1.0
    assert len(set(cache.values())) > 1  # the rating depends on the state


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
