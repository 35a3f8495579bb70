"""Packed forward: sequences laid end to end in one row, no padding computed, a shared prefix computed once.

A padded batch computes every row to the longest one's length, and a pair's chosen and rejected rows each compute
their prompt. Here the sequences of a batch are laid end to end in a single row (batch size 1), each with its own
position ids 0, 1, ...; a sequence that starts with the same tokens as its group's first one (a pair's prompt) lays
down only the rest, at positions that continue the shared tokens. The projections and MLPs, nearly all of a
forward's work, then run over real tokens only, each shared token once.

Attention is what must keep the sequences apart. Hugging Face builds a block-diagonal mask from restarting position
ids, but a mask over the whole row costs O(row^2) and takes the slow masked kernels. Instead each sequence is a
*block*: the columns it attends over (its shared prefix, then its own tokens) are gathered into a row of a small
right-padded batch, which takes plain causal attention (`is_causal`, no mask: a real token never sees the padding
after it), and each column's output is taken back from the one block that owns it. Gathering the shared prefix into a
second block repeats only its attention, and the gradients of the gathered columns sum back into the row, so values
and gradients equal the padded forward's (to floating-point rounding).

The attention runs as a registered Hugging Face attention function (`AttentionInterface`), switched on for the
forward only (`packed_attention`), with the blocks passed as the keyword `packed_blocks`, which transformers hands
through every layer to the attention function, as it does `cu_seq_lens_q` for flash attention's variable lengths.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
import torch.nn.functional as F

try:
    from transformers import AttentionInterface
except ImportError:  # transformers < 4.48 has no attention registry: the padded forward runs
    AttentionInterface = None

from tandem.generation.prefix import innermost
from tandem.models.attention import GROUPED_ATTENTION

ATTENTION_NAME = "tandem_packed"

# CPU flash attention (forward + backward, 1 thread, 64-dim heads) runs faster in fp32 than in bf16 up to blocks of
# ~500 tokens: 31 against 59 ms a layer for 16 blocks of 110 tokens (SmolLM2's 9 heads), 51 against 60 for 16 of
# 250, 101 against 110 for 4 of 500; 149 against 129 for 2 of 1000
CPU_FP32_ATTENTION_WIDTH = 512


def pack_groups(groups: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    """Lay groups of token sequences end to end in one row; each sequence after the first of its group lays down
    only what follows the tokens it starts with in common with the first.

    Returns `input_ids` and `position_ids` (1, row), `block_columns` and `column_slots` (the forward's
    `packed_blocks`, see `packed_sdpa`) and `last_columns`: the column of each sequence's last token, group by group
    in order (a sequence wholly inside the first's tokens ends there).
    """
    ids: list[int] = []
    positions: list[int] = []
    blocks: list[list[int]] = []  # the columns each block attends over: its shared prefix, then its own tokens
    owners: list[tuple[int, int]] = []  # column -> (its block, its offset in that block)
    last: list[int] = []

    def lay_down(tokens: list[int], first_position: int, prefix: list[int]) -> None:
        start = len(ids)
        ids.extend(tokens)
        positions.extend(range(first_position, first_position + len(tokens)))
        owners.extend((len(blocks), len(prefix) + k) for k in range(len(tokens)))
        blocks.append(prefix + list(range(start, start + len(tokens))))

    if not all(sequence for group in groups for sequence in group):
        raise ValueError("a packed sequence needs at least one token")
    for group in groups:
        first, base = group[0], len(ids)
        lay_down(list(first), 0, [])
        last.append(base + len(first) - 1)
        for sequence in group[1:]:
            shared = 0
            while shared < min(len(sequence), len(first)) and sequence[shared] == first[shared]:
                shared += 1
            if shared == len(sequence):
                last.append(base + shared - 1)
                continue
            lay_down(list(sequence[shared:]), shared, list(range(base, base + shared)))
            last.append(len(ids) - 1)
    width = max(len(b) for b in blocks)
    # right padding repeats the block's last column: a causal query never sees what comes after it
    columns = torch.tensor([b + [b[-1]] * (width - len(b)) for b in blocks])
    slots = torch.tensor([block * width + offset for block, offset in owners])
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "block_columns": columns,
        "column_slots": slots,
        "last_columns": torch.tensor(last),
    }


def packed_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packed_blocks=None, **kwargs):
    """Causal attention within the blocks of a packed row. `query`/`key`/`value`: (1, heads, row, head_dim);
    `packed_blocks`: `block_columns` (blocks, width), the row's columns each block attends over (right-padded), and
    `column_slots` (row,), where each column's output lies in the blocks' flattened (blocks x width) output.
    Returns (1, row, heads, head_dim), as transformers' attention functions do."""
    if packed_blocks is None:
        raise ValueError("the packed attention needs `packed_blocks` (see tandem.generation.packed.pack_groups)")
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise ValueError("the packed attention has no sliding window or soft-capping")
    columns, slots = packed_blocks
    blocks, width = columns.shape

    def by_block(x: torch.Tensor) -> torch.Tensor:  # (1, heads, row, d) -> (blocks, heads, width, d)
        return x[0].index_select(1, columns.flatten()).unflatten(1, (blocks, width)).transpose(0, 1)

    dtype = torch.float32 if query.device.type == "cpu" and width <= CPU_FP32_ATTENTION_WIDTH else query.dtype
    with torch.autocast(query.device.type, enabled=False):
        out = F.scaled_dot_product_attention(
            by_block(query).to(dtype), by_block(key).to(dtype), by_block(value).to(dtype), is_causal=True,
            dropout_p=dropout, scale=scaling, enable_gqa=query.shape[1] != key.shape[1],
        )
    out = out.transpose(0, 1).flatten(1, 2).index_select(1, slots)  # (heads, row, d)
    return out.transpose(0, 1).unsqueeze(0).to(query.dtype).contiguous(), None


if AttentionInterface is not None:
    AttentionInterface.register(ATTENTION_NAME, packed_sdpa)


def packable(model) -> bool:
    """Whether `model` can run the packed forward: a transformers model on SDPA or eager attention with position ids
    as an argument, no sliding-window layers, not compiled (each batch's own blocks would recompile), not
    recomputing its forward in the backward (gradient checkpointing would run it again without the switch)."""
    inner = innermost(model)
    config = getattr(inner, "config", None)
    if AttentionInterface is None or config is None or hasattr(model, "_orig_mod"):
        return False
    # transformers 5.20 renamed is_gradient_checkpointing (the old name warns)
    renamed = hasattr(type(inner), "is_activation_checkpointing")
    if getattr(inner, "is_activation_checkpointing" if renamed else "is_gradient_checkpointing", False):
        return False
    text = config.get_text_config()
    if ("sliding_attention" in (getattr(text, "layer_types", None) or [])
            or (getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True))):
        return False
    return (getattr(config, "_attn_implementation", None) in ("sdpa", "eager", GROUPED_ATTENTION)
            and "position_ids" in inspect.signature(type(inner).forward).parameters)


@contextmanager
def packed_attention(model):
    """Within: `model`'s attention layers run `packed_sdpa` (the forward must be given `packed_blocks`)."""
    config = innermost(model).config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before
