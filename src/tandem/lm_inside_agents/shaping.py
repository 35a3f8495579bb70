"""Potential-based reward shaping (Ng, Harada & Russell 1999) with a language model's rating of progress as the
potential (an LLM as a reward source, as in Kwon et al. 2023).

    r'(s, a, s') = r(s, a, s') + F(s, s'),    F(s, s') = gamma * Phi(s') - Phi(s),    Phi(terminal) = 0.

Ng, Harada & Russell (1999): for any potential Phi, the optimal policies of the shaped MDP are those of the
original one, and Q*_shaped(s, a) = Q*(s, a) - Phi(s). The guarantee needs Phi to be a fixed function of the state,
so `PotentialShaping` caches the language model's rating per state key; it needs Phi = 0 on terminal states (with
episodic tasks), which the wrapper enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from tandem.lm_inside_agents.render import goal_text, render_state

# Gymnasium's tabular model format (toy-text `env.unwrapped.P`): P[s][a] = [(prob, next_state, reward, terminated)]
TabularModel = Mapping[int, Mapping[int, Sequence[tuple[float, int, float, bool]]]]


def shaping_reward(phi_s: float, phi_next: float, gamma: float, terminated: bool) -> float:
    """F(s, s') = gamma * Phi(s') - Phi(s), with Phi(s') = 0 when s' is terminal (Ng et al. 1999)."""
    return gamma * (0.0 if terminated else phi_next) - phi_s


def shaped_model(model: TabularModel, potential: Sequence[float], gamma: float) -> dict:
    """The tabular MDP with every reward replaced by r + F(s, s') (the shaping above applied to `env.unwrapped.P`)."""
    return {
        s: {
            a: [(p, s2, r + shaping_reward(potential[s], potential[s2], gamma, done), done) for p, s2, r, done in outcomes]
            for a, outcomes in actions.items()
        }
        for s, actions in model.items()
    }


def q_value_iteration(model: TabularModel, gamma: float, tol: float = 1e-12, max_iterations: int = 100_000) -> np.ndarray:
    """Q* of a tabular MDP by value iteration: Q(s,a) = sum p (r + gamma * (1 - terminated) * max_a' Q(s',a'))."""
    n_states, n_actions = len(model), len(model[0])
    rows = [(s, a, p, s2, r, done) for s in model for a in model[s] for p, s2, r, done in model[s][a]]
    states, actions, probs, next_states, rewards, dones = (np.array(column) for column in zip(*rows))
    continuing = gamma * (1.0 - dones.astype(np.float64))
    q = np.zeros((n_states, n_actions))
    for _ in range(max_iterations):
        new_q = np.zeros_like(q)
        np.add.at(new_q, (states, actions), probs * (rewards + continuing * q.max(axis=1)[next_states]))
        if np.max(np.abs(new_q - q)) < tol:
            return new_q
        q = new_q
    return q


def non_terminal_states(model: TabularModel) -> list[int]:
    """States of a tabular model that are not absorbing terminals (FrozenLake's holes and goal)."""
    return [s for s in model if not all(done and s2 == s for a in model[s] for _, s2, _, done in model[s][a])]


def optimal_action_sets(q: np.ndarray, tol: float = 1e-9) -> list[frozenset[int]]:
    """{a : Q(s, a) >= max_a' Q(s, a') - tol} for every state: the greedy policy with its ties, so that two Q
    functions whose equally good actions differ only by rounding give the same sets."""
    return [frozenset(np.flatnonzero(row >= row.max() - tol).tolist()) for row in q]


def policy_invariance(model: TabularModel, potential: Sequence[float], gamma: float, tol: float = 1e-9) -> dict:
    """Ng et al.'s guarantee checked on a tabular model: Q* by value iteration with and without shaping by
    `potential`; how many non-terminal states keep their set of optimal actions, and max |Q*_shaped - (Q* - Phi)|
    over them (0 up to the iteration's tolerance)."""
    q = q_value_iteration(model, gamma)
    q_shaped = q_value_iteration(shaped_model(model, potential, gamma), gamma)
    live = non_terminal_states(model)
    phi = np.asarray(potential, dtype=np.float64)
    same = [s for s, a, b in zip(live, optimal_action_sets(q[live], tol), optimal_action_sets(q_shaped[live], tol)) if a == b]
    return {"states": len(live), "same_optimal_actions": len(same),
            "max_q_error": float(np.max(np.abs(q_shaped[live] - (q[live] - phi[live, None]))))}


class PotentialShaping(gym.Wrapper):
    """Adds F = gamma * Phi(s') - Phi(s) to every reward (Ng et al. 1999), Phi cached per state key, Phi(terminal) = 0.

    `potential` maps a state key (by default the text rendering `render_state(env, obs)`) to Phi; it may be a
    backend's ``rate_progress`` bound to a goal (see `progress_potential`). Each step's ``info`` carries the
    environment reward (``env_reward``), ``shaping`` (F) and ``potential`` (Phi(s')). Wrappers given the same
    `cache` dict (the vector envs of a run, or several runs) share it: each distinct state is rated once in all.
    """

    def __init__(
        self,
        env: gym.Env,
        potential: Callable[[Any], float],
        gamma: float,
        scale: float = 1.0,
        state_key: Callable[[gym.Env, Any], Any] = render_state,
        cache: dict[Any, float] | None = None,
    ):
        super().__init__(env)
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.potential_fn = potential
        self.gamma = gamma
        self.scale = scale
        self.state_key = state_key
        self.cache: dict[Any, float] = {} if cache is None else cache
        self._phi = 0.0

    def potential(self, obs: Any) -> float:
        """Phi of the current state (one language-model call per distinct state, then cached)."""
        key = self.state_key(self.env, obs)
        if key not in self.cache:
            self.cache[key] = self.scale * float(self.potential_fn(key))
        return self.cache[key]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._phi = self.potential(obs)
        info = {**info, "potential": self._phi}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi_next = 0.0 if terminated else self.potential(obs)
        shaping = shaping_reward(self._phi, phi_next, self.gamma, terminated)
        self._phi = phi_next
        info = {**info, "env_reward": reward, "shaping": shaping, "potential": phi_next}
        return obs, float(reward) + shaping, terminated, truncated, info


def progress_potential(backend: Any, goal: str | None = None) -> Callable[[str], float]:
    """Phi(state text) = backend.rate_progress(state text, goal), in [0, 1]; by default the goal named in the text."""
    return lambda state_text: backend.rate_progress(state_text, goal if goal is not None else goal_text(state_text))
