"""The vLLM rollout engine against the training forward and against `hf`, on the tiny Llama (runs where vLLM is
installed: `.ci/run` builds a second virtualenv with `tandem[vllm]` for these; elsewhere they skip)."""

import pytest
import torch

from checks import require_vllm

pytestmark = pytest.mark.vllm
require_vllm()  # skips where vLLM is missing; fails in .ci/run's vLLM stage

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs  # noqa: E402
from tandem.generation.engines import make_engine  # noqa: E402
from tandem.generation.rollout import SamplingConfig  # noqa: E402
from tandem.models.loading import load_causal_lm, load_tokenizer  # noqa: E402

PROMPTS = ["Review: The film", "Review: I watched this movie with my sister and", "Review: It"]
# fp32 engine against the fp32 training forward: kernels differ (oneDNN GEMMs, paged attention), the math does not
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def engines(policy, tmp_path_factory):
    """(hf, vllm) engines on the same policy; one vLLM engine for the module (start-up is the slow part)."""
    model, tokenizer = policy
    torch.set_num_threads(2)  # vLLM cuts its thread to 1 unless OMP_NUM_THREADS is set: the engine restores it
    vllm_engine = make_engine("vllm", model, tokenizer, folder=tmp_path_factory.mktemp("engine"), dtype="float32",
                              enforce_eager=True, max_model_len=256)
    vllm_engine.threads_after_start = torch.get_num_threads()
    yield make_engine("hf", model, tokenizer), vllm_engine
    vllm_engine.close()


def test_the_trainer_keeps_its_torch_threads_after_the_engine_starts(engines):
    assert engines[1].threads_after_start == 2
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1  # and set_num_threads works again (vLLM made it a no-op)
    torch.set_num_threads(2)


def _training_log_probs(model, batch, temperature):
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits / temperature
    labels = batch.input_ids.masked_fill(batch.completion_mask == 0, IGNORE_INDEX)
    return token_log_probs(logits, labels)


def test_engine_samples_are_scored_by_the_training_forward(policy, engines):
    model, _ = policy
    batch = engines[1].rollout(PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0.7, samples_per_prompt=2),
                               sample_keys=torch.arange(6))
    assert batch.input_ids.shape[0] == 6 and batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    recomputed, mask = _training_log_probs(model, batch, 0.7)
    assert mask.sum() > 20
    gap = ((recomputed - batch.sampled_log_probs[:, 1:]).abs() * mask).max()
    assert gap < TOLERANCE, f"engine vs training forward: max |delta log p| = {gap:.2e}"


def test_top_k_log_probs_are_those_of_the_truncated_distribution(policy, engines):
    """As `hf` records them: after temperature and top-k, the distribution tokens are drawn from."""
    model, _ = policy
    batch = engines[1].rollout(PROMPTS, SamplingConfig(max_new_tokens=10, temperature=0.6, top_k=5), sample_keys=torch.arange(3))
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / 0.6
    kth = logits.topk(5, dim=-1).values[..., -1:]
    expected = logits.masked_fill(logits < kth, float("-inf")).log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    mask = batch.completion_mask[:, 1:].bool()
    assert torch.isfinite(expected[mask]).all()  # every drawn token is among the top 5
    assert torch.allclose(expected[mask], batch.sampled_log_probs[:, 1:][mask], atol=TOLERANCE)


def test_stop_strings_and_n_behave_as_with_hf(engines):
    """Greedy: the same tokens, texts and ends from both engines; sampled: each row is cut at its first stop string."""
    hf, vllm_engine = engines
    greedy = SamplingConfig(max_new_tokens=16, temperature=0.0, samples_per_prompt=2, stop_strings=["e"])
    a, b = hf.rollout(PROMPTS, greedy), vllm_engine.rollout(PROMPTS, greedy)
    assert a.completions == b.completions and a.ended.tolist() == b.ended.tolist()
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.completion_mask, b.completion_mask)
    assert a.group_ids.tolist() == b.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    sampled = vllm_engine.rollout(PROMPTS * 4, SamplingConfig(max_new_tokens=20, samples_per_prompt=3, stop_strings=["e"]),
                                  sample_keys=torch.arange(36))
    assert len(sampled.completions) == 36 and sampled.group_ids.tolist() == [g for g in range(12) for _ in range(3)]
    assert len(set(sampled.completions)) > 3  # n draws, not one repeated
    for text, ended in zip(sampled.completions, sampled.ended.tolist()):
        if "e" in text:
            assert ended and text.endswith("e") and text.count("e") == 1


def test_same_seed_same_completions(engines):
    config = SamplingConfig(max_new_tokens=10, samples_per_prompt=2)
    first = engines[1].rollout(PROMPTS, config, sample_keys=torch.arange(6))
    assert engines[1].rollout(PROMPTS, config, sample_keys=torch.arange(6)).completions == first.completions
    assert engines[1].rollout(PROMPTS, config, sample_keys=torch.arange(6) + 99).completions != first.completions


def test_seeded_rollout_larger_than_one_engine_step(policy, engines):
    """More prompt tokens than one engine step takes: with chunked prefill a seeded prompt split over two steps
    crashed vLLM's CPU build ("CPU Generator does not use offset", as a 256-row SmolLM2 rollout did)."""
    from tandem.generation.engines import cpu_llm_options

    _, tokenizer = policy
    budget = cpu_llm_options(engines[1].llm.llm_engine.model_config.model, 256, {})["max_num_batched_tokens"]
    words = "the film was long and the acting was fine but the ending " * 40
    prompts = []
    for i in range(64):
        ids = tokenizer(f"Review {i}: {words}", add_special_tokens=False).input_ids[:200]
        prompts.append(tokenizer.decode(ids))
    total = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    assert total > budget  # the prompts need more than one step
    config = SamplingConfig(max_new_tokens=4, temperature=1.0)
    batch = engines[1].rollout(prompts, config, sample_keys=torch.arange(64))
    assert batch.input_ids.shape[0] == 64 and int(batch.completion_mask.sum()) > 64
    assert engines[1].rollout(prompts, config, sample_keys=torch.arange(64)).completions == batch.completions


def test_pushed_weights_change_greedy_tokens_exactly_as_the_trained_model(policy, engines):
    model, tokenizer = policy
    hf, vllm_engine = engines
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0)
    before = vllm_engine.rollout(PROMPTS, greedy)
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    # a few optimizer steps that move the policy towards one completion
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    target = tokenizer(PROMPTS[0] + " great great great", return_tensors="pt")
    for _ in range(5):
        loss = model(**target, labels=target.input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    try:
        vllm_engine.sync(model)
        trained, pushed = hf.rollout(PROMPTS, greedy), vllm_engine.rollout(PROMPTS, greedy)
        assert pushed.completions != before.completions  # the update moved the greedy tokens
        assert torch.equal(pushed.input_ids, trained.input_ids)
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(original[name])
        vllm_engine.sync(model)
    assert vllm_engine.rollout(PROMPTS, greedy).completions == before.completions


def test_sample_gives_hf_greedy_samples_and_honours_max_new_tokens(engines):
    """`sample` (evaluation, judges, AI feedback): the same prompt ids, completion ids and texts as `hf` greedy in fp32."""
    hf, vllm_engine = engines
    for length in (1, 12):
        a, b = hf.sample(PROMPTS, max_new_tokens=length), vllm_engine.sample(PROMPTS, max_new_tokens=length)
        assert b.prompt_ids == a.prompt_ids and b.completion_ids == a.completion_ids and b.texts == a.texts
        assert all(len(ids) == length for ids in b.completion_ids)  # the tiny model never samples EOS greedily here


def test_sample_stops_at_the_stop_tokens_and_keeps_them(policy, engines):
    """A stop token ends a completion in both engines, kept as the last token (as `hf` keeps EOS)."""
    model, _ = policy
    hf, vllm_engine = engines
    stop = vllm_engine.sample(PROMPTS[:1], max_new_tokens=12).completion_ids[0][2]  # the third greedy token
    eos, stops = model.generation_config.eos_token_id, vllm_engine.stops
    model.generation_config.eos_token_id = [*(eos if isinstance(eos, list) else [eos]), stop]
    vllm_engine.stops = sorted({*stops, stop})
    try:
        a, b = hf.sample(PROMPTS, max_new_tokens=12), vllm_engine.sample(PROMPTS, max_new_tokens=12)
    finally:
        model.generation_config.eos_token_id, vllm_engine.stops = eos, stops
    assert b.completion_ids == a.completion_ids and b.texts == a.texts
    assert len(b.completion_ids[0]) <= 3 and b.completion_ids[0][-1] == stop


def test_seeded_sampling_repeats_and_repeated_prompts_differ(engines):
    vllm_engine = engines[1]
    first = vllm_engine.sample(PROMPTS * 3, max_new_tokens=10, temperature=1.0, seed=5)
    assert vllm_engine.sample(PROMPTS * 3, max_new_tokens=10, temperature=1.0, seed=5) == first
    assert len(set(first.texts[0::3])) > 1  # row i draws with seed + i: one prompt's copies are different samples


def test_an_engine_from_a_model_directory_runs_evaluation_and_the_judge_command(policy, tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    """Straight from the directory (nothing written); gold evaluation and `tandem judge --engine vllm` end to end."""
    import json

    from tandem.policy_eval import gold_eval
    from tandem.generation.engines import VLLMEngine
    from tandem.judges.commands import JudgeCommandConfig, run_judge
    from tandem.tasks import get_task

    model, tokenizer = policy
    engine = make_engine("vllm", tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=256)
    assert engine.llm.llm_engine.model_config.model == str(tiny_model_dir)
    task = get_task("sentiment")
    rows = task.eval_prompts(6, seed=1)
    assert gold_eval(model, tokenizer, task, rows, temperature=0.0, max_new_tokens=8, engine=engine) == \
        gold_eval(model, tokenizer, task, rows, temperature=0.0, max_new_tokens=8)
    del engine
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in task.preference_pairs(4, seed=3)))
    options = dict(judge=f"local:{tiny_model_dir}:cot_max_tokens=6", data=data, cot=True, progress=False)
    hf = run_judge(JudgeCommandConfig(out=tmp_path / "hf.jsonl", **options))
    asked = []
    original = VLLMEngine.sample
    monkeypatch.setattr(VLLMEngine, "sample", lambda self, prompts, **o: asked.append(o) or original(self, prompts, **o))
    vllm_run = run_judge(JudgeCommandConfig(out=tmp_path / "vllm.jsonl", engine="vllm", **options))
    assert vllm_run["samples"] == hf["samples"] == 4 and vllm_run["usable"] == hf["usable"]
    assert asked and all(o["max_new_tokens"] == 6 and o["temperature"] == 0.0 for o in asked)  # the reasoning


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_grpo_with_the_vllm_engine_trains_and_keeps_the_engine_in_step(tmp_path, tiny_model_dir, monkeypatch, lora_rank):
    """Each step's mismatch is logged (fp32: near 0) and after the run the engine samples the trained policy."""
    import json

    from tandem.generation.engines import HFEngine, VLLMEngine
    from tandem.trainers.grpo import GRPOConfig, GRPOTrainer, run_grpo

    trainers = []
    original = GRPOTrainer.train
    monkeypatch.setattr(GRPOTrainer, "train", lambda self: trainers.append(self) or original(self))
    sampled = []  # the in-run evaluation samples on the trainer's engine, not with HF generate
    original_sample = VLLMEngine.sample
    monkeypatch.setattr(VLLMEngine, "sample", lambda self, prompts, **o: sampled.append(len(prompts)) or original_sample(self, prompts, **o))
    config = GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment", batch_size=2, samples_per_prompt=4,
                        max_new_tokens=6, n_eval=4, progress=False, mixed_precision="no", max_steps=3, lr=1e-2,
                        log_every=1, engine="vllm", lora_rank=lora_rank)
    run_grpo(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sampled and sampled[0] == 4 and any("eval/gold_reward" in r for r in records)
    records = [r for r in records if "train/logprob_mismatch" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["train/logprob_mismatch"] < TOLERANCE and "train/time/engine_sync" in r for r in records)
    trainer = trainers[0]
    assert isinstance(trainer.engine, VLLMEngine)
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0)
    model = trainer.accelerator.unwrap_model(trainer.model)
    trained = HFEngine(model, trainer.tokenizer).rollout(PROMPTS, greedy)
    assert torch.equal(trainer.engine.rollout(PROMPTS, greedy).input_ids, trained.input_ids)
