"""Where a trainer's examples come from: a user's file, or a built-in task's generator."""

from __future__ import annotations

import random
from pathlib import Path

from tandem.data import load_examples
from tandem.tasks import get_task

# What each kind of trainer needs from a built-in task. Held-out preference pairs use held-out prompts.
TASK_GENERATORS = {
    "text": lambda task, n, seed, noise: [{"text": t} for t in task.pretrain_corpus(n, seed=seed)],
    "sft": lambda task, n, seed, noise: task.sft_examples(n, seed=seed),
    "preference": lambda task, n, seed, noise: task.preference_pairs(n, seed=seed, label_noise=noise),
    "held_out_preference": lambda task, n, seed, noise: task.preference_pairs(n, seed=seed, held_out=True),
    "unpaired": lambda task, n, seed, noise: task.unpaired_examples(n, seed=seed),
}
EXPECTED_FORMATS = {
    "text": "text", "sft": {"prompt_completion", "messages"}, "preference": "preference", "unpaired": "unpaired",
}


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
    **load_options,
) -> tuple[list[dict], list[dict]]:
    """Validated (train, eval) records of `kind`, every record checked before training starts.

    `load_options` go to `load_examples` (chat rendering, prompt-length policy: see `RunSetup.load_options`).
    """
    expected = EXPECTED_FORMATS[kind]
    if data is None:
        task = get_task(task_name)
        train_rows = TASK_GENERATORS[kind](task, n_train, seed, label_noise)
        eval_kind = "held_out_preference" if kind == "preference" else kind
        # evaluation pairs carry gold labels without noise: accuracy is measured against the truth
        eval_rows = TASK_GENERATORS[eval_kind](task, n_eval, seed + 10_000, 0.0) if n_eval else []
        train = load_examples(train_rows, expected, tokenizer, max_length=max_length, **load_options)
        # the user's held-out file, when given, is the evaluation set even for a task's training data
        return train, load_examples(eval_data if eval_data is not None else eval_rows, expected, tokenizer,
                                    max_length=max_length, **load_options)
    train = load_examples(data, expected, tokenizer, max_length=max_length, **load_options)
    if eval_data is not None:
        return train, load_examples(eval_data, expected, tokenizer, max_length=max_length, **load_options)
    n_held_out = int(len(train) * eval_fraction)
    rows = train[:]
    random.Random(seed).shuffle(rows)
    return rows[n_held_out:], rows[:n_held_out]
