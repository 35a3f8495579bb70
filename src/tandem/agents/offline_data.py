"""Offline RL datasets collected by tandem's own agents on Gymnasium tasks (random / medium / expert behaviour
policies, as in D4RL, Fu et al. 2020), for offline RL such as the Decision Transformer (Chen et al. 2021).

Behaviour policies: `random` (uniform actions), and `medium` / `expert` snapshots of one PPO run
(`tandem.agents.ppo`): expert is the snapshot with the best training return, medium the first snapshot that
reached `medium_fraction` of the way from the initial (near-random) return to the expert's. A dataset mixes
whole episodes of these policies in given proportions; every policy acts stochastically (it samples).

Format (a directory, `tandem-offline-v1`), written atomically:

* `transitions.npz` (numpy, loaded with allow_pickle=False), one row per environment step, each episode's
  steps contiguous and in order:
    - `observations` (N, *obs_shape) float32: the observation the action was taken in
    - `actions` (N,) int64 for Discrete action spaces, (N, action_dim) float32 for Box ones
    - `rewards` (N,) float32
    - `terminals` (N,) bool: the episode ended in a terminal state (no bootstrapping past it)
    - `timeouts` (N,) bool: the episode was cut by a time limit (truncated)
    - `episode_ids` (N,) int64: 0, 0, ..., 1, 1, ... numbering the episodes in file order
    - `policy_ids` (N,) int64: index into metadata `policies` of the policy that acted
  Only whole episodes are stored: each ends in exactly one row with `terminals` or `timeouts` set.
* `metadata.json`: `format`, `env_id`, `observation_shape`, `action_kind` ("discrete" / "continuous"),
  `action_dim` (number of actions, or the Box dimension), `action_low` / `action_high` (Box only),
  `policies` (list of {name, episodes, transitions, mean_return, std_return}), `episodes`, `transitions`,
  `mean_return`, `seed`, and how the behaviour policies were trained (`ppo_steps`, `ppo_config`).
* `policies/<name>.safetensors` + `.json`: the PPO behaviour policies' weights and shape (not random).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file, save_file
from scipy.signal import lfilter
from tqdm.auto import tqdm

from tandem.agents.ppo import AgentPPOConfig, MLPActorCritic, as_float_tensor, env_actions, train_ppo
from tandem.data import DataError
from tandem.trainers.checkpoint import atomic_directory

FORMAT = "tandem-offline-v1"
TRANSITIONS, METADATA = "transitions.npz", "metadata.json"
ARRAYS = ("observations", "actions", "rewards", "terminals", "timeouts", "episode_ids", "policy_ids")
BEHAVIOUR_POLICIES = ("random", "medium", "expert")

# PPO settings that train a good behaviour policy within the default step budget (CleanRL / RL-zoo values).
PPO_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(num_steps=128, lr=2.5e-4, gamma=0.99, update_epochs=4, num_minibatches=4, ent_coef=0.01),
    "Acrobot-v1": dict(num_steps=128, lr=2.5e-4, gamma=0.99, update_epochs=4, num_minibatches=4, ent_coef=0.0),
    "Pendulum-v1": dict(num_steps=1024, lr=1e-3, gamma=0.9, update_epochs=10, num_minibatches=32, ent_coef=0.0),
}


# ---- the math --------------------------------------------------------------------------------------


def returns_to_go(rewards: np.ndarray, episode_ids: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """R_hat_t = sum_{k >= t, same episode} gamma^(k - t) r_k (Decision Transformer conditioning).

    `episode_ids` must keep each episode's steps contiguous; the sum stops at the episode's last step.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(rewards)
    for start, end in episode_bounds(episode_ids):
        # lfilter runs y_t = x_t + gamma y_{t-1}; on the reversed episode that is the discounted tail sum.
        out[start:end] = lfilter([1.0], [1.0, -gamma], rewards[start:end][::-1])[::-1]
    return out


def episode_bounds(episode_ids: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) row ranges of the runs of equal ids, in order."""
    episode_ids = np.asarray(episode_ids)
    if len(episode_ids) == 0:
        return []
    cuts = np.flatnonzero(episode_ids[1:] != episode_ids[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(episode_ids)]])
    return list(zip(starts.tolist(), ends.tolist()))


def normalised_score(value: float, random_return: float, expert_return: float) -> float:
    """100 (R - R_random) / (R_expert - R_random), D4RL's normalised return (Fu et al. 2020)."""
    return 100.0 * (value - random_return) / max(expert_return - random_return, 1e-8)


# ---- the dataset -----------------------------------------------------------------------------------


@dataclass
class OfflineDataset:
    """Transitions of whole episodes plus metadata (see the module docstring for the format)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_ids: np.ndarray
    policy_ids: np.ndarray
    metadata: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def discrete(self) -> bool:
        return self.metadata["action_kind"] == "discrete"

    def episode_bounds(self) -> list[tuple[int, int]]:
        return episode_bounds(self.episode_ids)

    def episode_returns(self) -> np.ndarray:
        return np.array([self.rewards[s:e].sum() for s, e in self.episode_bounds()], dtype=np.float64)

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        return returns_to_go(self.rewards, self.episode_ids, gamma)

    def policy_returns(self) -> dict[str, float]:
        """Mean episode return of each behaviour policy in the data."""
        return {p["name"]: p["mean_return"] for p in self.metadata["policies"]}

    def save(self, folder: str | Path, policies: dict[str, MLPActorCritic] | None = None) -> Path:
        """Write the directory atomically, with the behaviour policies' weights under `policies/`."""

        def write(tmp: Path) -> None:
            np.savez(tmp / TRANSITIONS, **{name: getattr(self, name) for name in ARRAYS})
            (tmp / METADATA).write_text(json.dumps(self.metadata, indent=2), encoding="utf-8")
            for name, policy in (policies or {}).items():
                save_policy(policy, tmp / "policies", name)

        return atomic_directory(Path(folder), write)

    @classmethod
    def load(cls, folder: str | Path) -> OfflineDataset:
        return load_offline_dataset(folder)


def _require(condition: bool, message: str, path: Path, field: str, row: int | None = None) -> None:
    if not condition:
        raise DataError(message, path=str(path), field=field, line=row, unit="row")


def load_offline_dataset(folder: str | Path) -> OfflineDataset:
    """Read and check a dataset directory; errors name the file, the field and (where it applies) the row."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no offline dataset directory here (write one with `tandem collect`)")
    meta_path, data_path = folder / METADATA, folder / TRANSITIONS
    for path in (meta_path, data_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; an offline dataset holds {METADATA} and {TRANSITIONS}")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg})", path=str(meta_path), line=error.lineno) from None
    _require(isinstance(metadata, dict), "expected a JSON object", meta_path, "(top level)")
    _require(metadata.get("format") == FORMAT, f"expected {FORMAT!r}, got {metadata.get('format')!r}", meta_path, "format")
    for key in ("env_id", "action_kind", "action_dim", "policies"):
        _require(key in metadata, "missing", meta_path, key)
    _require(metadata["action_kind"] in ("discrete", "continuous"), "must be 'discrete' or 'continuous'",
             meta_path, "action_kind")
    with np.load(data_path, allow_pickle=False) as archive:
        missing = [name for name in ARRAYS if name not in archive.files]
        _require(not missing, f"missing arrays: {', '.join(missing)}", data_path, missing[0] if missing else "")
        arrays = {name: archive[name] for name in ARRAYS}
    rows = len(arrays["observations"])
    for name, array in arrays.items():
        _require(len(array) == rows, f"has {len(array)} rows but observations has {rows}", data_path, name)
    for name in ("observations", "rewards") + (() if metadata["action_kind"] == "discrete" else ("actions",)):
        bad = np.flatnonzero(~np.isfinite(arrays[name].reshape(rows, -1)).all(-1)) if rows else []
        _require(len(bad) == 0, "not a finite number", data_path, name, int(bad[0]) + 1 if len(bad) else None)
    ids = arrays["episode_ids"]
    steps = np.diff(ids)
    bad = np.flatnonzero((steps != 0) & (steps != 1))
    _require(rows == 0 or (ids[0] == 0 and len(bad) == 0),
             "episode ids must run 0, 0, ..., 1, 1, ... with each episode contiguous",
             data_path, "episode_ids", int(bad[0]) + 2 if len(bad) else 1)
    ends = arrays["terminals"].astype(bool) | arrays["timeouts"].astype(bool)
    last_rows = np.array([end - 1 for _, end in episode_bounds(ids)], dtype=np.int64)
    wrong = np.flatnonzero(ends != np.isin(np.arange(rows), last_rows))
    _require(len(wrong) == 0, "terminals | timeouts must be set on exactly the last row of each episode",
             data_path, "terminals", int(wrong[0]) + 1 if len(wrong) else None)
    policies = len(metadata["policies"])
    bad = np.flatnonzero((arrays["policy_ids"] < 0) | (arrays["policy_ids"] >= policies))
    _require(len(bad) == 0, f"must index metadata policies (0..{policies - 1})", data_path, "policy_ids",
             int(bad[0]) + 1 if len(bad) else None)
    return OfflineDataset(**arrays, metadata=metadata)


# ---- collection --------------------------------------------------------------------------------------


ActFn = Callable[[Any], np.ndarray]


def make_vector_env(env_id: str, num_envs: int, vectorization: Literal["sync", "async"] = "sync") -> gym.vector.VectorEnv:
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


def evaluate_actor(envs: gym.vector.VectorEnv, act: ActFn, episodes: int, seed: int, progress: bool = False) -> np.ndarray:
    """Returns of `episodes` whole episodes of `act`."""
    return np.array([e["reward"].sum() for e in run_episodes(envs, act, episodes, seed, "evaluate", progress)])


def episodes_to_dataset(episodes: list[dict[str, np.ndarray]], policy_index: list[int], metadata: dict) -> OfflineDataset:
    """Concatenate episodes (from `run_episodes`) into an OfflineDataset, numbering them in order."""
    discrete = metadata["action_kind"] == "discrete"
    return OfflineDataset(
        observations=np.concatenate([e["obs"] for e in episodes]).astype(np.float32),
        actions=np.concatenate([e["action"] for e in episodes]).astype(np.int64 if discrete else np.float32),
        rewards=np.concatenate([e["reward"] for e in episodes]).astype(np.float32),
        terminals=np.concatenate([e["terminal"] for e in episodes]).astype(bool),
        timeouts=np.concatenate([e["timeout"] for e in episodes]).astype(bool),
        episode_ids=np.concatenate([np.full(len(e["reward"]), k, dtype=np.int64) for k, e in enumerate(episodes)]),
        policy_ids=np.concatenate([np.full(len(e["reward"]), p, dtype=np.int64) for e, p in zip(episodes, policy_index)]),
        metadata=metadata,
    )


def space_metadata(envs: gym.vector.VectorEnv, env_id: str) -> dict[str, Any]:
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise ValueError(f"{env_id}: offline datasets need a Box observation space, got {obs_space}")
    meta: dict[str, Any] = {"format": FORMAT, "env_id": env_id, "observation_shape": list(obs_space.shape)}
    if isinstance(action_space, gym.spaces.Discrete):
        meta.update(action_kind="discrete", action_dim=int(action_space.n))
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        meta.update(action_kind="continuous", action_dim=int(action_space.shape[0]),
                    action_low=action_space.low.tolist(), action_high=action_space.high.tolist())
    else:
        raise ValueError(f"{env_id}: offline datasets need a Discrete or 1-D Box action space, got {action_space}")
    return meta


# ---- behaviour policies ------------------------------------------------------------------------------


def ppo_config_for(env_id: str, steps: int, seed: int, progress: bool) -> AgentPPOConfig:
    return AgentPPOConfig(total_steps=steps, seed=seed, progress=progress, **PPO_PRESETS.get(env_id, {}))


def train_behaviour_policies(
    envs: gym.vector.VectorEnv, config: AgentPPOConfig, medium_fraction: float = 0.4
) -> dict[str, tuple[MLPActorCritic, float]]:
    """One PPO run; returns {"medium": (policy, training return), "expert": ...} picked from its snapshots.

    Training returns are smoothed over 3 updates. Expert: the best snapshot. Medium: the first snapshot
    whose return reached initial + medium_fraction (expert - initial).
    """
    policy = MLPActorCritic.for_env(envs)
    snapshots: list[tuple[dict, float]] = []

    def keep(record: dict) -> None:
        snapshots.append(({k: v.clone() for k, v in policy.state_dict().items()}, record["mean_return"]))

    train_ppo(envs, policy, config, callback=keep)
    returns = np.array([r for _, r in snapshots], dtype=np.float64)
    returns = np.where(np.isnan(returns), np.nanmin(returns) if np.isfinite(returns).any() else 0.0, returns)
    smooth = np.convolve(returns, np.ones(3) / 3, mode="full")[: len(returns)]
    smooth[:2] = returns[:2]
    best = int(np.argmax(smooth))
    target = smooth[0] + medium_fraction * (smooth[best] - smooth[0])
    medium = int(np.flatnonzero(smooth[: best + 1] >= target)[0])
    chosen = {}
    for name, index in (("medium", medium), ("expert", best)):
        snapshot = copy.deepcopy(policy)
        snapshot.load_state_dict(snapshots[index][0])
        chosen[name] = (snapshot.eval(), float(smooth[index]))
    return chosen


def save_policy(policy: MLPActorCritic, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"obs_dim": policy.obs_dim, "hidden": policy.hidden}), encoding="utf-8")


def load_policy(folder: Path, name: str, action_space: gym.Space) -> MLPActorCritic:
    shape = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    policy = MLPActorCritic(shape["obs_dim"], action_space, shape["hidden"])
    policy.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    return policy.eval()


# ---- the `tandem collect` command ----------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """'random=1,medium=1,expert=2' -> episode fractions {'random': 0.25, 'medium': 0.25, 'expert': 0.5}."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in BEHAVIOUR_POLICIES:
            raise ValueError(f"mix entry {part!r}: expected NAME=WEIGHT with NAME one of {', '.join(BEHAVIOUR_POLICIES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"mix entry {part!r}: weight {value!r} is not a number") from None
        if weights[name] < 0:
            raise ValueError(f"mix entry {part!r}: weights must be >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mix {text!r}: give at least one positive weight")
    return {name: w / total for name, w in weights.items() if w > 0}


class CollectConfig(BaseModel):
    """Options of `tandem collect`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    out: Path = Field(Path("runs/offline/cartpole"), description="Dataset directory to write.")
    env_id: str = Field("CartPole-v1", description="Gymnasium environment id (Box observations; Discrete or Box actions).")
    episodes: int = Field(300, ge=1, description="Whole episodes to collect, over all behaviour policies.")
    mix: str = Field("random=1,medium=1,expert=1",
                     description="Episode proportions of the behaviour policies random, medium and expert.")
    num_envs: int = Field(8, ge=1, description="Vector environments for PPO training and collection.")
    vectorization: Literal["sync", "async"] = Field("sync", description="Gymnasium vector env kind.")
    ppo_steps: int = Field(60_000, ge=1, description="Environment steps of the PPO run that yields medium and expert.")
    medium_fraction: float = Field(0.4, gt=0, lt=1,
                                   description="Medium = first PPO snapshot this far from initial to expert return.")
    seed: int = Field(0, description="Seed for PPO, the environments and random actions.")
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("mix")
    @classmethod
    def _valid_mix(cls, value: str) -> str:
        parse_mix(value)
        return value


def collect_offline_dataset(config: CollectConfig) -> OfflineDataset:
    """Train behaviour policies (if the mix needs them), collect the mixture, save it to `config.out`."""
    torch.manual_seed(config.seed)
    fractions = parse_mix(config.mix)
    envs = make_vector_env(config.env_id, config.num_envs, config.vectorization)
    try:
        metadata = space_metadata(envs, config.env_id)
        actors: dict[str, ActFn] = {"random": random_actor(envs, config.seed)}
        trained: dict[str, tuple[MLPActorCritic, float]] = {}
        ppo_config = ppo_config_for(config.env_id, config.ppo_steps, config.seed, config.progress)
        if {"medium", "expert"} & set(fractions):
            trained = train_behaviour_policies(envs, ppo_config, config.medium_fraction)
            for name, (policy, _) in trained.items():
                actors[name] = policy_actor(policy, envs.single_action_space)
        names = [name for name in BEHAVIOUR_POLICIES if name in fractions]
        counts = _split_counts(config.episodes, [fractions[name] for name in names])
        episodes, policy_index, policies = [], [], []
        for k, (name, count) in enumerate(zip(names, counts)):
            if count == 0:
                continue
            got = run_episodes(envs, actors[name], count, config.seed + 1000 * (k + 1), name, config.progress)
            returns = np.array([e["reward"].sum() for e in got])
            policies.append({"name": name, "episodes": count, "transitions": int(sum(len(e["reward"]) for e in got)),
                             "mean_return": float(returns.mean()), "std_return": float(returns.std()),
                             "ppo_training_return": trained[name][1] if name in trained else None})
            policy_index += [len(policies) - 1] * count
            episodes += got
    finally:
        envs.close()
    all_returns = np.array([e["reward"].sum() for e in episodes])
    metadata.update(policies=policies, episodes=len(episodes), transitions=int(sum(len(e["reward"]) for e in episodes)),
                    mean_return=float(all_returns.mean()), mix=fractions, seed=config.seed,
                    ppo_steps=config.ppo_steps if trained else 0, ppo_config=ppo_config.model_dump() if trained else None)
    dataset = episodes_to_dataset(episodes, policy_index, metadata)
    dataset.save(config.out, {name: policy for name, (policy, _) in trained.items()})
    return dataset


def _split_counts(total: int, fractions: list[float]) -> list[int]:
    """Largest-remainder split of `total` whole episodes by `fractions`."""
    raw = np.array(fractions) * total
    counts = np.floor(raw).astype(int)
    for index in np.argsort(-(raw - counts))[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()
