"""Log-probabilities of given completions under a model (the quantity DPO, KL and PPO all need).

A forward that only needs the completion tokens' log-probs computes the LM head at the positions that score them
(`logits_to_keep`, as TRL does): the head and its full-vocabulary output are the largest tensors of a small model's
step (49k x 576 for SmolLM2-135M, a fifth of its forward).
"""

from __future__ import annotations

import functools
import inspect

import torch

from tandem.algorithms.losses import IGNORE_INDEX, scored_positions, token_log_probs


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _innermost(model):
    """The model under the wrappers that pass keyword arguments through (DDP's `.module`, PEFT, the value head)."""
    while True:
        inner = next((getattr(model, a) for a in ("module", "policy") if isinstance(getattr(model, a, None), torch.nn.Module)), None)
        if inner is None and hasattr(model, "get_base_model"):
            inner = model.get_base_model()
        if inner is None or inner is model:
            return model
        model = inner


def logits_to_keep(model, labels: torch.Tensor) -> dict:
    """{'logits_to_keep': K} for a forward whose logits only score `labels`, or {} when it cannot be cut (a
    compiled model keeps the whole forward: a different K per batch would recompile)."""
    if hasattr(model, "_orig_mod") or not _takes_logits_to_keep(type(_innermost(model))):
        return {}
    keep = scored_positions(labels)
    return {"logits_to_keep": keep} if keep < labels.shape[1] else {}


def completion_logits(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """The model's logits at the positions that score `labels` (all positions when it cannot cut them)."""
    return model(**inputs, use_cache=False, **logits_to_keep(model, labels)).logits


def completion_log_probs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(completion token | prefix) per row, and the number of completion tokens per row.

    `batch` holds `input_ids`, `attention_mask` and `completion_mask` (1 on completion tokens), as made by
    `tandem.data.pad_prompt_response_batch`.
    """
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    logits = completion_logits(model, labels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    log_probs, mask = token_log_probs(logits, labels)
    return log_probs.sum(-1), mask.sum(-1).float()
