"""The engines' `sample` (the generation interface behind evaluation, judges, AI feedback and agents) with `hf`, and
`--engine` on the commands that generate; the vLLM side is in test_vllm_engine.py."""

import json
import sys

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

import tandem.cli
from tandem.generation import sample
from tandem.generation.engines import EngineUnavailable, HFEngine, make_engine
from tandem.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["Review: The film", "Review: I watched this movie with my sister and", "Review: It"]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


def test_hf_engine_samples_are_tandem_samples(policy, tiny_model_dir):
    model, tokenizer = policy
    engine = make_engine("hf", model, tokenizer)
    greedy = sample(model, tokenizer, PROMPTS, max_new_tokens=8)
    assert engine.sample(PROMPTS, max_new_tokens=8) == greedy
    assert sample(model, tokenizer, PROMPTS, max_new_tokens=8, engine=engine) == greedy
    drawn = sample(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    assert engine.sample(PROMPTS, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3) == drawn
    from_path = make_engine("hf", tiny_model_dir)  # a judge's or teacher's directory: loaded by the engine
    assert isinstance(from_path, HFEngine) and from_path.sample(PROMPTS, max_new_tokens=8) == greedy


def test_an_engine_from_a_loaded_model_needs_its_tokenizer(policy):
    with pytest.raises(ValueError, match="tokenizer"):
        make_engine("hf", policy[0])


class RecordingEngine:
    """Stands in for an engine: records what it is asked and answers with the hf engine."""

    owns_weights = True

    def __init__(self, model, tokenizer):
        self.inner, self.tokenizer, self.calls = HFEngine(model, tokenizer), tokenizer, []

    def sample(self, prompts, **options):
        self.calls.append((len(prompts), options))
        return self.inner.sample(prompts, **options)


def test_gold_eval_and_a_judge_generate_through_the_engine_given(policy, tiny_model_dir):
    from tandem.policy_eval import gold_eval
    from tandem.judges.local import LocalJudge
    from tandem.tasks import get_task

    model, tokenizer = policy
    engine = RecordingEngine(model, tokenizer)
    task = get_task("sentiment")
    rows = task.eval_prompts(4, seed=0)
    expected = gold_eval(model, tokenizer, task, rows, max_new_tokens=6)
    assert gold_eval(model, tokenizer, task, rows, max_new_tokens=6, engine=engine) == expected
    assert engine.calls == [(4, {"max_new_tokens": 6, "temperature": task.eval_temperature, "top_p": 1.0,
                                 "batch_size": 64, "seed": 0})]
    judge = LocalJudge(tiny_model_dir, cot=True, cot_max_tokens=5, engine=engine)
    verdicts = judge.compare(["Review: It"], [" was great."], [" was dull."])
    assert len(verdicts) == 1 and engine.calls[-1][1]["max_new_tokens"] == 5 and engine.calls[-1][1]["temperature"] == 0.0


def test_every_generating_command_validates_its_engine():
    from tandem.lm_inside_agents.experiments.explore import ExploreConfig
    from tandem.ai_feedback.cai import CAIConfig
    from tandem.ai_feedback.rlaif import RLAIFConfig
    from tandem.judges.commands import JudgeCommandConfig

    for make in (RLAIFConfig, CAIConfig, ExploreConfig, lambda **o: JudgeCommandConfig(judge="local:x", data="d", **o)):
        assert make().engine == "hf" and make(engine="vllm").engine == "vllm"
        with pytest.raises(ValidationError, match="engine 'sglang'; choose one of: hf, vllm"):
            make(engine="sglang")


@pytest.fixture()
def app(monkeypatch):
    from tandem.judges.commands import register

    fresh = typer.Typer()
    monkeypatch.setattr(tandem.cli, "app", fresh)
    register(tandem.cli.add_command)
    fresh.command("other")(lambda: None)  # with one command typer would drop its name
    return fresh


def test_engine_vllm_without_vllm_names_the_pip_command(app, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # importing it raises ImportError, installed or not
    with pytest.raises(EngineUnavailable, match=r"pip install 'tandem\[vllm\]'"):
        make_engine("vllm", tiny_model_dir)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Review: It", "chosen": " was great.", "rejected": " was dull."}) + "\n")
    result = CliRunner().invoke(app, ["judge", "--judge", f"local:{tiny_model_dir}", "--cot", "--engine", "vllm",
                                      "--data", str(data), "--out", str(tmp_path / "v.jsonl"), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "tandem judge: --engine vllm needs vLLM: pip install 'tandem[vllm]'" in result.output


def test_cpu_vllm_options_turn_chunked_prefill_off_with_a_whole_sequence_budget(tmp_path, monkeypatch):
    import torch

    from tandem.generation.engines import cpu_llm_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 16384}))
    assert cpu_llm_options(tmp_path, None, {}) == {"enable_chunked_prefill": False, "max_num_batched_tokens": 16384}
    assert cpu_llm_options(tmp_path, 512, {"x": 1}) == {"x": 1, "enable_chunked_prefill": False,
                                                         "max_num_batched_tokens": 8192}
    assert cpu_llm_options(tmp_path, 512, {"max_num_batched_tokens": 1024})["max_num_batched_tokens"] == 1024
    assert cpu_llm_options(tmp_path, None, {"enable_chunked_prefill": True}) == {"enable_chunked_prefill": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_llm_options(tmp_path, None, {}) == {}  # a GPU build keeps vLLM's defaults


def test_a_seeded_sample_repeats_its_draws_and_leaves_the_training_stream_alone(policy):
    """An evaluation seeds its own draws; the global generator continues as if it had not run."""
    import torch

    model, tokenizer = policy
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    first = sample(model, tokenizer, PROMPTS, max_new_tokens=6, temperature=1.0, seed=5)
    assert torch.equal(torch.rand(4), expected)
    assert sample(model, tokenizer, PROMPTS, max_new_tokens=6, temperature=1.0, seed=5) == first
