"""The run behind `tandem world-model`: collect text transitions, train a tiny LM world model (or fine-tune a
pretrained one, `--model`), measure it, then plan and learn Dyna-style in it (Hao et al. 2023; Dyna, Sutton 1990).
Writes `metrics.json` and `world_model.png`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, field_validator

from tandem.lm_inside_agents.experiments.reports import write_json
from tandem.lm_inside_agents.planning import EnvModel, plan_episode, q_learning
from tandem.lm_inside_agents.render import action_names
from tandem.lm_inside_agents.world_model import (
    WorldModelTrainConfig,
    collect_transitions,
    evaluate_world_model,
    frozen_lake_maps,
    map_env_factory,
    split_transitions,
    train_world_model,
)
from tandem.generation.engines import EngineOptions
from tandem.plotting import headless_pyplot


class WorldModelConfig(WorldModelTrainConfig, EngineOptions):
    """Collect text transitions, train a tiny LM world model or fine-tune `--model`, measure it, then plan and learn
    (Dyna) in it."""

    env: str = Field("FrozenLake-v1", description="Gymnasium toy-text env: FrozenLake-v1 (deterministic) or Taxi-v4.")
    map_size: int = Field(4, ge=3, le=12, description="FrozenLake: side of the random maps.")
    n_maps: int = Field(40, ge=1, description="FrozenLake: distinct random maps the transitions come from.")
    episodes: int = Field(400, ge=1, description="Uniformly random episodes collected for transitions.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of distinct transitions held out.")
    planner: Literal["tree", "shooting"] = Field("tree", description="Planner: breadth-limited tree search or random-shooting MPC.")
    horizon: int = Field(8, ge=1, description="Planning horizon in steps.")
    n_sequences: int = Field(64, ge=1, description="Random-shooting: action sequences per decision.")
    plan_episodes: int = Field(20, ge=0, description="Real episodes acted by planning in each model (true simulator, LM).")
    dyna_real_steps: int = Field(2000, ge=0, description="Real steps of Q-learning / Dyna per seed (0: skip Dyna).")
    dyna_planning_steps: int = Field(10, ge=1, description="Imagined updates per real step in Dyna.")
    dyna_seeds: int = Field(3, ge=1, description="Seeds of the Dyna vs Q-learning comparison.")

    @field_validator("env")
    @classmethod
    def _toy_text(cls, value: str) -> str:
        # planning on the true simulator resets a toy-text env to any state (EnvModel)
        if not (value.startswith("FrozenLake") or value.startswith("Taxi")) or value not in gym.registry:
            raise ValueError(f"{value!r}: the world-model command runs on a registered FrozenLake or Taxi version")
        return value


def _plan_comparison(config: WorldModelConfig, make_env, world_model) -> dict:
    options = {"horizon": config.horizon}
    if config.planner == "shooting":
        options["n_sequences"] = config.n_sequences
    results = {"true_simulator": [], "lm_world_model": []}
    for episode in range(config.plan_episodes):
        env = make_env(episode)  # the maps the transitions came from, including their held-out transitions
        for name, model in (("true_simulator", EnvModel(env)), ("lm_world_model", world_model)):
            outcome = plan_episode(env, model, config.planner, seed=config.seed + episode, **options)
            results[name].append(outcome)
        env.close()
    return {
        name: {"success_rate": float(np.mean([r.success for r in rows])), "mean_return": float(np.mean([r.ret for r in rows])),
               "mean_steps": float(np.mean([r.steps for r in rows]))}
        for name, rows in results.items()
    }


def _dyna_comparison(config: WorldModelConfig, make_env, world_model) -> dict:
    env = make_env(0)
    models = {"q_learning": None, "dyna_true_model": EnvModel(env), "dyna_lm_world_model": world_model}
    out = {}
    for name, model in models.items():
        runs = [q_learning(lambda: make_env(0), config.dyna_real_steps, model, config.dyna_planning_steps if model else 0,
                           seed=config.seed + s, eval_every=20, eval_episodes=1, progress=config.progress)
                for s in range(config.dyna_seeds)]
        solved = [r.steps_to_solve for r in runs]
        out[name] = {
            "steps_to_solve": solved,
            # unsolved seeds count as the whole budget, so the mean is a lower bound when any is None
            "mean_steps_to_solve": float(np.mean([s if s is not None else config.dyna_real_steps for s in solved])),
            "solved_fraction": float(np.mean([s is not None for s in solved])),
            "curve_steps": runs[0].real_steps,
            "curve_success": [float(np.mean(v)) for v in zip(*(r.success for r in runs))],
            "invalid_predictions": int(sum(r.invalid_predictions for r in runs)),
        }
    env.close()
    return out


def run_world_model(config: WorldModelConfig) -> dict:
    """The whole `tandem world-model` run; returns the report written to `out/metrics.json`."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    maps = frozen_lake_maps(config.n_maps, config.map_size, config.seed) if config.env.startswith("FrozenLake") else None
    make_env = map_env_factory(config.env, maps)
    counts: dict = {}
    transitions = collect_transitions(make_env, config.episodes, seed=config.seed, progress=config.progress, counts=counts)
    train, held_out = split_transitions(transitions, config.eval_fraction, config.seed)
    world_model, sft_metrics = train_world_model(config, train, held_out, action_names(make_env(0)), config.engine)
    report: dict = {
        "env": config.env, "model": str(config.model) if config.model else "tiny, from scratch",
        "n_transitions": len(transitions), "real_steps": counts.get("steps", 0), "n_train": len(train), "n_held_out": len(held_out),
        "sft": sft_metrics,
        "held_out": evaluate_world_model(world_model, held_out),
        "train_sample": evaluate_world_model(world_model, train[: len(held_out)]),
    }
    if config.plan_episodes:
        report["planning"] = {"planner": config.planner, "horizon": config.horizon,
                              **_plan_comparison(config, make_env, world_model)}
    if config.dyna_real_steps:
        report["dyna"] = _dyna_comparison(config, make_env, world_model)
    report["lm_queries"], report["lm_parse_errors"] = world_model.n_queries, world_model.n_parse_errors
    report["seconds"] = time.perf_counter() - started
    write_json(Path(config.out) / "metrics.json", report)
    plot_world_model(report, Path(config.out) / "world_model.png")
    return report


def plot_world_model(report: dict, path: Path) -> None:
    plt = headless_pyplot()
    panels = 1 + ("planning" in report) + ("dyna" in report)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6))
    axes = np.atleast_1d(axes)
    held = report["held_out"]
    names = ["next state", "reward", "done", "copy-state\nbaseline"]
    axes[0].bar(names, [held["next_state_accuracy"], held["reward_accuracy"], held["done_accuracy"], held["copy_state_baseline"]],
                color=["C0", "C0", "C0", "grey"])
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"held-out exact match ({int(held['n_transitions'])} transitions)")
    k = 1
    if "planning" in report:
        plan = report["planning"]
        axes[k].bar(["true simulator", "LM world model"], [plan["true_simulator"]["success_rate"], plan["lm_world_model"]["success_rate"]])
        axes[k].set_ylim(0, 1.05)
        axes[k].set_title(f"{plan['planner']} planning (H={plan['horizon']}): success")
        k += 1
    if "dyna" in report:
        for name, row in report["dyna"].items():
            axes[k].plot(row["curve_steps"], row["curve_success"], label=name)
        axes[k].set_xlabel("real environment steps")
        axes[k].set_ylabel("greedy success (mean over seeds)")
        axes[k].legend(fontsize=8)
        axes[k].set_title("Dyna vs Q-learning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
