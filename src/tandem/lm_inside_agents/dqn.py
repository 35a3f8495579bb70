"""DQN (Mnih et al. 2015) with double-Q targets, a target network, a replay buffer, and LLM-guided exploration
(a language model suggests actions, in the spirit of ELLM, Du et al. 2023):

    a_t = a_LLM                      with probability p_explore (annealed),
          argmax_a Q(s_t, a)         otherwise (epsilon-greedy: a uniform action with probability epsilon).

Double-Q target (van Hasselt et al. 2016): y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a)).
The language model sees `render_state` of each environment and the action names (see `tandem.lm_inside_agents.backends`);
it is only asked when its suggestion is about to be used. Works on a Gymnasium vector env or a single env.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from tandem.lm_inside_agents.evaluation import play_episodes
from tandem.lm_inside_agents.render import action_names, render_state

GREEDY, RANDOM, LLM = 0, 1, 2  # where an action came from


# ---- schedules -------------------------------------------------------------------------------------------------
def linear_schedule(start: float, end: float, step: int, duration: int) -> float:
    """start + (end - start) * min(step / duration, 1)."""
    return end if duration <= 0 else start + (end - start) * min(step / duration, 1.0)


def exponential_schedule(start: float, end: float, step: int, duration: int) -> float:
    """end + (start - end) * 0.01^(step / duration): 99% of the way at `duration`, exactly `end` after it."""
    if duration <= 0 or step >= duration:
        return end
    return end + (start - end) * math.exp(math.log(0.01) * step / duration)


SCHEDULES: dict[str, Callable[[float, float, int, int], float]] = {"linear": linear_schedule, "exponential": exponential_schedule}


# ---- the pure parts --------------------------------------------------------------------------------------------
def exploration_sources(n: int, p_explore: float, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """The rule above for `n` environments: LLM with prob. p_explore, else RANDOM with prob. epsilon, else GREEDY."""
    u = rng.random(n)
    v = rng.random(n)
    return np.where(u < p_explore, LLM, np.where(v < epsilon, RANDOM, GREEDY))


def double_q_targets(
    rewards: torch.Tensor, terminated: torch.Tensor, next_q_online: torch.Tensor, next_q_target: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))  (double DQN)."""
    best = next_q_online.argmax(dim=1, keepdim=True)
    return rewards + gamma * (1.0 - terminated.float()) * next_q_target.gather(1, best).squeeze(1)


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, terminated); the oldest are overwritten."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: Any = np.float32):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of transitions (first axis: one per environment)."""
        for i in range(len(actions)):
            k = self.position
            self.obs[k], self.next_obs[k] = obs[i], next_obs[i]
            self.actions[k], self.rewards[k], self.terminated[k] = actions[i], rewards[i], terminated[i]
            self.position = (k + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A uniform sample (with replacement) of stored transitions, as tensors."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = rng.integers(0, self.size, size=batch_size)
        return {
            "obs": torch.as_tensor(self.obs[index]),
            "actions": torch.as_tensor(self.actions[index]),
            "rewards": torch.as_tensor(self.rewards[index]),
            "next_obs": torch.as_tensor(self.next_obs[index]),
            "terminated": torch.as_tensor(self.terminated[index]),
        }


class QNetwork(torch.nn.Module):
    """Q(s, .) from an embedding (discrete observations) or a flattened input (box observations), then an MLP."""

    def __init__(self, observation_space: gym.Space, n_actions: int, hidden: int = 64):
        super().__init__()
        if isinstance(observation_space, gym.spaces.Discrete):
            self.encoder: torch.nn.Module = torch.nn.Embedding(int(observation_space.n), hidden)
        elif isinstance(observation_space, gym.spaces.Box):
            self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(observation_space.shape)), hidden))
        else:
            raise ValueError(
                f"QNetwork takes Discrete or Box observations, got {observation_space}; "
                "wrap dict observations first (e.g. minigrid.wrappers.ImgObsWrapper)"
            )
        self.discrete = isinstance(observation_space, gym.spaces.Discrete)
        self.head = torch.nn.Sequential(
            torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_actions)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs.long() if self.discrete else obs.float())
        return self.head(x)


# ---- training --------------------------------------------------------------------------------------------------
class DQNConfig(BaseModel):
    """DQN hyper-parameters and the LLM-guided exploration schedule (all environment counts are total env steps)."""

    model_config = ConfigDict(extra="forbid")

    total_steps: int = Field(15_000, ge=1, description="Environment steps to train for (over all vector envs).")
    n_envs: int = Field(4, ge=1, description="Environments stepped together (Gymnasium SyncVectorEnv).")
    seed: int = Field(0, description="Seed for environments, network initialisation, replay sampling and exploration.")
    gamma: float = Field(0.95, ge=0, le=1, description="Discount factor.")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of the Q-network.")
    hidden: int = Field(64, ge=1, description="Hidden width of the Q-network.")
    buffer_size: int = Field(50_000, ge=1, description="Replay buffer capacity in transitions.")
    batch_size: int = Field(64, ge=1, description="Transitions per gradient update.")
    learning_starts: int = Field(500, ge=0, description="Environment steps before the first update.")
    train_every: int = Field(1, ge=1, description="Environment steps per gradient update.")
    target_update_every: int = Field(100, ge=1, description="Environment steps between copies of the online into the target network.")
    max_grad_norm: float = Field(10.0, gt=0, description="Gradient-norm clipping of the Q-network.")
    epsilon_start: float = Field(1.0, ge=0, le=1, description="Epsilon of epsilon-greedy at the start.")
    epsilon_end: float = Field(0.05, ge=0, le=1, description="Epsilon after annealing.")
    epsilon_steps: int = Field(5_000, ge=0, description="Environment steps over which epsilon is annealed.")
    p_explore_start: float = Field(0.5, ge=0, le=1, description="Probability of taking the LM's action at the start.")
    p_explore_end: float = Field(0.0, ge=0, le=1, description="Probability of taking the LM's action after annealing.")
    p_explore_steps: int = Field(5_000, ge=0, description="Environment steps over which p_explore is annealed.")
    schedule: Literal["linear", "exponential"] = Field("linear", description="How epsilon and p_explore are annealed.")
    eval_every: int = Field(500, ge=1, description="Evaluate the greedy policy every N environment steps.")
    eval_episodes: int = Field(10, ge=1, description="Greedy episodes per evaluation.")
    target_success: float | None = Field(
        None, ge=0, le=1, description="Stop once the greedy success rate reaches this (none: train for --total-steps)."
    )


@dataclass
class DQNResult:
    curve: list[dict]  # one record per evaluation: env_steps, success, return, p_explore, epsilon, ...
    steps_to_target: int | None  # env steps when the greedy success rate first reached target_success
    env_steps: int
    updates: int
    seconds: float
    llm_actions: int
    q_network: QNetwork = field(repr=False)

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)


def greedy_success(q_network: QNetwork, env: gym.Env, episodes: int, seed: int) -> tuple[float, float]:
    """Success rate (positive environment return) and mean return of the greedy policy over `episodes` episodes
    (reset seeds seed, seed + 1, ...)."""

    @torch.no_grad()
    def greedy(live: list[int], observations: list) -> list[int]:
        return q_network(torch.as_tensor(np.stack([np.asarray(o) for o in observations]))).argmax(dim=1).tolist()

    outcomes = play_episodes([env], greedy, episodes, reset_seed=lambda k: seed + k)
    return sum(o.ret > 0 for o in outcomes) / episodes, float(np.mean([o.ret for o in outcomes]))


def _as_vector_env(env: gym.Env | gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    if isinstance(env, gym.vector.VectorEnv):
        return env
    return gym.vector.SyncVectorEnv([lambda: env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def same_step_vector_env(make_env: Callable[[], gym.Env], n_envs: int) -> gym.vector.VectorEnv:
    """`n_envs` copies stepped together, reset in the same step as they finish (final obs in the info)."""
    return gym.vector.SyncVectorEnv([make_env for _ in range(n_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _state_renderer(vec: gym.vector.VectorEnv, backend: Any, state_text: Callable[[int, Any], str] | None):
    """`state_text`, or (with a backend to ask) `render_state` of the vector env's i-th env."""
    if state_text is None and backend is not None:
        if not hasattr(vec, "envs"):
            raise ValueError("pass state_text(i, obs) to render states of a vector env without sub-env access")
        state_text = lambda i, obs_i: render_state(vec.envs[i], obs_i)  # noqa: E731
    return state_text


def _choose_actions(online: QNetwork, obs: np.ndarray, sources: np.ndarray, n_actions: int, rng: np.random.Generator,
                    backend: Any, state_text: Callable[[int, Any], str] | None,
                    names: list[str]) -> tuple[np.ndarray, int]:
    """Each env's action from its source (greedy, uniform, or the LM's suggestion); also how many LM suggestions
    were taken."""
    with torch.no_grad():
        actions = online(torch.as_tensor(np.asarray(obs))).argmax(dim=1).numpy()
    for i in np.flatnonzero(sources == RANDOM):
        actions[i] = rng.integers(n_actions)
    taken = 0
    for i in np.flatnonzero(sources == LLM):
        suggestion = backend.propose_action(state_text(i, obs[i]), names)
        if suggestion is not None:  # an unusable answer falls back to the greedy action
            actions[i] = suggestion
            taken += 1
    return actions, taken


def _true_next_obs(next_obs: np.ndarray, infos: dict, mode: gym.vector.AutoresetMode) -> np.ndarray:
    """What followed each step: SAME_STEP autoreset puts an ended episode's final observation in the info."""
    stored_next = np.array(next_obs, copy=True)
    if mode == gym.vector.AutoresetMode.SAME_STEP and "final_obs" in infos:
        for i in np.flatnonzero(infos.get("_final_obs", np.zeros(len(next_obs), dtype=bool))):
            stored_next[i] = infos["final_obs"][i]
    return stored_next


def _gradient_step(online: QNetwork, target: QNetwork, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                   config: DQNConfig) -> None:
    """One Huber-loss step of Q(s, a) towards the double-Q target."""
    with torch.no_grad():
        next_obs = batch["next_obs"]
        y = double_q_targets(batch["rewards"], batch["terminated"], online(next_obs), target(next_obs), config.gamma)
    q = online(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
    loss = F.smooth_l1_loss(q, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(online.parameters(), config.max_grad_norm)
    optimizer.step()


def train_dqn(
    config: DQNConfig,
    env: gym.Env | gym.vector.VectorEnv,
    eval_env: gym.Env | None = None,
    backend: Any = None,
    state_text: Callable[[int, Any], str] | None = None,
    progress: bool = True,
) -> DQNResult:
    """Train a double DQN on `env` (a vector env, or a single env), exploring with `backend` (LLM-guided) when given.

    `eval_env` (a single, unshaped env) measures the greedy policy's success every `eval_every` steps.
    `state_text(i, obs_i)` renders environment i for the LM; by default `render_state` of the vector env's i-th env.
    """
    vec = _as_vector_env(env)
    mode = vec.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    n = vec.num_envs
    single_obs, single_act = vec.single_observation_space, vec.single_action_space
    if not isinstance(single_act, gym.spaces.Discrete):
        raise ValueError(f"DQN needs a discrete action space, got {single_act}")
    state_text = _state_renderer(vec, backend, state_text)
    names = action_names(vec.envs[0]) if hasattr(vec, "envs") else [str(a) for a in range(int(single_act.n))]
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    online = QNetwork(single_obs, int(single_act.n), config.hidden)
    target = QNetwork(single_obs, int(single_act.n), config.hidden)
    target.load_state_dict(online.state_dict())
    optimizer = torch.optim.Adam(online.parameters(), lr=config.lr)
    obs_dtype = np.int64 if isinstance(single_obs, gym.spaces.Discrete) else np.float32
    buffer = ReplayBuffer(config.buffer_size, single_obs.shape, obs_dtype)
    schedule = SCHEDULES[config.schedule]

    obs, _ = vec.reset(seed=config.seed)
    just_reset = np.zeros(n, dtype=bool)  # NEXT_STEP autoreset: the step after a finish only resets
    steps = updates = llm_actions = 0
    next_update, next_target, next_eval = config.learning_starts, config.target_update_every, config.eval_every
    curve: list[dict] = []
    steps_to_target = None
    started = time.perf_counter()
    bar = tqdm(total=config.total_steps, desc="dqn" + ("+lm" if backend is not None else ""), disable=not progress)
    while steps < config.total_steps:
        epsilon = schedule(config.epsilon_start, config.epsilon_end, steps, config.epsilon_steps)
        p_explore = schedule(config.p_explore_start, config.p_explore_end, steps, config.p_explore_steps) if backend else 0.0
        sources = exploration_sources(n, p_explore, epsilon, rng)
        actions, taken = _choose_actions(online, obs, sources, int(single_act.n), rng, backend, state_text, names)
        llm_actions += taken
        next_obs, rewards, terminated, truncated, infos = vec.step(actions)
        stored_next = _true_next_obs(next_obs, infos, mode)
        keep = ~just_reset
        buffer.add(obs[keep], actions[keep], rewards[keep], stored_next[keep], terminated[keep])
        if mode == gym.vector.AutoresetMode.NEXT_STEP:
            just_reset = np.logical_or(terminated, truncated)
        obs = next_obs
        steps += n
        bar.update(n)

        while steps >= next_update and len(buffer) >= config.batch_size:
            _gradient_step(online, target, optimizer, buffer.sample(config.batch_size, rng), config)
            updates += 1
            next_update += config.train_every
        if steps >= next_target:
            target.load_state_dict(online.state_dict())
            next_target += config.target_update_every
        if eval_env is not None and (steps >= next_eval or steps >= config.total_steps):
            next_eval += config.eval_every
            success, mean_return = greedy_success(online, eval_env, config.eval_episodes, seed=config.seed + 10_000)
            curve.append({"env_steps": steps, "success": success, "return": mean_return, "epsilon": epsilon,
                          "p_explore": p_explore, "updates": updates, "llm_actions": llm_actions,
                          "seconds": time.perf_counter() - started})
            bar.set_postfix(success=f"{success:.2f}")
            if config.target_success is not None and success >= config.target_success:
                steps_to_target = steps
                break
    bar.close()
    return DQNResult(curve, steps_to_target, steps, updates, time.perf_counter() - started, llm_actions, online)
