"""The local Hugging Face judge: verdicts from answer-token probabilities, batched, on tiny models."""

import pytest
import torch

from tandem.judges import LocalJudge, load_template
from tandem.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["Review: the sequel", "Review: I watched the film with my dad and", "Review: this comedy"]
GOOD = [" was superb and moving.", " we loved it.", " was charming."]
BAD = [" was dull.", " it was awful and tedious.", " was bland and flat."]


def test_a_judge_taught_to_answer_a_reads_a_from_token_probabilities(answering_judge_dir):
    judge = LocalJudge(answering_judge_dir, both_orders=False)
    verdicts = judge.compare(PROMPTS, GOOD, BAD)
    assert all(v.usable and v.method == "token_probs" and v.value > 0.95 for v in verdicts)
    debiased = LocalJudge(answering_judge_dir).compare(PROMPTS, GOOD, BAD)  # always "A": both orders cancel it
    assert all(abs(v.value - 0.5) < 0.05 for v in debiased)


def test_verdict_is_the_renormalised_label_probability_of_one_forward_pass(answering_judge_dir):
    judge = LocalJudge(answering_judge_dir, both_orders=False)
    [verdict] = judge.compare(PROMPTS[:1], GOOD[:1], BAD[:1])
    model, tokenizer = load_causal_lm(answering_judge_dir), load_tokenizer(answering_judge_dir)
    template = load_template("compare")
    text = tokenizer.apply_chat_template(template.messages({"prompt": PROMPTS[0], "response_a": GOOD[0], "response_b": BAD[0]}),
                                         tokenize=False, add_generation_prompt=True)
    suffix, label_ids = judge.reading_plan("Verdict:", ["A", "B"])
    ids = torch.tensor([tokenizer.encode(text + suffix, add_special_tokens=False)])
    with torch.no_grad():
        probabilities = model(input_ids=ids).logits[0, -1].softmax(-1)
    p_a, p_b = (float(probabilities[i].sum()) for i in label_ids)
    assert verdict.value == pytest.approx(p_a / (p_a + p_b), abs=1e-5)


def test_batching_and_left_padding_do_not_change_verdicts(tiny_model_dir):
    batched = LocalJudge(tiny_model_dir, batch_size=8).score(PROMPTS, GOOD + BAD[:0])
    single = [LocalJudge(tiny_model_dir, batch_size=1).score([p], [r])[0] for p, r in zip(PROMPTS, GOOD)]
    for a, b in zip(batched, single):
        assert a.usable and 0 <= a.value <= 1 and a.value == pytest.approx(b.value, abs=1e-5)


def test_chain_of_thought_generates_reasoning_before_reading_the_verdict(tiny_model_dir, monkeypatch):
    from tandem.generation import Samples
    from tandem.generation.engines import HFEngine

    asked = {}

    def reasoning(engine, texts, **options):
        asked.update(texts=texts, **options)
        return Samples([], [], ["The review is warm. Verdict: 7" for _ in texts])  # what it wrote before the verdict is kept

    monkeypatch.setattr(HFEngine, "sample", reasoning)  # the judge's generation engine writes the reasoning
    judge = LocalJudge(tiny_model_dir, cot=True, cot_max_tokens=5)
    [verdict] = judge.score(PROMPTS[:1], GOOD[:1])
    assert asked["max_new_tokens"] == 5 and asked["temperature"] == 0.0 and "explain" in asked["texts"][0]
    assert verdict.usable and verdict.raw.startswith("The review is warm.\n") and "label mass" in verdict.raw
    plain = LocalJudge(tiny_model_dir).score(PROMPTS[:1], GOOD[:1])[0]
    assert plain.value != pytest.approx(verdict.value, abs=1e-6)  # the reasoning is part of what the verdict is read after


def test_low_label_mass_is_unusable_when_a_minimum_is_asked(tiny_model_dir):
    verdicts = LocalJudge(tiny_model_dir, min_label_mass=0.5).score(PROMPTS, GOOD)  # an untrained model barely says digits
    assert all(v.reason == "no_label_mass" and v.value is None for v in verdicts)


def test_labels_that_are_not_single_tokens_are_refused(tiny_model_dir, tmp_path):
    path = tmp_path / "ten.yaml"
    path.write_text("kind: score\ninstruction: '{prompt} {response}'\nscale: [1, 10]\n")  # "10" is two digit tokens here
    with pytest.raises(ValueError, match="single token"):
        LocalJudge(tiny_model_dir, score_template=str(path))


def test_a_model_object_needs_its_tokenizer(tiny_model_dir):
    with pytest.raises(ValueError, match="tokenizer"):
        LocalJudge(load_causal_lm(tiny_model_dir))
    judge = LocalJudge(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir))
    assert judge.score(PROMPTS[:1], GOOD[:1])[0].usable
