"""The tiny-model factory: small Llama- or Qwen2-shaped causal LMs built from a named size preset.

The result is a plain Hugging Face model + tokenizer; `save_pretrained` writes an ordinary model
directory (config.json, model.safetensors, tokenizer.json, chat template) that
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load with no tandem code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from tandem.models.attention import use_grouped_attention
from tandem.models.origin import mark_scratch
from tandem.models.tokenizer import IM_END


@dataclass(frozen=True)
class ModelSize:
    """Shape of a tiny model. Parameter counts are for the default vocabulary of the preset."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int = 512


# About 1M, 6M and 30M parameters (tied embeddings).
MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384, vocab_size=1024),
    "small": ModelSize(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768, vocab_size=2048),
    "medium": ModelSize(hidden_size=512, num_layers=10, num_heads=8, num_kv_heads=4, intermediate_size=1536, vocab_size=4096),
}

ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def build_model(
    size: str | ModelSize, tokenizer: PreTrainedTokenizerBase, arch: str = "llama", seed: int = 0
) -> LlamaForCausalLM | Qwen2ForCausalLM:
    """A randomly initialised causal LM of the given size whose vocabulary matches `tokenizer`."""
    if isinstance(size, str):
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; known sizes: {', '.join(MODEL_SIZES)}")
        size = MODEL_SIZES[size]
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    config_class, model_class = ARCHITECTURES[arch]
    stop_ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        stop_ids.append(im_end)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=size.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    mark_scratch(model)
    return use_grouped_attention(model)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
