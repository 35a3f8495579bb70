"""A .gguf file through the vLLM engine: started from its converted directory as tandem loads any model (runs where
vLLM is installed, in `.ci/run`'s vLLM stage; elsewhere it skips)."""

import pytest

from checks import require_vllm

pytestmark = pytest.mark.vllm
require_vllm()  # skips where vLLM is missing; fails in .ci/run's vLLM stage

from tandem.generation.engines import make_engine  # noqa: E402
from tandem.models.loading import resolve_model  # noqa: E402


def test_a_gguf_file_samples_as_with_hf(tiny_gguf_two_heads, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    path, _ = tiny_gguf_two_heads
    engine = make_engine("vllm", path, dtype="float32", enforce_eager=True, max_model_len=128)
    assert engine.llm.llm_engine.model_config.model == str(resolve_model(path).folder)  # the cached conversion
    prompts = ["the cat", "in the", "a"]
    expected = make_engine("hf", path).sample(prompts, max_new_tokens=8)
    assert engine.sample(prompts, max_new_tokens=8) == expected
