"""Offline RL datasets (as in D4RL, Fu et al. 2020) for offline RL such as the Decision Transformer (Chen et al.
2021): the on-disk format, its loader and checks, and the return arithmetic on it. `tandem.lm_inside_agents.offline_collect`
collects them with tandem's own behaviour policies.

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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from safetensors.torch import save_file
from scipy.signal import lfilter

from tandem.data import DataError
from tandem.trainers.checkpoint import atomic_directory

if TYPE_CHECKING:
    from tandem.lm_inside_agents.ppo import MLPActorCritic

FORMAT = "tandem-offline-v1"
TRANSITIONS, METADATA = "transitions.npz", "metadata.json"
ARRAYS = ("observations", "actions", "rewards", "terminals", "timeouts", "episode_ids", "policy_ids")


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


def save_policy(policy: MLPActorCritic, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"obs_dim": policy.obs_dim, "hidden": policy.hidden}), encoding="utf-8")
