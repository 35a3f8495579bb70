"""Vectorised PPO for Gymnasium environments (Schulman et al. 2017), one readable file in the CleanRL manner.

Contract (what another agent needs to reuse it, e.g. a language-conditioned BabyAI policy):

    history = train_ppo(envs, policy, AgentPPOConfig(...), obs_fn=..., callback=None)

* `envs`: a `gymnasium.vector.VectorEnv` (SyncVectorEnv / AsyncVectorEnv, wrapped or not) in the NEXT_STEP
  (Gymnasium's default) or SAME_STEP autoreset mode. It is reset once with `seed=config.seed`.
* `obs_fn(raw_batch_obs)` turns the vector env's batched observation (an array, or a dict of arrays for
  Dict spaces) into what the policy takes: a Tensor, or a dict / tuple / list of Tensors, batch first. Every
  call must give the same trailing shapes (pad text to a fixed length), because rollouts are concatenated.
  The default `as_float_tensor` is `torch.as_tensor(obs, dtype=float32)` on the policy's device.
* `policy(obs) -> (distribution, value)`: a `torch.distributions.Distribution` over the batch of actions and
  a value Tensor of shape (B,). Categorical gives discrete actions; Normal gives continuous ones, whose
  log-probs and entropies are summed over the action dimensions (or use `Independent`). Actions sent to a
  Box space are clipped to its bounds; the unclipped sample is what is trained on.
* `callback(record)` is called after every update with that update's metrics; return True to stop.
* Returns a `PPOHistory`: one record per update and every finished episode's return and length.

Advantages: GAE over (T, N) rollouts with episode ends inside a column (`rollout_gae`). Truncated episodes
(time limits) bootstrap from V(final observation); terminated ones do not. The clipped surrogate, the value
loss and whitening are the LLM trainers' own functions (`tandem.algorithms.policy_losses` / `.advantages`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import concatenate, create_empty_array
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal
from tqdm.auto import tqdm

from tandem.algorithms.advantages import whiten
from tandem.algorithms.policy_losses import clipped_value_loss, explained_variance, ppo_clip_loss


class AgentPPOConfig(BaseModel):
    """Hyper-parameters of PPO on environments (defaults: CleanRL's `ppo.py` for classic control)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    total_steps: int = Field(50_000, ge=1, description="Environment steps to train for, summed over all vector envs.")
    num_steps: int = Field(128, ge=1, description="Rollout length per environment before each update.")
    lr: float = Field(2.5e-4, gt=0, description="Adam learning rate.")
    anneal_lr: bool = Field(True, description="Decay the learning rate linearly to 0 over training.")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    update_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    num_minibatches: int = Field(4, ge=1, description="Minibatches per pass.")
    clip_coef: float = Field(0.2, gt=0, description="PPO ratio clip epsilon.")
    clip_value: float | None = Field(None, gt=0, description="Value clip range (none: plain squared error).")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss.")
    ent_coef: float = Field(0.01, ge=0, description="Weight of the entropy bonus.")
    max_grad_norm: float = Field(0.5, gt=0, description="Clip the global gradient norm to this value.")
    normalize_advantages: bool = Field(True, description="Whiten advantages over each rollout.")
    target_kl: float | None = Field(None, gt=0, description="Stop an update's epochs early past this approx KL.")
    seed: int = Field(0, description="Seed for the environments' reset and for torch.")
    progress: bool = Field(True, description="Show a progress bar.")


@dataclass
class PPOHistory:
    """What a PPO run did: per-update metrics, and (env step, return, length) of every finished episode."""

    records: list[dict[str, float]] = field(default_factory=list)
    episodes: list[tuple[int, float, int]] = field(default_factory=list)

    def mean_return(self, last: int = 20) -> float:
        """Mean return of the last `last` finished episodes (nan when none finished)."""
        returns = [ret for _, ret, _ in self.episodes[-last:]]
        return float(np.mean(returns)) if returns else float("nan")


# ---- the math --------------------------------------------------------------------------------------


@torch.no_grad()
def rollout_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """GAE (Schulman et al. 2016) over environment rollouts of shape (T, N), time first.

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t),   A_t = delta_t + gamma lam (1 - end_t) A_{t+1},
    returns R_t = A_t + V(s_t). `next_values[t]` is V of the observation that followed step t (the final
    observation of an episode that ended there, or the observation after the rollout at t = T-1), so
    truncated episodes bootstrap and terminated ones do not. `episode_end` = terminated or truncated cuts
    the recursion. `tandem.algorithms.advantages.gae_advantages` is the one-episode-per-row special case.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    carries_on, bootstraps = (~episode_end.bool()).to(rewards.dtype), (~terminated.bool()).to(rewards.dtype)
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * bootstraps[t] * next_values[t] - values[t]
        running = delta + gamma * lam * carries_on[t] * running
        advantages[t] = running
    return advantages, advantages + values


def summed_log_prob(dist: Distribution, actions: Tensor) -> Tensor:
    """log pi(a | s) per batch element: summed over action dimensions for factorised continuous actions."""
    logp = dist.log_prob(actions)
    return logp.reshape(logp.shape[0], -1).sum(-1) if logp.ndim > 1 else logp


def summed_entropy(dist: Distribution) -> Tensor:
    entropy = dist.entropy()
    return entropy.reshape(entropy.shape[0], -1).sum(-1) if entropy.ndim > 1 else entropy


# ---- a default policy ------------------------------------------------------------------------------


def _layer(inputs: int, outputs: int, gain: float = float(np.sqrt(2))) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLPActorCritic(nn.Module):
    """Separate tanh MLPs for the policy and the value (CleanRL's classic-control agent).

    Discrete action spaces get a Categorical over logits; Box spaces a Normal with a state-independent
    log standard deviation.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden: int = 64) -> None:
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, outputs = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete, outputs = False, int(action_space.shape[0])
            self.log_std = nn.Parameter(torch.zeros(outputs))
        else:
            raise ValueError(f"MLPActorCritic handles Discrete and 1-D Box action spaces, got {action_space}")
        self.obs_dim, self.hidden, self.action_space = obs_dim, hidden, action_space
        self.critic = nn.Sequential(_layer(obs_dim, hidden), nn.Tanh(), _layer(hidden, hidden), nn.Tanh(), _layer(hidden, 1, 1.0))
        self.actor = nn.Sequential(
            _layer(obs_dim, hidden), nn.Tanh(), _layer(hidden, hidden), nn.Tanh(), _layer(hidden, outputs, 0.01)
        )

    @classmethod
    def for_env(cls, envs: gym.vector.VectorEnv | gym.Env, hidden: int = 64) -> MLPActorCritic:
        """Sized from an env's (single) observation and action spaces."""
        obs_space = getattr(envs, "single_observation_space", envs.observation_space)
        action_space = getattr(envs, "single_action_space", envs.action_space)
        return cls(int(np.prod(obs_space.shape)), action_space, hidden)

    def forward(self, obs: Tensor) -> tuple[Distribution, Tensor]:
        obs = obs.reshape(obs.shape[0], -1)
        value = self.critic(obs).squeeze(-1)
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out), value
        return Normal(out, self.log_std.exp().expand_as(out)), value


def policy_device(policy: nn.Module) -> torch.device:
    parameter = next(policy.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def as_float_tensor(device: torch.device | str = "cpu") -> Callable[[Any], Tensor]:
    """The default obs_fn: a float32 tensor of the batched observation on `device`."""
    return lambda obs: torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)


def env_actions(actions: Tensor, action_space: gym.Space) -> np.ndarray:
    """Policy samples -> what the vector env takes: Box actions clipped to the bounds, Discrete as ints."""
    actions = actions.detach().cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high).astype(action_space.dtype)
    if isinstance(action_space, gym.spaces.Discrete):
        return actions.astype(np.int64)
    return actions


# ---- batches of observations that may be nested (dicts of tensors for Dict spaces) ------------------


def _tree_cat(items: list) -> Any:
    first = items[0]
    if isinstance(first, Tensor):
        return torch.cat(items)
    if isinstance(first, dict):
        return {key: _tree_cat([item[key] for item in items]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_tree_cat([item[k] for item in items]) for k in range(len(first)))
    raise TypeError(f"obs_fn must return a Tensor or a dict/tuple/list of Tensors, got {type(first).__name__}")


def _tree_index(tree: Any, index: Tensor) -> Any:
    if isinstance(tree, Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {key: _tree_index(value, index) for key, value in tree.items()}
    return type(tree)(_tree_index(value, index) for value in tree)


def _final_observations(envs: gym.vector.VectorEnv, info: dict, ended: np.ndarray, next_obs: Any) -> Any:
    """SAME_STEP mode: the batch of observations with each ended env's final observation swapped in."""
    finals = [info["final_obs"][i] if ended[i] else None for i in range(envs.num_envs)]
    current = list(gym.vector.utils.iterate(envs.single_observation_space, next_obs))
    items = [final if final is not None else now for final, now in zip(finals, current)]
    return concatenate(envs.single_observation_space, items, create_empty_array(envs.single_observation_space, envs.num_envs))


# ---- training --------------------------------------------------------------------------------------


def _check_policy_output(output: Any, batch: int) -> tuple[Distribution, Tensor]:
    if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], Distribution)):
        raise TypeError("policy(obs) must return (torch.distributions.Distribution, value Tensor)")
    dist, value = output
    if value.shape != (batch,):
        raise ValueError(f"policy value must have shape ({batch},), got {tuple(value.shape)}")
    return dist, value


@dataclass
class _EnvState:
    """What carries over from one rollout to the next: the latest observation and each env's running episode."""

    raw_obs: Any
    # NEXT_STEP: the step after an episode ends only resets that env (action ignored, reward 0): not trained on
    resetting: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    env_steps: int = 0

    @classmethod
    def reset(cls, envs: gym.vector.VectorEnv, seed: int) -> _EnvState:
        raw_obs, _ = envs.reset(seed=seed)
        n = envs.num_envs
        return cls(raw_obs, np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n, dtype=np.int64))

    def count_step(self, reward: np.ndarray, end: np.ndarray, valid: np.ndarray) -> list[tuple[int, float, int]]:
        """Add a step to each env's episode; (env step, return, length) of the episodes it ended."""
        self.episode_return += np.where(valid, reward, 0.0)
        self.episode_length += valid
        finished = []
        for i in np.flatnonzero(end):
            finished.append((self.env_steps, float(self.episode_return[i]), int(self.episode_length[i])))
            self.episode_return[i], self.episode_length[i] = 0.0, 0
        return finished


@dataclass
class _Rollout:
    """One rollout: observations, actions and log-probs flattened to T*N rows; the rest (T, N), time first."""

    observations: Any
    actions: Tensor
    logps: Tensor
    values: Tensor
    rewards: Tensor
    next_values: Tensor  # V of the observation that followed each step (an ended episode's final observation)
    terminated: Tensor
    ended: Tensor
    valid: Tensor  # steps trained on (not a NEXT_STEP reset)
    finished: list[tuple[int, float, int]]  # (env step, return, length) of the episodes that ended in it


def _collect_rollout(envs: gym.vector.VectorEnv, policy: nn.Module, obs_fn: Callable[[Any], Any], state: _EnvState,
                     horizon: int, mode: AutoresetMode, device: torch.device) -> _Rollout:
    """`horizon` steps of every env with actions sampled from `policy`."""
    n = envs.num_envs
    observations, actions, logps, values, rewards, next_values, terminated, ended, valid = ([] for _ in range(9))
    finished: list[tuple[int, float, int]] = []
    for _ in range(horizon):
        obs = obs_fn(state.raw_obs)
        with torch.no_grad():
            dist, value = _check_policy_output(policy(obs), n)
            action = dist.sample()
        state.raw_obs, reward, term, trunc, info = envs.step(env_actions(action, envs.single_action_space))
        state.env_steps += n
        step_valid = ~state.resetting
        end = (term | trunc) & step_valid
        finished += state.count_step(reward, end, step_valid)
        if mode == AutoresetMode.SAME_STEP and end.any():
            with torch.no_grad():
                after = policy(obs_fn(_final_observations(envs, info, end, state.raw_obs)))[1]
        else:
            after = None  # V(next obs) is the next step's value (NEXT_STEP keeps the final obs in raw_obs)
        observations.append(obs)
        actions.append(action)
        logps.append(summed_log_prob(dist, action))
        values.append(value)
        rewards.append(torch.as_tensor(reward, dtype=torch.float32, device=device))
        terminated.append(torch.as_tensor(term & step_valid, device=device))
        ended.append(torch.as_tensor(end, device=device))
        valid.append(torch.as_tensor(step_valid, device=device))
        next_values.append(after)
        state.resetting = (term | trunc) if mode == AutoresetMode.NEXT_STEP else np.zeros(n, dtype=bool)
    with torch.no_grad():
        last_value = _check_policy_output(policy(obs_fn(state.raw_obs)), n)[1]
    following = values[1:] + [last_value]
    return _Rollout(
        _tree_cat(observations), torch.cat(actions), torch.cat(logps), torch.stack(values), torch.stack(rewards),
        torch.stack([nv if nv is not None else f for nv, f in zip(next_values, following)]),
        torch.stack(terminated), torch.stack(ended), torch.stack(valid), finished,
    )


def train_ppo(
    envs: gym.vector.VectorEnv,
    policy: nn.Module,
    config: AgentPPOConfig,
    obs_fn: Callable[[Any], Any] | None = None,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
) -> PPOHistory:
    """Train `policy` in place with PPO on `envs` for `config.total_steps` environment steps (see module doc)."""
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ValueError(f"train_ppo needs a NEXT_STEP or SAME_STEP autoreset vector env, got {mode}")
    device = policy_device(policy)
    obs_fn = obs_fn or as_float_tensor(device)
    n, horizon = envs.num_envs, config.num_steps
    updates = max(1, config.total_steps // (n * horizon))
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    history = PPOHistory()

    state = _EnvState.reset(envs, config.seed)
    bar = tqdm(total=updates * n * horizon, desc="ppo", disable=not config.progress)
    for update in range(updates):
        started = time.perf_counter()
        if config.anneal_lr:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1.0 - update / updates)
        rollout = _collect_rollout(envs, policy, obs_fn, state, horizon, mode, device)
        advantages, returns = rollout_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                                          rollout.ended, config.gamma, config.gae_lambda)
        if config.normalize_advantages:
            advantages = whiten(advantages, rollout.valid)

        rollout_seconds = time.perf_counter() - started
        stats = _update(policy, optimizer, config, rollout.observations, rollout.actions, rollout.logps,
                        rollout.values.reshape(-1), advantages.reshape(-1), returns.reshape(-1),
                        rollout.valid.reshape(-1))
        finished = rollout.finished
        history.episodes.extend(finished)
        record = {
            "update": update + 1,
            "env_steps": state.env_steps,
            "episodes": len(finished),
            "mean_return": float(np.mean([r for _, r, _ in finished])) if finished else float("nan"),
            "mean_length": float(np.mean([k for _, _, k in finished])) if finished else float("nan"),
            "explained_variance": float(explained_variance(rollout.values, returns, rollout.valid)),
            "steps_per_s": n * horizon / (time.perf_counter() - started),
            "rollout_seconds": rollout_seconds,
            "update_seconds": time.perf_counter() - started - rollout_seconds,
            **stats,
        }
        history.records.append(record)
        bar.update(n * horizon)
        bar.set_postfix(ret=f"{history.mean_return():.1f}")
        if callback is not None and callback(record):
            break
    bar.close()
    return history


def _update(policy, optimizer, config, obs, actions, old_logp, old_values, advantages, returns, valid) -> dict:
    """Epochs of minibatch steps on the clipped surrogate + value loss - entropy bonus (valid steps only)."""
    indices = valid.nonzero().squeeze(-1)
    size = max(1, len(indices) // config.num_minibatches)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(config.update_epochs):
        order = indices[torch.randperm(len(indices), device=indices.device)]
        kls = []
        for start in range(0, len(order) - size + 1, size):
            batch = order[start : start + size]
            dist, value = _check_policy_output(policy(_tree_index(obs, batch)), len(batch))
            logp = summed_log_prob(dist, actions[batch])
            ones = torch.ones_like(logp, dtype=torch.bool)
            surrogate = ppo_clip_loss(logp, old_logp[batch], advantages[batch], ones, clip_low=config.clip_coef)
            value_loss, _ = clipped_value_loss(value, old_values[batch], returns[batch], ones, config.clip_value)
            entropy = summed_entropy(dist).mean()
            policy_loss, value_loss = surrogate.loss.mean(), value_loss.mean()
            loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            step_stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, **surrogate.stats}
            for key, value_ in step_stats.items():
                sums[key] = sums.get(key, 0.0) + float(value_.detach())
            kls.append(float(surrogate.stats["approx_kl"]))
            count += 1
        if config.target_kl is not None and np.mean(kls) > config.target_kl:
            break
    return {key: value / max(count, 1) for key, value in sums.items()} | {"optimizer_steps": count}


@torch.no_grad()
def greedy_actions(policy: nn.Module, obs: Any) -> Tensor:
    """The distribution's mode: argmax for Categorical, the mean for Normal (evaluation)."""
    return policy(obs)[0].mode


__all__ = [
    "AgentPPOConfig",
    "MLPActorCritic",
    "PPOHistory",
    "as_float_tensor",
    "env_actions",
    "greedy_actions",
    "policy_device",
    "rollout_gae",
    "summed_entropy",
    "summed_log_prob",
    "train_ppo",
]
