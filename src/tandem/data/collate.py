"""Pad tokenized examples into batches of tensors (right padding).

SFT batches carry `labels` in the Hugging Face convention: equal to `input_ids` where the loss applies,
-100 elsewhere, not shifted (the model shifts them). Preference batches put chosen and rejected into one
batch of 2B rows, first B chosen and last B rejected, so a trainer scores both in a single forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer rows to the longest into a [len(rows), max_len] long tensor."""
    width = max((len(row) for row in rows), default=0)
    batch = torch.full((len(rows), width), value, dtype=torch.long)
    for index, row in enumerate(rows):
        batch[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return batch


def _attention_mask(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    return _pad([[1] * len(row) for row in rows], 0)


def pad_sft_batch(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch `tokenize_sft` outputs: `input_ids`, `attention_mask`, and `labels` (-100 off the completion and on padding)."""
    input_ids = [example["input_ids"] for example in examples]
    labels = [
        [token if in_completion else IGNORE_INDEX for token, in_completion in zip(example["input_ids"], example["completion_mask"])]
        for example in examples
    ]
    return {"input_ids": _pad(input_ids, pad_id), "attention_mask": _attention_mask(input_ids), "labels": _pad(labels, IGNORE_INDEX)}


def pad_prompt_response_batch(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Batch prompt+response sequences: `input_ids`, `attention_mask`, and `completion_mask` (1 on response tokens)."""
    sequences = [list(prompt) + list(response) for prompt, response in zip(prompt_ids, response_ids, strict=True)]
    completion_mask = [[0] * len(prompt) + [1] * len(response) for prompt, response in zip(prompt_ids, response_ids)]
    return {
        "input_ids": _pad(sequences, pad_id),
        "attention_mask": _attention_mask(sequences),
        "completion_mask": _pad(completion_mask, 0),
    }


def pad_preference_batch(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch `tokenize_preference` outputs as 2B prompt+response rows: rows [0, B) chosen, rows [B, 2B) rejected."""
    prompts = [example["prompt_ids"] for example in examples]
    responses = [example["chosen_ids"] for example in examples] + [example["rejected_ids"] for example in examples]
    return pad_prompt_response_batch(prompts + prompts, responses, pad_id)


def pad_unpaired_batch(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch `tokenize_unpaired` outputs: prompt+completion rows as in `pad_prompt_response_batch`, plus a bool `label`."""
    batch = pad_prompt_response_batch(
        [example["prompt_ids"] for example in examples], [example["completion_ids"] for example in examples], pad_id
    )
    batch["label"] = torch.tensor([bool(example["label"]) for example in examples], dtype=torch.bool)
    return batch
