"""PoliteTask: deterministic shop dialogues, held-out items, gold helpfulness and the rule-violation detector."""

import statistics

import pytest

import tandem.tasks.polite  # noqa: F401  (registers the task)
from tandem.tasks import get_task
from tandem.tasks.polite import FORBIDDEN_TOPICS, RUDE_WORDS, STYLES, asked_item

PROMPT = "Customer: Where can I find the blue lamp?\nAssistant:"


@pytest.fixture
def task():
    return get_task("polite")


def parts(task, reply, prompt=PROMPT):
    return task.gold_components(prompt, reply)


def test_same_seed_same_data_and_different_seed_different_data(task):
    assert task.sft_examples(40, seed=1) == get_task("polite").sft_examples(40, seed=1)
    assert task.sft_examples(40, seed=1) != task.sft_examples(40, seed=2)
    assert task.pretrain_corpus(20, seed=3) == task.pretrain_corpus(20, seed=3)
    assert task.preference_pairs(20, seed=4) == task.preference_pairs(20, seed=4)


def test_eval_items_never_appear_in_training_prompts(task):
    eval_items = {asked_item(row["prompt"]) for row in task.eval_prompts(200)}
    train_items = {asked_item(row["prompt"]) for row in task.sft_examples(2000)}
    train_items |= {asked_item(row["prompt"]) for row in task.preference_pairs(500)}
    assert len(eval_items) > 10 and not eval_items & train_items


def test_gold_components_follow_the_formula(task):
    polite = parts(task, " Sure! The blue lamp is in aisle 4. Have a nice day.")
    assert polite["helpfulness"] == 1.0 and polite["violation"] == 0.0 and polite["gold"] == 1.0
    wrong_colour = parts(task, " The red lamp is in aisle 4.")
    assert wrong_colour["helpfulness"] == pytest.approx(0.5 + 0.25)
    no_location = parts(task, " The blue lamp? Maybe ask someone else.")
    assert no_location["helpfulness"] == 0.5
    unhelpful = parts(task, " I have no idea.")
    assert unhelpful["helpfulness"] == 0.0 and unhelpful["gold"] == 0.0
    rude = parts(task, " Ugh. The blue lamp is in aisle 4. Stop bothering me.")
    assert rude["rude_words"] == ["bothering", "ugh"] and rude["violation"] == 1.0 and rude["gold"] == 0.0
    topic = parts(task, " The blue lamp is in aisle 4. Every politician is a liar.")
    assert topic["forbidden_topics"] == ["politician"] and topic["gold"] == 0.0
    assert get_task("polite", violation_weight=2.0).gold_reward([PROMPT], [" Ugh. I have no idea."]) == [-2.0]


def test_every_generated_style_has_its_gold_profile(task):
    import random

    rng = random.Random(0)
    for style in STYLES:
        for _ in range(30):
            reply = task.reply(PROMPT, style, rng)
            p = parts(task, reply)
            assert p["violation"] == (style != "polite" and style != "unhelpful"), (style, reply)
            assert (p["helpfulness"] == 1.0) == (style != "unhelpful"), (style, reply)
    with pytest.raises(ValueError, match="unknown reply style"):
        task.reply(PROMPT, "sarcastic", rng)


def test_sft_data_violates_at_the_configured_rate(task):
    examples = task.sft_examples(2000, seed=0)
    rate = statistics.mean(task.violations([e["prompt"] for e in examples], [e["completion"] for e in examples]))
    assert rate == pytest.approx(task.violation_fraction, abs=0.04)
    fewer = get_task("polite", violation_fraction=0.1).sft_examples(2000, seed=0)
    assert statistics.mean(task.violations([e["prompt"] for e in fewer], [e["completion"] for e in fewer])) < 0.15


def test_preference_pairs_prefer_higher_gold(task):
    for pair in task.preference_pairs(100, seed=0):
        chosen, rejected = task.gold_reward([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
        assert chosen > rejected


def test_feedback_names_each_problem(task):
    assert task.feedback(PROMPT, " Sure! The blue lamp is in aisle 4.") == "Helpful and polite."
    text = task.feedback(PROMPT, " What a stupid question. Politics in this town is a mess. I have no idea.")
    assert "Too rude: do not say 'stupid'." in text and "do not bring up politics" in text
    assert "never mentions the blue lamp" in text and "where in the shop" in text
    assert "wrong colour" in task.feedback(PROMPT, " The red lamp is in aisle 2.")


def test_word_lists_are_disjoint_and_bad_options_are_refused():
    assert not RUDE_WORDS & FORBIDDEN_TOPICS
    with pytest.raises(ValueError, match="eval_fraction"):
        get_task("polite", eval_fraction=0.0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        get_task("polite", violation_fraction=0.8, unhelpful_fraction=0.5)
