"""GGUF in: a .gguf file becomes a plain Hugging Face directory, converted once and cached."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from typer.testing import CliRunner

from tandem.models import gguf
from tandem.models.gguf import convert_gguf, generation_config, gguf_cache_dir
from tandem.models.loading import load_causal_lm, load_tokenizer, resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _greedy(model, tokenizer, text="the cat", n=8):
    inputs = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0].tolist()


def test_converted_directory_loads_in_plain_transformers_and_generates_as_the_gguf(tiny_gguf, cache, one_torch_thread):
    path, original = tiny_gguf
    out = convert_gguf(path)
    assert out.parent == cache / "gguf" and out.name == gguf.file_digest(path)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    from_gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    gguf_tokenizer.pad_token = gguf_tokenizer.eos_token
    assert _greedy(model, tokenizer) == _greedy(from_gguf, gguf_tokenizer)
    for name, weight in original.state_dict().items():  # llama.cpp's q/k reordering is undone
        assert torch.equal(model.state_dict()[name], weight), name
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.pad_token is not None
    saved = json.loads((out / "generation_config.json").read_text())
    assert tokenizer.eos_token_id in (saved["eos_token_id"] if isinstance(saved["eos_token_id"], list) else [saved["eos_token_id"]])
    assert saved["pad_token_id"] == tokenizer.pad_token_id
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    model.save_pretrained(out.parent / "trained-from-it")  # a model trained from the directory saves as usual


def test_a_second_call_reuses_the_cached_directory(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf
    first = convert_gguf(path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(gguf, "_write_hf_dir", lambda *a: pytest.fail("converted twice"))
    assert convert_gguf(path) == first and resolve_model(path).folder == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_load_causal_lm_and_load_tokenizer_take_a_gguf_file(tiny_gguf, cache, one_torch_thread):
    path, original = tiny_gguf
    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    assert model.name_or_path == str(path.absolute())  # a LoRA trained on it records the .gguf as its base
    ids = tokenizer(["the cat"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-5)


def test_explicit_out_is_written_and_must_be_new(tiny_gguf, tmp_path, cache):
    path, _ = tiny_gguf
    out = convert_gguf(path, tmp_path / "smol")
    assert (out / "config.json").is_file() and not (cache / "gguf").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        convert_gguf(path, out)


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        convert_gguf(tmp_path / "absent.gguf")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        load_causal_lm(tmp_path / "absent.gguf")


def test_generation_config_stops_at_the_tokenizer_eos_too():
    tokenizer = SimpleNamespace(eos_token_id=2, pad_token_id=2)
    config = generation_config(GenerationConfig(eos_token_id=0), tokenizer)
    assert config.eos_token_id == [0, 2] and config.pad_token_id == 2
    assert generation_config(GenerationConfig(eos_token_id=2, pad_token_id=5), tokenizer).eos_token_id == 2
    assert generation_config(GenerationConfig(eos_token_id=2, pad_token_id=5), tokenizer).pad_token_id == 5


def test_cache_dir_follows_tandem_cache(tiny_gguf, cache):
    assert gguf_cache_dir(tiny_gguf[0]).parent == cache / "gguf"


def test_tandem_convert_writes_a_directory(tiny_gguf, tmp_path, cache):
    from tandem.cli import app

    result = CliRunner().invoke(app, ["convert", "--model", str(tiny_gguf[0]), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    again = CliRunner().invoke(app, ["convert", "--model", str(tiny_gguf[0]), "--out", str(tmp_path / "hf")])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output
