"""Score completions with a tandem reward model (a causal-LM backbone with a scalar head)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tandem.data import pad_sft_batch, tokenize_sft


class RewardModelScorer:
    """A reward source backed by a reward model, scoring prompt + completion + EOS exactly as `tandem rm` trained it.

    Prompt and completion are tokenized separately without special tokens, concatenated, and EOS is
    appended (`tandem.data.tokenize_sft` builds the same ids as `tokenize_preference` does for each
    response); rows are right-padded and scored `batch_size` at a time without gradients. The score is
    the model's `logits.squeeze(-1)`, read at the last real token by the sequence-classification head.

    Args:
        model: a reward-model directory (loaded with `load_reward_model`), or a loaded model.
        tokenizer: the tokenizer the reward model was trained with; when None, the one saved in the
            model directory (required when `model` is an object).
        batch_size: rows per forward pass.
        device: where to run the model (moved there once); None keeps the model where it is.
        dtype: the precision it runs in (the policy's training precision: bf16 where the run uses it); None keeps
            a loaded model's and loads a directory in fp32.
        max_length: truncate completions so prompt + completion fit (None: no truncation).
        name: how the source is reported; default `model:<path>` or `reward_model`.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_length: int | None = None,
        name: str | None = None,
    ) -> None:
        from tandem.models.loading import load_reward_model, load_tokenizer  # imports peft: only when a model is scored

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(model, (str, Path)):
            self.name = name or f"model:{model}"
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
            model = load_reward_model(model, dtype=dtype or torch.float32)
        else:
            self.name = name or "reward_model"
            if tokenizer is None:
                raise ValueError("RewardModelScorer needs the reward model's tokenizer when given a model object")
        if tokenizer.pad_token_id is None:
            raise ValueError("the reward model's tokenizer has no pad token; use tandem.models.loading.load_tokenizer")
        self.model = model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: list[str], completions: list[str]) -> list[list[int]]:
        """Token ids of each prompt + completion + EOS, as the reward model saw them in training."""
        return [
            tokenize_sft({"prompt": prompt, "completion": completion}, self.tokenizer, self.max_length)["input_ids"]
            for prompt, completion in zip(prompts, completions, strict=True)
        ]

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        rows = self.tokenize(prompts, completions)
        scores: list[float | None] = []
        for start in range(0, len(rows), self.batch_size):
            examples = [{"input_ids": ids, "completion_mask": [1] * len(ids)} for ids in rows[start : start + self.batch_size]]
            batch = pad_sft_batch(examples, self.tokenizer.pad_token_id)
            logits = self.model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                use_cache=False,
            ).logits
            scores.extend(logits.squeeze(-1).float().cpu().tolist())
        return scores
