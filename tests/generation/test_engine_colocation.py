"""vLLM beside the trainer on one GPU, with a fake `vllm` module and a fake device: the memory budget and sleep mode
reach `vllm.LLM`, and the trainer puts the engine to sleep for each update and wakes it with the new weights."""

import types

import pytest
import torch

import tandem.generation.engines as engines
import tandem.trainers.online as online
from tandem.generation.engines import HFEngine, free_memory_share, make_engine


class FakeLLM:
    def __init__(self, calls, **options):
        self.calls, self.options = calls, options
        calls.append("start")

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self):
        self.calls.append("wake_up")

    def collective_rpc(self, method, kwargs):
        self.calls.append(method)

    def apply_model(self, function):
        pass

    def reset_prefix_cache(self):
        pass


@pytest.fixture
def fake_gpu(monkeypatch):
    """A 80 GiB device with 40 GiB free, and a `vllm` whose LLM records what it is asked."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *device: (40 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    vllm = types.SimpleNamespace(LLM=lambda **options: FakeLLM(calls, **options))
    monkeypatch.setattr(engines, "import_vllm", lambda: vllm)
    return calls


def test_the_default_budget_is_most_of_the_free_memory_less_what_the_update_will_take(fake_gpu):
    assert free_memory_share() == pytest.approx(0.9 * 40 / 80, abs=1e-3)
    assert free_memory_share(reserve_bytes=8 * 2**30) == pytest.approx(0.9 * 32 / 80, abs=1e-3)
    with pytest.raises(RuntimeError, match="--engine-memory"):
        free_memory_share(reserve_bytes=40 * 2**30)


def test_memory_and_sleep_mode_reach_the_llm_and_sleep_wakes_before_the_weight_sync(fake_gpu, tiny_model_dir):
    engine = make_engine("vllm", tiny_model_dir, dtype="float32", reserve_bytes=4 * 2**30)
    assert engine.llm.options["gpu_memory_utilization"] == pytest.approx(0.9 * 36 / 80, abs=1e-3)
    assert engine.llm.options["enable_sleep_mode"] is True
    assert make_engine("vllm", tiny_model_dir, memory=0.3).llm.options["gpu_memory_utilization"] == 0.3
    fake_gpu.clear()
    engine.sleep()
    engine.sleep()  # asleep already: nothing more
    engine.sync(torch.nn.Linear(2, 2))
    engine.sync(torch.nn.Linear(2, 2))  # awake: straight to the weights
    assert fake_gpu == ["sleep(1)", "empty_cache", "wake_up", "reload_weights", "reload_weights"]


class RecordingEngine(HFEngine):
    """`hf` that records when it generates, sleeps and takes weights."""

    calls: list[str] = []

    def rollout(self, *args, **options):
        self.calls.append("rollout")
        return super().rollout(*args, **options)

    def sleep(self):
        self.calls.append("sleep")

    def sync(self, model):
        self.calls.append("sync")


def test_the_trainer_sleeps_the_engine_for_each_update_and_syncs_after(tmp_path, tiny_model_dir, monkeypatch):
    from tandem.trainers.grpo import GRPOConfig, run_grpo

    calls = RecordingEngine.calls = []
    monkeypatch.setattr(online, "make_engine", lambda name, model, tokenizer, **options: RecordingEngine(
        model, tokenizer, autocast=options["autocast"]))
    update = online.OnlineTrainer.update
    monkeypatch.setattr(online.OnlineTrainer, "update", lambda self, *args: calls.append("update") or update(self, *args))
    run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", max_steps=2, batch_size=2,
                        samples_per_prompt=2, max_new_tokens=4, n_eval=0, progress=False, mixed_precision="no"))
    assert calls == ["rollout", "sleep", "update", "sync"] * 2


def test_every_engine_command_takes_a_memory_budget():
    from tandem.generation.engines import EngineOptions
    from tandem.trainers.grpo import GRPOConfig

    assert EngineOptions(engine_memory=0.4).engine_memory == 0.4 and GRPOConfig(engine_memory=0.4).engine_memory == 0.4
    with pytest.raises(ValueError):
        GRPOConfig(engine_memory=1.5)
