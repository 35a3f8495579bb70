"""Turn normalised examples (plain-text pieces from `formats.validate`) into token ids, as pure functions.

Prompt and response are tokenized separately and concatenated, so the boundary between them is exact
(tokenizing the joined text could merge tokens across it). No special tokens are added by the tokenizer;
EOS is appended to every response so the model learns to stop. Truncation only ever shortens responses:
a truncated response loses its EOS, as it should (the model must not learn to stop mid-answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token before tokenizing")
    return tokenizer.eos_token_id


def _response_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a response, ending in exactly one end token.

    A response rendered by a chat template already ends its turn with a special token (`<|im_end|>`),
    often followed by a newline: the newline is dropped and nothing is appended, so the end-of-turn
    token is the target exactly once. Otherwise EOS is appended (unless the text already ends with it).
    """
    ids = _ids(tokenizer, text)
    special = set(tokenizer.all_special_ids)
    end = len(ids)
    while end > 0 and ids[end - 1] not in special and not tokenizer.decode(ids[end - 1 : end]).strip():
        end -= 1
    if end > 0 and ids[end - 1] in special:
        return ids[:end]
    return ids + [_eos_id(tokenizer)]


def _response_budget(prompt_ids: list[int], max_length: int | None) -> int | None:
    """How many response tokens fit after the prompt (None: no limit)."""
    if max_length is None:
        return None
    if len(prompt_ids) >= max_length:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens leaves no room for a response in max_length={max_length} "
            "(validate the data with max_length to catch this up front)"
        )
    return max_length - len(prompt_ids)


def tokenize_sft(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None) -> dict[str, list[int]]:
    """Prompt ids + completion ids + EOS, with `completion_mask` 1 exactly on the completion and its EOS.

    The completion (never the prompt) is truncated so the whole sequence fits in `max_length` tokens.
    """
    prompt_ids = _ids(tokenizer, example["prompt"])
    completion_ids = _response_ids(tokenizer, example["completion"])[: _response_budget(prompt_ids, max_length)]
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def tokenize_text(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Pretraining text: its ids followed by EOS (the document separator when sequences are packed)."""
    return {"input_ids": _response_ids(tokenizer, example["text"])}


def tokenize_preference(
    example: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> dict[str, list[int]]:
    """Prompt ids and each response's ids + EOS, each response truncated so prompt + response fit `max_length`."""
    prompt_ids = _ids(tokenizer, example["prompt"])
    budget = _response_budget(prompt_ids, max_length)
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": _response_ids(tokenizer, example["chosen"])[:budget],
        "rejected_ids": _response_ids(tokenizer, example["rejected"])[:budget],
    }


def tokenize_unpaired(
    example: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> dict[str, Any]:
    """KTO-style example: prompt ids, completion ids + EOS (truncated to fit `max_length`) and the bool label."""
    prompt_ids = _ids(tokenizer, example["prompt"])
    budget = _response_budget(prompt_ids, max_length)
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": _response_ids(tokenizer, example["completion"])[:budget],
        "label": bool(example["label"]),
    }


def pack_sequences(
    token_lists: Sequence[Sequence[int]], block_size: int, eos_id: int | None = None, drop_last: bool = True
) -> list[list[int]]:
    """Concatenate sequences and cut the stream into blocks of `block_size` tokens (pretraining packing).

    Sequences from `tokenize_text` already end with EOS, which separates documents; pass `eos_id` to
    append it to any sequence that does not. The final partial block is dropped unless `drop_last=False`.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        if eos_id is not None and (not tokens or tokens[-1] != eos_id):
            stream.append(eos_id)
    end = len(stream) - len(stream) % block_size if drop_last else len(stream)
    return [stream[start : start + block_size] for start in range(0, end, block_size)]
