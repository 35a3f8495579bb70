"""What every fine-tuning command settles before it loads data: threads, defaults by model origin, chat rendering.

A pretrained checkpoint and one of tandem's from-scratch models need different handling (see
`tandem.models.origin`): this module decides once per run and hands the decision to data loading,
task prompts and evaluation, so every command treats a model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tandem.config import TrainConfig, apply_model_defaults
from tandem.models.origin import Origin, model_origin, use_chat_template


# A chat model answers in sentences, not in the task's terse demonstration format: give it room.
CHAT_EVAL_TOKENS = 128


def render_user_prompt(tokenizer, text: str) -> str:
    """A plain-text prompt as the user's turn of a chat, with the assistant's turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class RunSetup:
    origin: Origin
    chat: bool  # string prompts go through the chat template

    def load_options(self, config: TrainConfig) -> dict[str, Any]:
        """Keyword arguments for `tandem.data.load_examples`."""
        return {"chat": self.chat, "max_prompt_length": config.max_prompt_length, "on_long_prompt": config.on_long_prompt,
                "control_tokens": config.control_tokens}

    def prompt_rows(self, tokenizer, rows: list[dict]) -> list[dict]:
        """Task prompt rows ({"prompt", **columns}) rendered for the model (chat template when on)."""
        if not self.chat:
            return rows
        return [{**row, "prompt": render_user_prompt(tokenizer, row["prompt"])} for row in rows]

    def eval_max_new_tokens(self, task) -> int | None:
        """Evaluation length: the task's, with room for a chat model's fuller answer (None without a task)."""
        if task is None:
            return None
        return max(task.max_new_tokens, CHAT_EVAL_TOKENS) if self.chat else task.max_new_tokens

    def eval_prompts(self, task, config, tokenizer) -> list[dict]:
        """The task's held-out prompts (none without a task or with --n-eval 0), rendered for the model."""
        if task is None or not getattr(config, "n_eval", 0):
            return []
        return self.prompt_rows(tokenizer, task.eval_prompts(config.n_eval, seed=config.seed))


def set_threads(config) -> None:
    if getattr(config, "threads", None):
        torch.set_num_threads(config.threads)


def prepare_run(config: TrainConfig, tokenizer, model_path: str | Path | None = None) -> RunSetup:
    """Threads, pretrained-model defaults (those the user did not set) and the chat decision; printed once."""
    set_threads(config)
    path = model_path if model_path is not None else getattr(config, "model", None)
    origin = model_origin(path)
    changed = apply_model_defaults(config, origin)
    chat = use_chat_template(config.chat_template, tokenizer, origin)
    if origin == "pretrained":
        settings = ", ".join(f"{k}={v}" for k, v in changed.items())
        print(f"[tandem] pretrained model {path}: chat template {'on' if chat else 'off'}"
              + (f"; defaults for pretrained models (TRL's): {settings} (set them to override)" if settings else ""),
              flush=True)
    return RunSetup(origin, chat)
