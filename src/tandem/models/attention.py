"""Grouped-query attention inside the SDPA kernel on CPU, not after copying each key/value head.

Models with fewer key/value heads than query heads (SmolLM2: 9 query, 3 key/value; Llama 3, Qwen2) share each key/value
head among a group of queries (Ainslie et al. 2023, "GQA"). transformers' SDPA attention, whenever a mask is given
and more than one query is computed (training, prefill), first repeats every key and value head over its group
(`repeat_kv`: a copy of the keys and values, and in the backward a sum over the copies), because CUDA's fast kernels
take no mask with `enable_gqa`. PyTorch's CPU flash kernel takes both: the same outputs and gradients (to rounding),
without the copies. In a SmolLM2 agent-RL update on one CPU thread, those copies of the shared-prefix forward's
cached keys and values were 10% of the step (`benchmarks/RESULTS.md`, `tandem agent-rl`).

`use_grouped_attention(model)` switches a model on SDPA to `grouped_sdpa`, registered with transformers as
`GROUPED_ATTENTION` (SDPA's masks); `grouped_sdpa` runs transformers' own SDPA function for everything else (CUDA,
one query, position biases), so outputs do not change with the switch, only the copies go.
"""

from __future__ import annotations

import torch.nn.functional as F

try:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
except ImportError:  # transformers without attention registries: the models keep their own attention
    AttentionInterface = None

GROUPED_ATTENTION = "tandem_grouped_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs):
    """transformers' SDPA attention (`sdpa_attention_forward`), with the query groups of a CPU forward over several
    queries attending to their shared key/value head inside the kernel (`enable_gqa`). query: (batch, heads,
    queries, dim), key/value: (batch, key/value heads, keys, dim); returns (batch, queries, heads, dim), None."""
    groups = getattr(module, "num_key_value_groups", 1)
    queries = query.shape[2]
    if (query.device.type != "cpu" or groups == 1 or queries == 1 or kwargs.get("position_bias") is not None
            or kwargs.get("softcap") is not None or kwargs.get("output_attentions", False)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(is_causal and attention_mask is None)  # queries > 1 here
    if is_causal and key.shape[2] > queries:  # an empty static cache's prefill: the keys past the queries are unused
        key, value = key[:, :, :queries], value[:, :, :queries]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=is_causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


if AttentionInterface is not None:
    AttentionInterface.register(GROUPED_ATTENTION, grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_grouped_attention(model):
    """Switch `model` (a transformers model, a peft or value-head wrapper of one) from SDPA to `grouped_sdpa` when
    it has grouped key/value heads; anything else is left as it is. Returns `model`. Not saved with the model: a
    saved config records no attention implementation."""
    if AttentionInterface is None:
        return model
    for module in model.modules():
        config = getattr(module, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else None
        if text is None or getattr(config, "_attn_implementation", None) != "sdpa":
            continue
        heads, kv_heads = getattr(text, "num_attention_heads", None), getattr(text, "num_key_value_heads", None)
        if isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads < heads:
            config._attn_implementation = GROUPED_ATTENTION
    return model
