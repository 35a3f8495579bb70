"""Where a trainer's examples come from: a user's file, or a built-in task's generator."""

from __future__ import annotations

import random
from pathlib import Path

from tandem.data import load_examples
from tandem.tasks import get_task

# What each kind of trainer needs from a built-in task.
TASK_GENERATORS = {
    "text": lambda task, n, seed: [{"text": t} for t in task.pretrain_corpus(n, seed=seed)],
    "sft": lambda task, n, seed: task.sft_examples(n, seed=seed),
    "preference": lambda task, n, seed: task.preference_pairs(n, seed=seed),
}
EXPECTED_FORMATS = {"text": "text", "sft": {"prompt_completion", "messages"}, "preference": "preference"}


def train_eval_examples(
    kind: str,
    *,
    data: Path | None,
    eval_data: Path | None,
    task_name: str,
    n_train: int,
    n_eval: int,
    eval_fraction: float,
    seed: int,
    tokenizer,
    max_length: int | None,
    label_noise: float = 0.0,
) -> tuple[list[dict], list[dict]]:
    """Validated (train, eval) records of `kind`, every record checked before training starts."""
    expected = EXPECTED_FORMATS[kind]
    if data is None:
        task = get_task(task_name)
        if kind == "preference":
            train_rows = task.preference_pairs(n_train, seed=seed, label_noise=label_noise)
        else:
            train_rows = TASK_GENERATORS[kind](task, n_train, seed)
        eval_rows = TASK_GENERATORS[kind](task, n_eval, seed + 10_000) if n_eval else []
        train = load_examples(train_rows, expected, tokenizer, max_length=max_length)
        return train, load_examples(eval_rows, expected, tokenizer, max_length=max_length)
    train = load_examples(data, expected, tokenizer, max_length=max_length)
    if eval_data is not None:
        return train, load_examples(eval_data, expected, tokenizer, max_length=max_length)
    n_held_out = int(len(train) * eval_fraction)
    rows = train[:]
    random.Random(seed).shuffle(rows)
    return rows[n_held_out:], rows[:n_held_out]
