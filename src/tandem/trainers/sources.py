"""Where a trainer's examples come from: a user's file, or a built-in task's generator; and what every
fine-tuning command settles before it trains (`prepare_finetune`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import set_seed

from tandem.data import load_examples
from tandem.models.loading import load_tokenizer
from tandem.tasks import get_task
from tandem.trainers.setup import RunSetup, prepare_run

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


@dataclass
class Finetune:
    """A fine-tuning run's tokenizer, setup (chat rendering, pretrained defaults) and built-in task (None with --data)."""

    config: Any  # a FinetuneSourceConfig or SFT/RM/DPO config: data, eval_data, task, n_train, n_eval, ...
    tokenizer: Any
    setup: RunSetup
    task: Any

    def examples(self, kind: str, **overrides) -> tuple[list[dict], list[dict]]:
        """`train_eval_examples(kind)` with the config's sources and sizes (`overrides` replace any of them)."""
        config = self.config
        options = dict(
            data=config.data, eval_data=config.eval_data, task_name=config.task, n_train=config.n_train,
            n_eval=config.n_eval, eval_fraction=config.eval_fraction, seed=config.seed, tokenizer=self.tokenizer,
            max_length=config.max_length, label_noise=getattr(config, "label_noise", 0.0),
            **self.setup.load_options(config),
        )
        return train_eval_examples(kind, **{**options, **overrides})

    def evaluation(self) -> dict[str, Any]:
        """A generative trainer's evaluation options: the task, its held-out prompts rendered for the model, length."""
        return {"task": self.task, "eval_prompts": self.setup.eval_prompts(self.task, self.config, self.tokenizer),
                "eval_max_new_tokens": self.setup.eval_max_new_tokens(self.task)}


def prepare_finetune(config) -> Finetune:
    """Seed, tokenizer, run setup and task: the preamble of every fine-tuning command (SFT, RM, DPO, KTO).

    The seed comes first, so new weights (a fresh reward head, LoRA) are initialised reproducibly.
    """
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    setup = prepare_run(config, tokenizer)
    return Finetune(config, tokenizer, setup, get_task(config.task) if config.data is None else None)
