"""Tiny networks and tensors here: every test runs on one torch thread. Pretrained-looking checkpoints for `--model`."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def pretrained_llama_dir(tmp_path_factory, sentiment_tokenizer):
    """A tiny Llama (hidden 32, 2 layers) with the sentiment tokenizer, saved without tandem's origin mark, so the
    commands treat it as a pretrained checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(sentiment_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=None, eos_token_id=sentiment_tokenizer.eos_token_id,
                         pad_token_id=sentiment_tokenizer.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pretrained-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    sentiment_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_gguf_file(tmp_path, monkeypatch):
    """A tiny Llama as a .gguf file, converted into this test's own cache."""
    from gguf_files import write_tiny_gguf

    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny-llama.F32.gguf"
    write_tiny_gguf(path, heads=2)
    return path
