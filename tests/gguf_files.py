"""A tiny llama-shaped GGUF file, written the way llama.cpp's converter writes one (for the GGUF fixtures of
several test folders)."""

import numpy as np
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_vocab() -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary: the special tokens, the 256 byte symbols and a few merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r"]
    return SPECIAL + symbols + ["".join(m.split()) for m in merges], merges


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's reordering of q/k rows (convert_hf_to_gguf.py, LlamaModel.permute); transformers undoes it."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_tiny_gguf(path, seed: int = 0, heads: int = 4):
    """A 2-layer llama (hidden 64, `heads` query heads, half as many key/value heads) as GGUF (f32 tensors), and
    the HF model whose weights it holds."""
    from gguf import GGUFWriter, TokenType
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges = _byte_vocab()
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads // 2)
    writer.add_rope_dimension_count(64 // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in SPECIAL else TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)  # <|im_end|>: ends a chat turn
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for layer in range(2):
        for hf, gg in names.items():
            w = weights[f"model.layers.{layer}.{hf}.weight"]
            if gg == "attn_q":
                w = _permute(w, heads)
            elif gg == "attn_k":
                w = _permute(w, heads // 2)
            writer.add_tensor(f"blk.{layer}.{gg}.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
