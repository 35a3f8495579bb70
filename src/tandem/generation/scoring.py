"""Log-probabilities of given completions under a model (the quantity DPO, KL and PPO all need)."""

from __future__ import annotations

import torch

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs


def completion_log_probs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(completion token | prefix) per row, and the number of completion tokens per row.

    `batch` holds `input_ids`, `attention_mask` and `completion_mask` (1 on completion tokens), as made by
    `tandem.data.pad_prompt_response_batch`.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    log_probs, mask = token_log_probs(logits, labels)
    return log_probs.sum(-1), mask.sum(-1).float()
