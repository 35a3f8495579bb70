"""Offline datasets collected by tandem's own agents on Gymnasium tasks: the behaviour policies, their mixture
and `collect_offline_dataset` (the `tandem collect` run); the format is `tandem.lm_inside_agents.offline_data`'s.

Behaviour policies: `random` (uniform actions), and `medium` / `expert` snapshots of one PPO run
(`tandem.lm_inside_agents.ppo`): expert is the snapshot with the best training return, medium the first snapshot that
reached `medium_fraction` of the way from the initial (near-random) return to the expert's. A dataset mixes
whole episodes of these policies in given proportions; every policy acts stochastically (it samples).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.lm_inside_agents.episodes import ActFn, policy_actor, random_actor, run_episodes, vector_env_by_id
from tandem.lm_inside_agents.offline_data import OfflineDataset, episodes_to_dataset, space_metadata
from tandem.lm_inside_agents.ppo import AgentPPOConfig, MLPActorCritic, train_ppo

BEHAVIOUR_POLICIES = ("random", "medium", "expert")

# PPO settings that train a good behaviour policy within the default step budget (CleanRL / RL-zoo values).
PPO_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(num_steps=128, lr=2.5e-4, gamma=0.99, update_epochs=4, num_minibatches=4, ent_coef=0.01),
    "Acrobot-v1": dict(num_steps=128, lr=2.5e-4, gamma=0.99, update_epochs=4, num_minibatches=4, ent_coef=0.0),
    "Pendulum-v1": dict(num_steps=1024, lr=1e-3, gamma=0.9, update_epochs=10, num_minibatches=32, ent_coef=0.0),
}



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


# ---- the `tandem collect` run ---------------------------------------------------------------------------


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
    envs = vector_env_by_id(config.env_id, config.num_envs, config.vectorization)
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
