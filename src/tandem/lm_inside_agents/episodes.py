"""Environments by id and actors, and `run_episodes`: whole episodes of an actor in a Gymnasium vector env, with
every transition kept, for offline collection (`tandem.lm_inside_agents.offline_collect`). Measuring an actor is
`tandem.lm_inside_agents.evaluation.play_episodes`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from tandem.lm_inside_agents.ppo import as_float_tensor, env_actions

ActFn = Callable[[Any], np.ndarray]


def make_env_by_id(env_id: str) -> gym.Env:
    """`gym.make(env_id)`, with an error that names the id."""
    try:
        return gym.make(env_id)
    except gym.error.Error as error:
        raise ValueError(f"cannot make Gymnasium environment {env_id!r}: {error}") from None


def vector_env_by_id(env_id: str, num_envs: int, vectorization: Literal["sync", "async"] = "sync") -> gym.vector.VectorEnv:
    """`gym.make_vec` in Gymnasium's default (NEXT_STEP) autoreset mode."""
    try:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vectorization)
    except gym.error.Error as error:
        raise ValueError(f"cannot make Gymnasium environment {env_id!r}: {error}") from None


def random_actor(envs: gym.vector.VectorEnv, seed: int) -> ActFn:
    space = copy.deepcopy(envs.single_action_space)
    space.seed(seed)
    return lambda obs: np.stack([space.sample() for _ in range(envs.num_envs)])


def policy_actor(policy: torch.nn.Module, action_space: gym.Space, deterministic: bool = False) -> ActFn:
    """Act with an actor-critic policy (`policy(obs) -> (distribution, value)`): sample, or take the mode."""
    to_tensor = as_float_tensor()

    @torch.no_grad()
    def act(obs: Any) -> np.ndarray:
        dist = policy(to_tensor(obs))[0]
        return env_actions(dist.mode if deterministic else dist.sample(), action_space)

    return act


def run_episodes(envs: gym.vector.VectorEnv, act: ActFn, episodes: int, seed: int, desc: str = "episodes",
                 progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Run `act` until `episodes` whole episodes are done; each env contributes a fixed quota.

    Fixing the quota per env in advance avoids the bias of keeping the first episodes to finish (short
    ones). Needs NEXT_STEP autoreset: the step after an episode ends only resets, and is not recorded.
    """
    n = envs.num_envs
    quota = np.full(n, episodes // n) + (np.arange(n) < episodes % n)
    buffers: list[dict[str, list]] = [{k: [] for k in ("obs", "action", "reward", "terminal", "timeout")} for _ in range(n)]
    done_episodes: list[list[dict]] = [[] for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    resetting = np.zeros(n, dtype=bool)
    bar = tqdm(total=episodes, desc=desc, disable=not progress)
    while any(len(done_episodes[i]) < quota[i] for i in range(n)):
        actions = act(obs)
        next_obs, reward, term, trunc, _ = envs.step(actions)
        for i in np.flatnonzero(~resetting):
            if len(done_episodes[i]) >= quota[i]:
                continue
            buffer = buffers[i]
            for key, value in (("obs", obs[i]), ("action", actions[i]), ("reward", reward[i]),
                               ("terminal", term[i]), ("timeout", trunc[i] and not term[i])):
                buffer[key].append(value)
            if term[i] or trunc[i]:
                done_episodes[i].append({key: np.array(values) for key, values in buffer.items()})
                buffers[i] = {k: [] for k in buffer}
                bar.update(1)
        resetting = term | trunc
        obs = next_obs
    bar.close()
    # Interleave envs so any prefix of the list mixes them.
    return [done_episodes[i][k] for k in range(int(quota.max())) for i in range(n) if k < quota[i]]


def random_episode_actor(env: gym.Env, seed: int) -> Callable[[list[int], list[Any]], list[Any]]:
    """Uniformly random actions for `tandem.lm_inside_agents.evaluation.play_episodes` (the chance baseline)."""
    space = copy.deepcopy(env.action_space)
    space.seed(seed)
    return lambda live, observations: [space.sample() for _ in live]
