"""`tandem world-model` (an LM world model and planning in it, Hao et al. 2023; Dyna, Sutton 1990) and `tandem babyai`
(language-conditioned policies, Chevalier-Boisvert et al. 2019): runs that measure, write JSON and plots.

`register(add_command)` adds both to the CLI (`tandem.cli.COMMAND_MODULES`); `run_world_model` and `run_babyai`
are the same runs from Python.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.agents.language_conditioned import (
    BABYAI_PAPER_PPO_KILO_EPISODES,
    FiLMPolicy,
    collect_demonstrations,
    episodes_to_success,
    make_task_env,
    parse_pairs,
    success_rate,
    train_imitation,
    train_ppo_language,
)
from tandem.agents.planning import EnvModel, plan_episode, q_learning
from tandem.agents.ppo import AgentPPOConfig
from tandem.agents.render import action_names
from tandem.agents.world_model import (
    WorldModelTrainConfig,
    collect_transitions,
    evaluate_world_model,
    frozen_lake_maps,
    make_env_factory,
    split_transitions,
    train_world_model,
)
from tandem.files import atomic_write_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")


# ---- tandem world-model -------------------------------------------------------------------------------------
class WorldModelConfig(WorldModelTrainConfig):
    """Collect text transitions, train a tiny LM world model, measure it, then plan and learn (Dyna) in it."""

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
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    maps = frozen_lake_maps(config.n_maps, config.map_size, config.seed) if config.env.startswith("FrozenLake") else None
    make_env = make_env_factory(config.env, maps)
    counts: dict = {}
    transitions = collect_transitions(make_env, config.episodes, seed=config.seed, progress=config.progress, counts=counts)
    train, held_out = split_transitions(transitions, config.eval_fraction, config.seed)
    world_model, sft_metrics = train_world_model(config, train, held_out, action_names(make_env(0)))
    report: dict = {
        "env": config.env, "n_transitions": len(transitions), "real_steps": counts.get("steps", 0), "n_train": len(train), "n_held_out": len(held_out),
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
    _write_json(Path(config.out) / "metrics.json", report)
    plot_world_model(report, Path(config.out) / "world_model.png")
    return report


def plot_world_model(report: dict, path: Path) -> None:
    plt = _pyplot()
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


# ---- tandem babyai ------------------------------------------------------------------------------------------
class BabyAIConfig(BaseModel):
    """pi(a | s, mission) on a BabyAI level by imitation of BabyAIBot and/or PPO; success on held-out missions."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/babyai"), description="Run directory: metrics.json, curve PNG, policy weights.")
    env: str = Field("BabyAI-GoToLocal-v0", description="BabyAI level id (any registered BabyAI-* env).")
    held_out: str = Field("red box,green key,blue ball", description="Comma-separated '<colour> <object>' missions never trained on (empty: none, e.g. single-mission levels).")
    method: Literal["imitation", "ppo", "both"] = Field("imitation", description="Train by imitation, PPO, or each (two policies).")
    navigation_only: bool = Field(True, description="Only left/right/forward (enough for GoTo levels; the BabyAI paper used all 7).")
    demos: int = Field(1000, ge=1, description="BabyAIBot episodes to imitate.")
    imitation_epochs: int = Field(10, ge=1, description="Passes over the demonstrations.")
    imitation_lr: float = Field(1e-3, gt=0, description="Adam learning rate for imitation.")
    ppo_steps: int = Field(100_000, ge=1, description="PPO environment steps (all envs together).")
    num_envs: int = Field(16, ge=1, description="PPO: synchronous vector envs.")
    num_steps: int = Field(64, ge=1, description="PPO: rollout length per env.")
    ppo_lr: float = Field(5e-4, gt=0, description="PPO: Adam learning rate.")
    eval_episodes: int = Field(200, ge=1, description="Episodes for each success-rate measurement.")
    success_window: int = Field(200, ge=1, description="Training episodes in the running success rate behind episodes-to-success.")
    seed: int = Field(0, description="Seed for missions, demonstrations, initialisation and PPO.")
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("held_out")
    @classmethod
    def _pairs(cls, value: str) -> str:
        parse_pairs(value)  # a ValueError naming the bad item becomes an invalid-option message
        return value


def run_babyai(config: BabyAIConfig) -> dict:
    started = time.perf_counter()
    held_out = parse_pairs(config.held_out)

    def env_fn(split: str):
        return lambda: make_task_env(config.env, held_out, split, navigation_only=config.navigation_only)

    probe = env_fn("train")()
    n_actions, vocab_size = int(probe.action_space.n), len(probe.vocab)

    def evaluate(policy) -> dict:
        """Success on training missions and, when some are held out, on held-out ones (other seeds)."""
        return {"train_missions": success_rate(policy, env_fn("train"), config.eval_episodes, seed=config.seed + 1),
                "held_out_missions": success_rate(policy, env_fn("held_out"), config.eval_episodes, seed=config.seed + 2)
                if held_out else None}

    report: dict = {"env": config.env, "held_out": sorted(" ".join(p) for p in held_out), "n_actions": n_actions,
                    "random_policy": evaluate(None)}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.method in ("imitation", "both"):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed)
        policy = FiLMPolicy(n_actions, vocab_size)
        demos = collect_demonstrations(probe, config.demos, seed=config.seed, progress=config.progress)
        losses = train_imitation(policy, demos, config.imitation_epochs, lr=config.imitation_lr, seed=config.seed,
                                 progress=config.progress)
        report["imitation"] = {
            "demo_episodes": demos.episodes, "demo_steps": len(demos), "loss_per_epoch": losses,
            **evaluate(policy), "seconds": time.perf_counter() - t0,
        }
        torch.save(policy.state_dict(), out / "imitation_policy.pt")
    if config.method in ("ppo", "both"):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed)
        policy = FiLMPolicy(n_actions, vocab_size)
        ppo_config = AgentPPOConfig(total_steps=config.ppo_steps, num_steps=config.num_steps, lr=config.ppo_lr,
                                    gae_lambda=0.99, update_epochs=4, num_minibatches=4, seed=config.seed,
                                    progress=config.progress)
        history = train_ppo_language(policy, env_fn("train"), ppo_config, num_envs=config.num_envs)
        successes = [ret > 0 for _, ret, _ in history.episodes]  # BabyAI pays 1 - 0.9 t / T only on success
        seconds = time.perf_counter() - t0
        paper = BABYAI_PAPER_PPO_KILO_EPISODES.get(config.env)
        report["ppo"] = {
            "env_steps": history.records[-1]["env_steps"] if history.records else 0,
            "episodes": len(successes),
            "final_running_success": float(np.mean(successes[-config.success_window:])) if successes else float("nan"),
            "episodes_to_90": episodes_to_success(successes, 0.9, config.success_window),
            "episodes_to_99": episodes_to_success(successes, 0.99, config.success_window),
            "paper_kilo_episodes_to_99": paper,
            **evaluate(policy),
            "env_steps_per_s": (history.records[-1]["env_steps"] / seconds) if history.records else 0.0,
            "seconds": seconds,
        }
        torch.save(policy.state_dict(), out / "ppo_policy.pt")
        _plot_ppo_curve(successes, config, out / "babyai_ppo_curve.png")
    report["seconds"] = time.perf_counter() - started
    _write_json(out / "metrics.json", report)
    _plot_success_bars(report, out / "babyai_success.png")
    return report


def _plot_ppo_curve(successes: list[bool], config: BabyAIConfig, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if len(successes) >= config.success_window:
        running = np.convolve(np.asarray(successes, float), np.ones(config.success_window), "valid") / config.success_window
        ax.plot(np.arange(config.success_window, len(successes) + 1), running, label="PPO (running success)")
    paper = BABYAI_PAPER_PPO_KILO_EPISODES.get(config.env)
    if paper:
        ax.axvline(paper[0] * 1000, color="grey", linestyle="--", label=f"BabyAI paper: 99% at {paper[0]:g}k-{paper[1]:g}k episodes")
    ax.set_xlabel("training episodes")
    ax.set_ylabel(f"success (last {config.success_window} episodes)")
    ax.set_ylim(0, 1.02)
    ax.set_title(config.env)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_success_bars(report: dict, path: Path) -> None:
    plt = _pyplot()
    methods = [m for m in ("random_policy", "imitation", "ppo") if m in report]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    width = 0.38
    x = np.arange(len(methods))
    for offset, split in ((-width / 2, "train_missions"), (width / 2, "held_out_missions")):
        rates = [report[m][split]["success_rate"] if report[m][split] else 0.0 for m in methods]
        ax.bar(x + offset, rates, width, label=split.replace("_", " "))
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(report["env"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(add_command) -> None:
    def show_world_model(config: WorldModelConfig) -> None:
        report = run_world_model(config)
        held = report["held_out"]
        print(f"held-out next-state exact match {held['next_state_accuracy']:.3f} "
              f"(copy-state baseline {held['copy_state_baseline']:.3f}); metrics in {config.out}/metrics.json")

    def show_babyai(config: BabyAIConfig) -> None:
        report = run_babyai(config)
        for method in ("random_policy", "imitation", "ppo"):
            if method in report:
                for split in ("train_missions", "held_out_missions"):
                    if report[method][split]:
                        print(f"{method}: {split.replace('_', ' ')} success {report[method][split]['success_rate']:.3f}")
        print(f"metrics in {config.out}/metrics.json")

    add_command("world-model", WorldModelConfig, show_world_model,
                "Train a tiny LM world model on text transitions, report held-out exact match, "
                "plan and run Dyna in it.")
    add_command("babyai", BabyAIConfig, show_babyai,
                "Language-conditioned BabyAI policy pi(a | s, l) by BabyAIBot imitation and/or PPO; "
                "held-out mission success.")
