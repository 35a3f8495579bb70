"""LoRA end to end: adapter folders load like models, and RL trains adapters against the base as reference."""

import json
import shutil

import pytest
import torch
from peft import PeftModel

from tandem.models.loading import (
    add_lora, load_causal_lm, load_tokenizer, reference_and_context, resolve_model, save_model,
)

IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def _adapted(model_dir, seed=0):
    """The tiny model with rank-4 LoRA whose B matrices are non-zero (a fresh adapter is the identity)."""
    model = add_lora(load_causal_lm(model_dir), rank=4, alpha=8)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    model = _adapted(tiny_model_dir)
    save_model(model, load_tokenizer(tiny_model_dir), tmp_path / "adapter")
    return tmp_path / "adapter", _logits(model)


def test_an_adapter_folder_loads_merged_with_the_in_memory_logits(adapter_dir, tiny_model_dir, one_torch_thread):
    folder, expected = adapter_dir
    assert not (folder / "config.json").exists() and (folder / "adapter_model.safetensors").is_file()
    merged = load_causal_lm(folder)
    assert not isinstance(merged, PeftModel)
    assert torch.allclose(_logits(merged.eval()), expected, atol=1e-5)
    assert not torch.allclose(_logits(load_causal_lm(tiny_model_dir).eval()), expected, atol=1e-3)
    assert load_tokenizer(folder).get_vocab() == load_tokenizer(tiny_model_dir).get_vocab()


def test_merge_false_gives_trainable_adapters(adapter_dir, one_torch_thread):
    folder, expected = adapter_dir
    model = load_causal_lm(folder, merge=False)
    assert isinstance(model, PeftModel)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert torch.allclose(_logits(model.eval()), expected, atol=1e-5)


def test_the_base_is_recorded_as_an_absolute_path(tmp_path, tiny_model_dir, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tiny_model_dir.parent)
    model = add_lora(load_causal_lm(tiny_model_dir.name), rank=4, alpha=8)  # loaded by a relative path
    save_model(model, None, tmp_path / "adapter")
    base = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tmp_path)
    source = resolve_model("adapter")
    assert source.base.folder == tiny_model_dir.resolve() and source.tokenizer_folder == tiny_model_dir.resolve()


def _set_base(folder, base):
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config))


def test_a_relative_base_is_found_next_to_the_adapter_folder(adapter_dir, tmp_path, tiny_model_dir, monkeypatch):
    folder, _ = adapter_dir
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    _set_base(folder, "base")
    monkeypatch.chdir(tiny_model_dir)  # not where the base is
    assert resolve_model(folder).base.folder == tmp_path / "base"


def test_an_adapter_on_a_gguf_or_on_another_adapter_resolves_recursively(adapter_dir, tmp_path, tiny_gguf, monkeypatch):
    folder, _ = adapter_dir
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "cache"))
    _set_base(folder, str(tiny_gguf[0]))
    assert resolve_model(folder).base.path == tiny_gguf[0].absolute()
    second = tmp_path / "second"
    second.mkdir()
    (second / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(folder)}))
    assert resolve_model(second).base.base.path == tiny_gguf[0].absolute()


def test_a_hub_id_base_is_one_clear_error(adapter_dir):
    folder, _ = adapter_dir
    _set_base(folder, "HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(FileNotFoundError, match="not on this machine .*adapter_config.json"):
        load_causal_lm(folder)


def test_a_folder_that_is_no_model_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config.json\), a LoRA adapter folder \(no adapter_config.json"):
        load_tokenizer(tmp_path)


def test_the_reference_with_adapters_disabled_is_exactly_the_base(tiny_model_dir, one_torch_thread):
    from tandem.trainers.ppo import PolicyWithValueHead

    base = _logits(load_causal_lm(tiny_model_dir).eval())
    policy = _adapted(tiny_model_dir)
    for wrapped in (policy, PolicyWithValueHead(policy)):
        reference, context = reference_and_context(wrapped, None)
        assert reference is policy
        with context():
            assert torch.equal(_logits(reference), base)
        assert not torch.allclose(_logits(policy), base, atol=1e-3)  # adapters back on afterwards
    separate = load_causal_lm(tiny_model_dir)
    assert reference_and_context(policy, separate)[0] is separate
    assert reference_and_context(separate, None)[0] is None


def _count_loads(monkeypatch):
    import tandem.trainers.online as online

    loads = []
    original = online.load_causal_lm
    monkeypatch.setattr(online, "load_causal_lm", lambda *a, **k: loads.append(a) or original(*a, **k))
    return loads


def test_grpo_with_lora_trains_adapters_against_the_base_without_a_second_copy(tmp_path, tiny_model_dir, monkeypatch):
    from tandem.trainers.grpo import GRPOConfig, run_grpo

    # rewards that differ within a group (the tiny model's sentiment reward is all zeros): the adapters move
    # (the length in characters: a group of 4 with equal rewards, so no first update, is then very unlikely)
    (tmp_path / "lora_length_reward.py").write_text(
        "def score(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loads = _count_loads(monkeypatch)
    result = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="lora_length_reward:score",
                                 max_steps=2, batch_size=2, samples_per_prompt=4, max_new_tokens=8, n_eval=4,
                                 progress=False, log_every=1, kl_coef=0.04, lora_rank=4, lr=1e-2, mixed_precision="no"))
    assert len(loads) == 1  # the policy only
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "train/kl" in r]
    assert len(records) == 2
    assert records[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start as the identity
    assert records[1]["train/kl"] > 1e-6  # the reference stayed the base while the adapters moved
    assert "eval/kl_to_reference" in result.metrics
    folder = result.model_dir
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    assert load_causal_lm(folder) is not None


def test_ppo_with_lora_trains_adapters_and_the_value_head(tmp_path, tiny_model_dir, monkeypatch):
    from tandem.trainers.ppo import VALUE_HEAD_FILE, PPOConfig, run_ppo

    loads = _count_loads(monkeypatch)
    result = run_ppo(PPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", reward="task", max_steps=1,
                               batch_size=2, max_new_tokens=6, n_eval=0, update_epochs=1, minibatches=1,
                               progress=False, lora_rank=4, mixed_precision="no"))
    assert len(loads) == 1
    assert (result.model_dir / "adapter_model.safetensors").is_file() and (result.model_dir / VALUE_HEAD_FILE).is_file()
    assert "value_loss" in json.dumps(json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]))


def test_a_reward_model_adapter_loads_merged_with_its_trained_head(tmp_path, tiny_model_dir, one_torch_thread):
    from tandem.models.loading import load_reward_model

    model = add_lora(load_reward_model(tiny_model_dir), rank=4, alpha=8, task_type="SEQ_CLS")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:  # adapters and the fresh head, as after training
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    expected = _logits(model.eval())
    save_model(model, None, tmp_path / "rm")
    assert torch.allclose(_logits(load_reward_model(tmp_path / "rm").eval()), expected, atol=1e-5)


def test_tandem_convert_writes_an_adapter_merged(adapter_dir, tmp_path, one_torch_thread):
    from transformers import AutoModelForCausalLM

    from tandem.models.commands import ConvertConfig, run_convert

    folder, expected = adapter_dir
    out = run_convert(ConvertConfig(model=folder, out=tmp_path / "merged"))
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(out).eval()), expected, atol=1e-5)
    assert (out / "tokenizer.json").is_file()


def test_serve_dpo_and_local_judges_take_an_adapter_folder(adapter_dir, tmp_path, one_torch_thread):
    from fastapi.testclient import TestClient

    from tandem.judges import LocalJudge
    from tandem.serve import ServeConfig, create_app
    from tandem.trainers.dpo import DPOConfig, run_dpo

    folder, _ = adapter_dir
    client = TestClient(create_app(ServeConfig(model=folder, model_name="adapted")))
    reply = client.post("/v1/completions", json={"model": "adapted", "prompt": "Review: The film", "max_tokens": 3})
    assert reply.status_code == 200 and reply.json()["choices"][0]["text"] is not None
    verdict = LocalJudge(folder, both_orders=False).compare(["Review: it"], [" was great."], [" was dull."])[0]
    assert verdict.value is not None and 0.0 <= verdict.value <= 1.0
    result = run_dpo(DPOConfig(model=folder, out=tmp_path / "dpo", task="sentiment", n_train=16, n_eval=0, batch_size=8,
                               max_steps=1, mixed_precision="no", progress=False))
    assert (result.model_dir / "model.safetensors").exists()
