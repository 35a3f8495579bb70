"""The online trainer's rollout engine: the engine/trainer log-prob mismatch it logs, truncated importance
sampling, and what `--engine` accepts (the vLLM runs themselves: tests/generation/test_vllm_engine.py)."""

import json
import sys

import pytest

from tandem.trainers.grpo import GRPOConfig, run_grpo

OPTIONS = dict(task="sentiment", batch_size=2, samples_per_prompt=4, max_new_tokens=6, n_eval=0, progress=False,
               mixed_precision="no", max_steps=2, lr=1e-3, log_every=1)


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kl_metrics", [False, True])  # single pass (read in the update) and two passes (in collect)
def test_the_mismatch_is_logged_every_step_and_near_zero_in_fp32(tmp_path, tiny_model_dir, kl_metrics, one_torch_thread):
    run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", kl_metrics=kl_metrics, **OPTIONS))
    records = _records(tmp_path / "run")
    assert len(records) == 2
    for record in records:
        assert 0 <= record["train/logprob_mismatch"] < 1e-4  # the same fp32 model sampled and trained


def test_truncated_importance_sampling_is_a_no_op_when_the_engine_agrees(tmp_path, tiny_model_dir, one_torch_thread):
    from checks import assert_same_weights

    plain = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "plain", **OPTIONS))
    corrected = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "tis", tis_cap=2.0, **OPTIONS))
    assert_same_weights(plain.model_dir, corrected.model_dir, atol=1e-5)  # weights exp(~1e-6) = 1
    assert _records(tmp_path / "tis")[0]["train/tis_weight"] == pytest.approx(1.0, abs=1e-4)


def test_an_unknown_engine_fails_before_any_model_loads():
    with pytest.raises(ValueError, match="engine 'sglang'"):
        GRPOConfig(engine="sglang")


def test_a_missing_vllm_names_the_pip_command(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # importing it raises ImportError, installed or not
    from tandem.generation.engines import EngineUnavailable

    with pytest.raises(EngineUnavailable, match=r"pip install 'tandem\[vllm\]'"):
        run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", engine="vllm", **OPTIONS))


def test_a_memory_budget_splits_the_update_into_fewer_rows_with_the_same_result(tmp_path, tiny_model_dir, one_torch_thread):
    from checks import assert_same_weights

    options = {**OPTIONS, "micro_batch_size": 8}
    whole = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "whole", micro_batch_memory=None, **options))
    split = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "split", micro_batch_memory=1e-5, **options))
    assert [r["train/micro_batch_rows"] for r in _records(tmp_path / "whole")] == [8.0, 8.0]
    rows = [r["train/micro_batch_rows"] for r in _records(tmp_path / "split")]
    assert all(1 <= r < 8 for r in rows)
    assert_same_weights(whole.model_dir, split.model_dir, atol=1e-5)  # fp32: the same gradient, summed in parts
