"""Train a reward model on a list of pairs with `tandem rm` and measure its accuracy on held-out gold pairs.

The synthetic-preference and transfer studies compare reward models that differ only in their training
pairs or their starting weights, so both go through this one path: the real Bradley-Terry trainer
(`tandem.trainers.rm.run_rm`) on JSONL files it validates like any user's data.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from transformers import set_seed

from tandem.files import write_jsonl
from tandem.models.loading import load_reward_model, load_tokenizer
from tandem.rewards.model import RewardModelScorer
from tandem.trainers.rm import RMConfig, run_rm


def pair_accuracy(scorer: RewardModelScorer, pairs: list[dict]) -> float:
    """Share of pairs whose chosen response the reward model scores above the rejected one."""
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer(prompts, [p["chosen"] for p in pairs])
    rejected = scorer(prompts, [p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / max(len(pairs), 1)


def untrained_accuracy(model: Path, pairs: list[dict], seed: int) -> float:
    """Accuracy of `model` as `tandem rm` would start from it: a causal LM gets a fresh (seeded) scalar head."""
    set_seed(seed)
    return pair_accuracy(RewardModelScorer(load_reward_model(model), load_tokenizer(model)), pairs)


def rm_steps(n_pairs: int, batch_size: int, epochs: float, min_steps: int) -> int:
    """Optimizer steps for `epochs` passes over `n_pairs`, at least `min_steps` (tiny label sets need several passes)."""
    return max(min_steps, math.ceil(epochs * n_pairs / batch_size))


def train_and_score(
    model: Path,
    train_pairs: list[dict],
    test_pairs: list[dict],
    out: Path,
    *,
    seed: int,
    batch_size: int = 16,
    epochs: float = 4.0,
    min_steps: int = 20,
    lr: float = 2e-4,
    mixed_precision: str = "auto",
    keep_model: bool = False,
) -> dict:
    """Train a reward model from `model` on `train_pairs`; its accuracy on `test_pairs` and what the run used."""
    batch_size = min(batch_size, len(train_pairs))
    if batch_size < 1:
        raise ValueError("no training pairs")
    shutil.rmtree(out / "run", ignore_errors=True)  # each measurement is a fresh run
    config = RMConfig(
        model=model, out=out / "run", data=write_jsonl(out / "train.jsonl", train_pairs),
        eval_data=write_jsonl(out / "test.jsonl", test_pairs), seed=seed, batch_size=batch_size,
        micro_batch_size=batch_size, max_steps=rm_steps(len(train_pairs), batch_size, epochs, min_steps), lr=lr,
        mixed_precision=mixed_precision, progress=False,
    )
    result = run_rm(config)
    if not keep_model:
        shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "run" / "model", ignore_errors=True)
    return {"accuracy": result.metrics["eval/accuracy"], "pairs": len(train_pairs), "steps": result.steps,
            "seconds": result.seconds}
