"""The run behind `tandem babyai`: a language-conditioned policy pi(a | s, mission) on a BabyAI level by imitation
of BabyAIBot and/or PPO (Chevalier-Boisvert et al. 2019), measured on held-out missions. Writes `metrics.json`,
plots and the policy weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.lm_inside_agents.experiments.reports import write_json
from tandem.lm_inside_agents.language_conditioned import (
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
from tandem.lm_inside_agents.ppo import AgentPPOConfig
from tandem.plotting import headless_pyplot


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
    """The whole `tandem babyai` run; returns the report written to `out/metrics.json`."""
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
    write_json(out / "metrics.json", report)
    _plot_success_bars(report, out / "babyai_success.png")
    return report


def _plot_ppo_curve(successes: list[bool], config: BabyAIConfig, path: Path) -> None:
    plt = headless_pyplot()
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
    plt = headless_pyplot()
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
