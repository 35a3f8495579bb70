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
from tandem.generation.prefix import (
    SHARED_PREFIX_MOST, PrefixPlan, can_keep, innermost as _innermost, plan_prefix, shared_prefix_logits,
)


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


# Activations a training forward keeps for its backward, per token: per decoder layer and hidden unit, plus the
# bf16 logits kept per vocabulary entry (the fp32 log-softmax runs 64 rows at a time). Fitted to SmolLM2-135M
# (30 layers, hidden 576, vocabulary 49152) under bf16 autocast: 1.9 MB per token, the peak RSS of a forward +
# backward over 16 rows of 320 tokens (`benchmarks/logprob_memory.py`: 9.8 GB above the model), 5% of it logits.
ACTIVATION_BYTES_PER_LAYER_UNIT = 106
LOGIT_BYTES_PER_VOCABULARY_ENTRY = 2
# Without autocast (fp32 weights on a CPU without native bf16) the same forward + backward keeps 1.3x that: 2.4-2.5
# MB per token computed, measured as the RSS growth of a 15- and a 32-row SmolLM2 shared-prefix forward of agent turns.
FULL_PRECISION_FACTOR = 1.3
# Of the device memory free before an update, the share its micro-batches may fill (the allocator's fragmentation
# and the step's temporaries take the rest).
FREE_MEMORY_SHARE = 0.8


def activation_bytes_per_token(model, full_precision: bool = False) -> int | None:
    """Estimated bytes of activations a forward + backward keeps per token (None: no decoder config to read);
    `full_precision`: the forward runs in fp32, not under bf16 autocast."""
    config = getattr(_innermost(model), "config", None)
    config = getattr(config, "text_config", None) or config
    layers, hidden = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(hidden, int):
        return None
    vocabulary = getattr(config, "vocab_size", None) or 0
    per_token = ACTIVATION_BYTES_PER_LAYER_UNIT * layers * hidden + LOGIT_BYTES_PER_VOCABULARY_ENTRY * vocabulary
    return int(per_token * FULL_PRECISION_FACTOR) if full_precision else per_token


def rows_within_memory(model, width: int, most_rows: int, gigabytes: float | None, free_bytes: float | None = None,
                       shared: int = 0, full_precision: bool = False) -> int:
    """Rows of `width` tokens a micro-batch may hold so its activations (estimated by `activation_bytes_per_token`)
    stay within the budget, at most `most_rows` and at least 1; `most_rows` when there is no budget (`gigabytes`
    None). The budget is `gigabytes`, or with `free_bytes` (the device memory free now, `free_device_bytes`)
    `FREE_MEMORY_SHARE` of that: what really fits on a GPU, not a CPU's measure. `shared`: tokens the micro-batch
    computes once whatever its rows (the shared-prefix forward's common tokens), taken from the budget first."""
    per_token = activation_bytes_per_token(model, full_precision) if gigabytes is not None else None
    if per_token is None:
        return most_rows
    budget = FREE_MEMORY_SHARE * free_bytes if free_bytes is not None else gigabytes * 2**30
    budget -= per_token * shared
    return max(1, min(most_rows, int(budget // (per_token * max(width, 1)))))


def free_device_bytes(device: torch.device) -> float | None:
    """The memory free on a CUDA `device` now (None elsewhere: the CPU's budget is --micro-batch-memory)."""
    return float(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None


def logits_to_keep(model, labels: torch.Tensor) -> dict:
    """{'logits_to_keep': K} for a forward whose logits only score `labels`, or {} when it cannot be cut (a
    compiled model keeps the whole forward: a different K per batch would recompile)."""
    if hasattr(model, "_orig_mod") or not _takes_logits_to_keep(type(_innermost(model))):
        return {}
    keep = scored_positions(labels)
    return {"logits_to_keep": keep} if keep < labels.shape[1] else {}


def shared_prefix_plan(model, labels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PrefixPlan | None:
    """The `PrefixPlan` of a batch when its shared-prefix forward saves work, else None (a compiled model, a
    model without a KV cache argument, a sharded model, gradient checkpointing in training, or rows that share too
    little)."""
    if not can_keep(model) or (model.training and getattr(_innermost(model), "is_gradient_checkpointing", False)):
        return None
    plan = plan_prefix(input_ids, attention_mask, labels)
    return plan if plan is not None and plan.cost() <= SHARED_PREFIX_MOST * input_ids.numel() else None


def completion_logits(model, labels: torch.Tensor, **inputs):
    """The model's logits at the positions that score `labels` (all positions when it cannot cut them), for
    `token_log_probs` and `token_entropy`; the tokens rows share (a group's prompt, an agent's instructions)
    computed once when that saves work (`tandem.generation.prefix`), the logits then each row's suffix's only
    (`SuffixLogits`; `.dense()` lays them out as the plain forward's)."""
    keep = logits_to_keep(model, labels)
    # packed rows (position_ids) hold several sequences each: nothing to share across rows
    shareable = "attention_mask" in inputs and "position_ids" not in inputs
    plan = shared_prefix_plan(model, labels, inputs["input_ids"], inputs["attention_mask"]) if shareable else None
    if plan is not None:
        return shared_prefix_logits(model, plan, cut_logits=bool(keep) or _takes_logits_to_keep(type(_innermost(model))))
    return model(**inputs, use_cache=False, **keep).logits


def completion_log_probs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(completion token | prefix) per row, and the number of completion tokens per row.

    `batch` holds `input_ids`, `attention_mask` and `completion_mask` (1 on completion tokens), as made by
    `tandem.data.pad_prompt_response_batch`.
    """
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    logits = completion_logits(model, labels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    log_probs, mask = token_log_probs(logits, labels)
    return log_probs.sum(-1), mask.sum(-1).float()
