"""What the feedback-RL commands share: the base models, RL with a reward object, held-out measurement, reports.

    pre, sft = base_models(out / "base", task="polite", preset="smoke")            # pretrain -> SFT (quickstart sizes)
    result = run_rl_with_reward(GRPOConfig(model=sft, task="polite"), "grpo", reward)   # any RewardSource object
    metrics = measure_policy(sft, "polite", n=128)   # gold reward, and helpfulness / violation rate where the task has them
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import fmean
from typing import Any

from tandem.generation.engines import RolloutEngine, as_engine
from tandem.presets import PRESETS as QUICKSTART_PRESETS
from tandem.tasks import get_task
from tandem import files
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer
from tandem.trainers.loop import TrainResult
from tandem.trainers.online import OnlineRLConfig, run_online
from tandem.trainers.ppo import PPOConfig, PPOTrainer
from tandem.trainers.sft import pretrain_then_sft

RL_TRAINERS = {"ppo": PPOTrainer, "grpo": GRPOTrainer}
RL_CONFIGS = {"ppo": PPOConfig, "grpo": GRPOConfig}  # the config of each, by the same name

# Base-model stages per preset: smoke is the quickstart's; default keeps the ~1M model (the CPU budget of
# these commands is minutes) but trains it longer, so it copies the asked item into its replies.
BASE_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {"pretrain": QUICKSTART_PRESETS["smoke"]["pretrain"], "sft": QUICKSTART_PRESETS["smoke"]["sft"]},
    "default": {"pretrain": {"size": "tiny", "n_documents": 8000, "max_steps": 400, "batch_size": 32, "max_length": 64},
                "sft": {"n_train": 3000, "max_steps": 200, "batch_size": 32, "n_eval": 64}},
}


def base_models(out: Path, task: str, preset: str, seed: int = 0, progress: bool = True,
                mixed_precision: str = "auto") -> tuple[Path, Path]:
    """Pre-train a tiny model on the task corpus and fine-tune it on demonstrations (`BASE_PRESETS[preset]`).

    Returns (pretrained model directory, SFT model directory); a finished stage found in `out` is reused.
    """
    return pretrain_then_sft(out, BASE_PRESETS[preset], task=task, seed=seed, progress=progress,
                             mixed_precision=mixed_precision)


def run_rl_with_reward(config: OnlineRLConfig, algorithm: str, reward, prompts: list[dict] | None = None) -> TrainResult:
    """PPO or GRPO (`algorithm`) on `config`, scored by the reward object `reward` (any `RewardSource`).

    `tandem ppo` / `tandem grpo` build their reward from a spec string; this takes a ready object (a
    `JudgeReward`, a verbal-feedback reward), and optionally the training prompts with extra columns.
    """
    if algorithm not in RL_TRAINERS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}; use {' or '.join(RL_TRAINERS)}")
    return run_online(config, RL_TRAINERS[algorithm], prompts=prompts, reward=reward)


def outcome_metrics(task, prompts: list[str], completions: list[str]) -> dict[str, float]:
    """Mean gold reward; for tasks that split it (polite), mean helpfulness and the rule-violation rate."""
    metrics = {"gold_reward": fmean(task.gold_reward(prompts, completions))}
    if hasattr(task, "gold_components"):
        parts = [task.gold_components(p, c) for p, c in zip(prompts, completions)]
        if parts and "violation" in parts[0]:
            metrics["helpfulness"] = fmean(part["helpfulness"] for part in parts)
            metrics["violation_rate"] = fmean(part["violation"] for part in parts)
    return metrics


def measure_policy(model_dir: Path, task: str, n: int, seed: int = 0, engine: str | RolloutEngine = "hf") -> dict[str, float]:
    """Sample one reply per held-out prompt (the task's evaluation temperature) and measure it against gold.

    `engine`: the generation engine's name, or an engine already made from `model_dir` (`tandem.generation.engines`).
    """
    task_object = get_task(task)
    prompts = [row["prompt"] for row in task_object.eval_prompts(n, seed=seed)]
    texts = as_engine(engine, model_dir).sample(prompts, max_new_tokens=task_object.max_new_tokens,
                                                temperature=task_object.eval_temperature, seed=seed).texts
    return outcome_metrics(task_object, prompts, texts)


class Stopwatch:
    """Seconds per named stage, for reports."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._started, 2)
        self._started = now
        return self.seconds[name]


def write_report(out: Path, report: dict[str, Any], title: str, tables: list[tuple[str, list[dict]]]) -> None:
    """report.json (everything) and report.md (a title and one Markdown table per (heading, rows))."""
    lines = [f"# {title}", ""]
    for heading, rows in tables:
        if not rows:
            continue
        keys = list(dict.fromkeys(key for row in rows for key in row))
        lines += [f"## {heading}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(key)) for key in keys) + " |")
        lines.append("")
    files.write_report(out, report, "\n".join(lines))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
