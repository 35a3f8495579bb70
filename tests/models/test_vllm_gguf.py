"""A .gguf file through the vLLM engine: started from its converted directory as tandem loads any model (runs where
vLLM is installed, in `.ci/run`'s vLLM stage; elsewhere it skips)."""

import gc

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
    engine.close()


def test_engines_one_after_another_in_one_process(tiny_model_dir):
    """vLLM tears down its process-wide distributed groups whenever an engine stops, also when the garbage collector
    stops a dropped one: it must stop before the next engine starts, not while the next runs (as a finished test
    module's engine did under the next module's in CI). Dropped engines are collected before a start; `close`
    stops one at once."""
    first = make_engine("vllm", tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=128)
    first.cycle = first  # reachable only by the collector, as a finished pipeline stage's engine can be
    expected = first.sample(["the cat"], max_new_tokens=4)
    del first
    second = make_engine("vllm", tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=128)
    gc.collect()
    assert second.sample(["the cat"], max_new_tokens=4) == expected
    second.close()
    with pytest.raises(AttributeError):
        second.sample(["the cat"], max_new_tokens=4)  # closed: it cannot sample
    third = make_engine("vllm", tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=128)
    assert third.sample(["the cat"], max_new_tokens=4) == expected
    third.close()
