"""Tiny llama-shaped GGUF files (`gguf_files.write_tiny_gguf`), written the way llama.cpp's converter writes one."""

import pytest

from gguf_files import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """(path of a tiny GGUF file, the HF model it was written from)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    model = write_tiny_gguf(path)
    return path, model


@pytest.fixture(scope="session")
def tiny_gguf_two_heads(tmp_path_factory):
    """The same with 2 heads of 32 dimensions (vLLM's CPU attention has no kernel for 16)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-2h.F32.gguf"
    return path, write_tiny_gguf(path, heads=2)
