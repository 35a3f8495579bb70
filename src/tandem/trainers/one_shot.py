"""`tandem one-shot-rlvr`: RL with a verifiable reward on one training example (Wang et al. 2025).

Wang et al. 2025 ("Reinforcement Learning for Reasoning in Large Language Models with One Training
Example"): run RLVR on the full data once, keep each example's training accuracy per epoch, and pick
the example whose accuracy varied most across epochs (highest standard deviation: neither always solved
nor never). Then train GRPO on that single example, duplicated to fill every batch, with an entropy
bonus and a small k3 KL loss. Held-out accuracy is measured along the way; the paper's finding is that it
keeps improving after training accuracy on the one example has saturated ("post-saturation
generalisation"). `tandem grpo` writes the per-example log this needs (`example_rewards.jsonl`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from pydantic import Field
from transformers import set_seed

from tandem.config import InputPath
from tandem.data import DataError
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer
from tandem.trainers.online import run_online


def example_accuracy_history(run_dir: Path) -> dict[int, list[float]]:
    """Per training example (index into the run's prompts), its mean training reward in each epoch."""
    files = sorted(Path(run_dir).glob("example_rewards*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no example_rewards.jsonl: run `tandem grpo` on the full data first")
    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                record = json.loads(line)
                sums[(int(record["index"]), int(record["epoch"]))].append(float(record["reward"]))
            except (ValueError, KeyError, TypeError) as error:
                raise DataError(f"{path}:{number}: not an example-reward record ({error})") from None
    history: dict[int, dict[int, float]] = defaultdict(dict)
    for (index, epoch), rewards in sums.items():
        history[index][epoch] = sum(rewards) / len(rewards)
    return {index: [epochs[e] for e in sorted(epochs)] for index, epochs in history.items()}


def historical_variance_ranking(history: dict[int, list[float]]) -> list[tuple[int, float]]:
    """Examples by the standard deviation of their per-epoch accuracy, highest first (ties: lower index).

    An example seen in a single epoch has no spread to measure and ranks last.
    """

    def spread(values: list[float]) -> float:
        if len(values) < 2:
            return -1.0
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    return sorted(((index, spread(values)) for index, values in history.items()), key=lambda item: (-item[1], item[0]))


class OneShotConfig(GRPOConfig):
    out: Path = Field(Path("runs/one-shot"), description="Run directory.")
    history: InputPath | None = Field(None, description="Run directory of an earlier full-data `tandem grpo` run whose example_rewards.jsonl picks the examples.")
    n_examples: int = Field(1, ge=1, description="How many of the highest-variance examples to train on (1: one-shot RLVR).")
    examples: list[int] = Field(default_factory=list, description="Train on these prompt indices instead of picking by variance.")
    entropy_coef: float = Field(0.001, ge=0, description="Entropy bonus weight (the paper keeps one).")
    kl_coef: float = Field(0.001, ge=0, description="Weight of the k3 KL-to-reference loss (small, as in the paper).")
    kl_estimator: str = Field("k3", description="KL estimator of the loss term.")
    max_steps: int | None = Field(60, ge=1, description="Rollout steps to run.")
    eval_every: int = Field(10, ge=0, description="Evaluate held-out accuracy every N steps.")


def chosen_examples(config: OneShotConfig) -> list[int]:
    if config.examples:
        return list(config.examples)
    if config.history is None:
        raise ValueError("one-shot RLVR needs --history RUN (a full-data `tandem grpo` run) or --examples")
    ranking = historical_variance_ranking(example_accuracy_history(config.history))
    return [index for index, _ in ranking[: config.n_examples]]


class OneShotTrainer(GRPOTrainer):
    name = "one-shot"


def run_one_shot(config: OneShotConfig):
    """GRPO on the chosen examples, duplicated to fill every batch; the prompts are those of the history run."""
    from tandem.models.loading import load_tokenizer
    from tandem.tasks import get_task
    from tandem.trainers.online import load_prompts
    from tandem.trainers.setup import prepare_run

    set_seed(config.seed)
    picked = chosen_examples(config)
    task = get_task(config.task) if config.data is None or config.reward == "task" else None
    # the same prompt list the history run indexed (same task, data, n_prompts and seed)
    tokenizer = load_tokenizer(config.model)
    prompts = load_prompts(config, tokenizer, task, prepare_run(config, tokenizer))
    unknown = [i for i in picked if not 0 <= i < len(prompts)]
    if unknown:
        raise ValueError(f"example indices {unknown} are outside the {len(prompts)} training prompts")
    chosen = [prompts[i] for i in picked]
    copies = max(config.batch_size, math.ceil(config.n_prompts / len(chosen)))
    duplicated = [row for _ in range(copies) for row in chosen]
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "examples.json").write_text(json.dumps({"indices": picked, "prompts": chosen}, indent=2))
    return run_online(config, OneShotTrainer, prompts=duplicated)
