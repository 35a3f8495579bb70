"""The run behind `tandem dt`: a Decision Transformer (Chen et al. 2021) against behaviour cloning on an offline dataset.

`tandem dt` with no options collects a CartPole-v1 random / medium / expert mixture into OUT/data, trains a
Decision Transformer and a behaviour-cloning twin (the same network without returns), evaluates the DT at
several target returns, and writes OUT/metrics.json and OUT/returns.png (achieved return against target).
Scores are D4RL-normalised: 100 (R - R_random) / (R_best_behaviour - R_random). With `--model` both networks'
transformers start from a pretrained causal LM's decoder layers (Reid et al. 2022, "Can Wikipedia help offline
reinforcement learning?"; `pretrained_decision_transformer`), all of them or, with `--model-layers N`, the first N.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.lm_inside_agents.decision_transformer import (
    DecisionTransformer,
    evaluate_decision_transformer,
    pretrained_decision_transformer,
    shape_for,
    train_decision_transformer,
)
from tandem.lm_inside_agents.episodes import make_env_by_id, random_episode_actor
from tandem.lm_inside_agents.evaluation import play_episodes
from tandem.lm_inside_agents.offline_collect import CollectConfig, collect_offline_dataset
from tandem.lm_inside_agents.offline_data import OfflineDataset, load_offline_dataset, normalised_score
from tandem.config import InputPath, apply_model_defaults, save_config
from tandem.files import atomic_write_text
from tandem.models.origin import model_origin
from tandem.plotting import headless_pyplot

AUTO_TARGET_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)


class DTConfig(BaseModel):
    """Options of `tandem dt`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    out: Path = Field(Path("runs/dt"), description="Run directory: metrics.json, returns.png, models, config.")
    data: InputPath | None = Field(None, description="Offline dataset directory (from `tandem collect`); none: collect one.")
    env_id: str = Field("CartPole-v1", description="Environment to collect for when --data is not given.")
    episodes: int = Field(300, ge=1, description="Episodes to collect when --data is not given.")
    mix: str = Field("random=1,medium=1,expert=1", description="Behaviour mixture to collect when --data is not given.")
    ppo_steps: int = Field(100_000, ge=1, description="PPO steps for the behaviour policies when collecting.")
    model: Path | None = Field(None, description="Pretrained causal LM whose decoder layers become the transformer (Reid et al. 2022): a model directory, a .gguf file or a LoRA adapter folder (merged); --hidden, --layers and --heads then come from it.")
    model_layers: int | None = Field(None, ge=1, description="With --model: keep only the first N decoder layers of the checkpoint (and its final norm); none: all of them.")
    context: int = Field(20, ge=1, description="K: steps of (return-to-go, state, action) the transformer reads.")
    hidden: int = Field(64, ge=8, description="Width of the token embeddings and the transformer (without --model).")
    layers: int = Field(3, ge=1, description="Transformer layers (without --model).")
    heads: int = Field(1, ge=1, description="Attention heads (must divide --hidden; without --model).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in the transformer (without --model: a pretrained one keeps its own).")
    steps: int = Field(1500, ge=1, description="Training steps of each model.")
    batch_size: int = Field(64, ge=1, description="Windows per training step.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up, cosine decay; a pretrained --model: 1e-4).")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    return_scale: float | None = Field(None, gt=0, description="Divide returns-to-go by this (none: max |episode return|).")
    targets: str = Field("auto", description="Comma-separated target returns, or 'auto' (spread over the data's returns).")
    eval_episodes: int = Field(10, ge=1, description="Evaluation episodes per target return (and for BC).")
    num_envs: int = Field(8, ge=1, description="Vector environments for collection and evaluation.")
    vectorization: Literal["sync", "async"] = Field("sync", description="Gymnasium vector env kind when collecting.")
    bc: bool = Field(True, description="Also train and evaluate the behaviour-cloning baseline.")
    seed: int = Field(0, description="Seed for collection, initialisation, batches and evaluation.")
    progress: bool = Field(True, description="Show progress bars.")

    # pretrained layers are already trained: a smaller step moves them less far from the checkpoint
    pretrained_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4}

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> DTConfig:
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        return self

    @model_validator(mode="after")
    def _model_layers_need_a_model(self) -> DTConfig:
        if self.model_layers is not None and self.model is None:
            raise ValueError("--model-layers keeps layers of a pretrained --model; give --model too")
        return self


def target_returns(text: str, dataset: OfflineDataset) -> list[float]:
    """'auto': from the lowest to 1.25x past the highest episode return in the data; else the listed numbers."""
    if text.strip() == "auto":
        returns = dataset.episode_returns()
        low, high = float(returns.min()), float(returns.max())
        return [low + f * (high - low) for f in AUTO_TARGET_FRACTIONS]
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--targets {text!r}: expected 'auto' or comma-separated numbers") from None


def _random_return(dataset: OfflineDataset, config: DTConfig) -> float:
    returns = dataset.policy_returns()
    if "random" in returns:
        return returns["random"]
    envs = [make_env_by_id(dataset.metadata["env_id"]) for _ in range(min(config.num_envs, config.eval_episodes))]
    try:
        outcomes = play_episodes(envs, random_episode_actor(envs[0], config.seed), config.eval_episodes,
                                 reset_seed=lambda k: config.seed + k)
    finally:
        for env in envs:
            env.close()
    return float(np.mean([o.ret for o in outcomes]))


def new_model(config: DTConfig, dataset: OfflineDataset, condition_on_return: bool = True, **sizes) -> DecisionTransformer:
    """The untrained DT (or its behaviour-cloning twin), seeded: its own transformer, or `config.model`'s layers."""
    torch.manual_seed(config.seed)
    shape = shape_for(dataset, condition_on_return=condition_on_return, **sizes)
    if config.model is None:
        return DecisionTransformer(shape)
    return pretrained_decision_transformer(shape, config.model, layers=config.model_layers)


def run_dt(config: DTConfig) -> dict:
    """Train and evaluate a Decision Transformer (and BC) on an offline dataset; returns the metrics."""
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.model is not None and (changed := apply_model_defaults(config, model_origin(config.model))):
        print(f"[tandem] pretrained model {config.model}: {changed} (set them to override)", flush=True)
    save_config(config, out / "config.yaml")
    if config.data is not None:
        dataset = load_offline_dataset(config.data)
    else:
        dataset = collect_offline_dataset(CollectConfig(
            out=out / "data", env_id=config.env_id, episodes=config.episodes, mix=config.mix, num_envs=config.num_envs,
            vectorization=config.vectorization, ppo_steps=config.ppo_steps, seed=config.seed, progress=config.progress,
        ))
    env_id = dataset.metadata["env_id"]
    sizes = dict(context=config.context, hidden=config.hidden, layers=config.layers, heads=config.heads,
                 dropout=config.dropout)
    if config.return_scale is not None:
        sizes["return_scale"] = config.return_scale
    train = dict(steps=config.steps, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
                 seed=config.seed, progress=config.progress)
    evaluate = dict(episodes=config.eval_episodes, num_envs=config.num_envs, seed=config.seed + 10_000)

    dt = new_model(config, dataset, **sizes)
    dt_losses = train_decision_transformer(dt, dataset, **train)
    dt.save(out / "model")
    targets = target_returns(config.targets, dataset)
    per_target = []
    for target in targets:
        returns = evaluate_decision_transformer(dt, env_id, target, **evaluate)
        per_target.append({"target": target, "mean_return": float(returns.mean()), "std_return": float(returns.std())})

    behaviour = dataset.policy_returns()
    random_return, best_return = _random_return(dataset, config), max(behaviour.values())
    metrics: dict = {
        "env_id": env_id,
        "dataset": {"episodes": len(dataset.episode_bounds()), "transitions": len(dataset),
                    "behaviour_returns": behaviour, "max_episode_return": float(dataset.episode_returns().max())},
        "random_return": random_return,
        "best_behaviour_return": best_return,
        "dt": {"final_loss": float(np.mean(dt_losses[-50:])), "targets": per_target},
    }
    for row in per_target:
        row["normalised"] = normalised_score(row["mean_return"], random_return, best_return)
    # The headline DT number: conditioned on the best return seen in the data.
    headline = min(per_target, key=lambda row: abs(row["target"] - metrics["dataset"]["max_episode_return"]))
    metrics["dt"].update(target=headline["target"], mean_return=headline["mean_return"], normalised=headline["normalised"])
    if config.bc:
        bc = new_model(config, dataset, condition_on_return=False, **sizes)
        bc_losses = train_decision_transformer(bc, dataset, **train)
        bc.save(out / "model", name="behaviour_cloning")
        bc_returns = evaluate_decision_transformer(bc, env_id, 0.0, **evaluate)
        metrics["bc"] = {"final_loss": float(np.mean(bc_losses[-50:])), "mean_return": float(bc_returns.mean()),
                         "std_return": float(bc_returns.std()),
                         "normalised": normalised_score(float(bc_returns.mean()), random_return, best_return)}
    metrics["behaviour_normalised"] = {name: normalised_score(r, random_return, best_return) for name, r in behaviour.items()}
    metrics["seconds"] = time.perf_counter() - started
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    plot_achieved_vs_target(metrics, out / "returns.png")
    return metrics


def plot_achieved_vs_target(metrics: dict, path: Path, title: str | None = None) -> None:
    """Achieved return (mean +- std) against the target return, with y = x, BC and the behaviour policies."""
    plt = headless_pyplot()
    rows = metrics["dt"]["targets"]
    targets = [row["target"] for row in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(targets, [row["mean_return"] for row in rows], yerr=[row["std_return"] for row in rows],
                marker="o", capsize=3, label="Decision Transformer")
    ax.plot(targets, targets, "k:", label="achieved = target")
    colours = iter(["tab:red", "tab:orange", "tab:green", "tab:purple"])
    for name, value in metrics["dataset"]["behaviour_returns"].items():
        ax.axhline(value, linestyle="--", color=next(colours, "grey"), alpha=0.7, label=f"behaviour: {name}")
    if "bc" in metrics:
        ax.axhline(metrics["bc"]["mean_return"], color="tab:brown", label="behaviour cloning")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(title or f"{metrics['env_id']}: return-conditioned control")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
