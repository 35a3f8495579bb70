"""The models beside the policy (a `model:PATH` reward, a local judge, DPO's pair sampler) are placed on the device the
policy trains on, in its precision; here a 'meta' device stands in for the GPU."""

import contextlib

import pytest
import torch

import tandem.trainers.dpo as dpo
import tandem.trainers.online as online
from tandem.trainers.grpo import GRPOConfig, run_grpo
from tandem.trainers.loop import frozen_model_dtype


class Placed(Exception):
    """Stops a run once the placement is seen."""


def test_frozen_models_run_in_bf16_only_when_the_policy_trains_in_bf16():
    assert frozen_model_dtype("bf16") == torch.bfloat16
    assert frozen_model_dtype("no") == frozen_model_dtype("fp16") == torch.float32


def test_an_rl_reward_is_built_on_the_policys_device_in_its_precision(tmp_path, tiny_model_dir, monkeypatch):
    seen = {}

    def build_reward(spec, tokenizer, **placement):
        seen.update(spec=spec, **placement)
        raise Placed
    monkeypatch.setattr(online, "process_device", lambda: torch.device("meta"))
    monkeypatch.setattr(online, "build_reward", build_reward)
    with pytest.raises(Placed):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", reward=f"model:{tiny_model_dir}",
                            mixed_precision="bf16", max_steps=1, batch_size=2, n_eval=0, progress=False))
    assert seen == {"spec": f"model:{tiny_model_dir}", "device": torch.device("meta"), "dtype": torch.bfloat16}


def test_dpo_samples_its_pairs_with_the_policy_on_its_device(tmp_path, tiny_model_dir, monkeypatch):
    seen = {}

    def sampled_pairs(model, *args, **options):
        seen["device"] = next(model.parameters()).device
        raise Placed

    def autocast(device_type, dtype, enabled):  # torch has no autocast on 'meta'
        seen["autocast"] = (device_type, dtype, enabled)
        return contextlib.nullcontext()
    monkeypatch.setattr(torch, "autocast", autocast)
    monkeypatch.setattr(dpo, "process_device", lambda: torch.device("meta"))
    monkeypatch.setattr(dpo, "sampled_pairs", sampled_pairs)
    with pytest.raises(Placed):
        dpo.run_dpo(dpo.DPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", pairs="sampled",
                                  mixed_precision="bf16", max_steps=1, progress=False))
    assert seen == {"device": torch.device("meta"), "autocast": ("meta", torch.bfloat16, True)}


def test_the_reference_is_half_precision_on_a_gpu_and_float32_on_cpu():
    from tandem.trainers.loop import reference_dtype

    assert reference_dtype("bf16", torch.device("cuda", 0)) == torch.bfloat16
    assert reference_dtype("no", torch.device("cuda", 0)) == torch.float32
    assert reference_dtype("bf16", torch.device("cpu")) == torch.float32  # exact KL 0 at step 0 on CPU


def test_grpo_loads_its_reference_in_the_precision_of_its_device(tmp_path, tiny_model_dir, monkeypatch):
    seen = []
    original = online.load_causal_lm

    def load(path, dtype=torch.float32, **kw):
        seen.append(dtype)
        if len(seen) == 2:  # the policy, then the reference
            raise Placed
        return original(path, dtype=dtype, **kw)
    monkeypatch.setattr(online, "load_causal_lm", load)
    monkeypatch.setattr(online, "process_device", lambda: torch.device("cuda", 0))
    with pytest.raises(Placed):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", kl_coef=0.1, max_steps=1,
                            mixed_precision="bf16", progress=False))
    assert seen == [torch.float32, torch.bfloat16]
