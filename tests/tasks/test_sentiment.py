"""SentimentTask: deterministic review data, held-out openings, and a gold scorer with anti-hacking penalties."""

import math
import statistics

import pytest

from tandem.tasks import get_task
from tandem.tasks.sentiment import review_words


@pytest.fixture
def task():
    return get_task("sentiment")


def gold(task, text):
    return task.gold_reward(["Review: The film"], [text])[0]


def mean_gold(task, examples):
    return statistics.mean(task.gold_reward([e["prompt"] for e in examples], [e["completion"] for e in examples]))


def test_same_seed_same_data_and_different_seed_different_data(task):
    assert task.sft_examples(50, seed=1) == task.sft_examples(50, seed=1)
    assert task.sft_examples(50, seed=1) != task.sft_examples(50, seed=2)
    assert task.pretrain_corpus(30, seed=3) == get_task("sentiment").pretrain_corpus(30, seed=3)
    assert task.preference_pairs(30, seed=4, label_noise=0.2) == task.preference_pairs(30, seed=4, label_noise=0.2)
    assert task.unpaired_examples(30, seed=4) == task.unpaired_examples(30, seed=4)
    assert task.eval_prompts(30, seed=5) != task.eval_prompts(30, seed=6)


def test_eval_openings_are_disjoint_from_training_openings(task):
    eval_prompts = {row["prompt"] for row in task.eval_prompts(2000)}
    train_prompts = {row["prompt"] for row in task.sft_examples(3000)}
    train_prompts |= {row["prompt"] for row in task.preference_pairs(2000)}
    train_prompts |= {row["prompt"] for row in task.unpaired_examples(1000)}
    assert len(eval_prompts) > 50
    assert not eval_prompts & train_prompts
    corpus = task.pretrain_corpus(2000)
    assert not any(doc.startswith(prompt + " ") for doc in corpus for prompt in list(eval_prompts)[:20])


def test_eval_prompts_are_distinct_while_the_held_out_set_lasts(task):
    rows = task.eval_prompts(60)
    assert len({row["prompt"] for row in rows}) == 60
    assert all(row["prompt"].startswith("Review: ") for row in rows)


def test_gold_orders_positive_above_neutral_above_negative(task):
    positive = gold(task, " was wonderful and the acting was brilliant. I loved the music.")
    neutral = gold(task, " was long and quiet. The story is set in a small town.")
    negative = gold(task, " was boring and the acting was awful. I hated the music.")
    assert positive > neutral > negative
    assert neutral == 0.0
    assert positive == pytest.approx(math.tanh(0.5 * 3))


def test_gold_penalises_repetition(task):
    natural = gold(task, " was great and the music was lovely.")
    repetitive = gold(task, " great great great great great great great great")
    assert repetitive < natural
    assert task.gold_components(" great great great great great great great great")["repetition_penalty"] > 0.5
    assert task.gold_components(" the film was great and the cast was fine")["repetition_penalty"] == 0.0


def test_gold_penalises_over_long_continuations(task):
    sentence = " It was great."
    rambling = sentence + " Then the story kept going on and on" * 8
    assert len(review_words(rambling)) > 25
    assert task.gold_components(rambling)["length_penalty"] > 0
    assert gold(task, rambling) < gold(task, sentence)


@pytest.mark.parametrize("text", ["", "   ", "!!!???", "#### 85", "\x00\u2603 zqxv blorp", "WONDERFUL!!! great,"])
def test_gold_is_finite_and_bounded_on_arbitrary_text(task, text):
    value = gold(task, text)
    assert math.isfinite(value) and -1.0 <= value <= 1.0


def test_gold_ignores_case_and_punctuation_and_empty_is_zero(task):
    assert gold(task, "") == 0.0
    assert gold(task, " WONDERFUL!!!") == gold(task, " wonderful")
    assert gold(task, " wonderful") > 0


def test_generated_continuations_are_natural_and_pay_no_penalty(task):
    for example in task.sft_examples(500):
        components = task.gold_components(example["completion"])
        assert 8 <= len(review_words(example["completion"])) <= 20
        assert components["repetition_penalty"] == 0.0 and components["length_penalty"] == 0.0


def test_sft_is_mixed_quality_and_better_than_pretraining_text(task):
    examples = task.sft_examples(3000)
    rewards = task.gold_reward([e["prompt"] for e in examples], [e["completion"] for e in examples])
    assert abs(sum(r <= 0 for r in rewards) / len(rewards) - 0.3) < 0.04
    cleaner = get_task("sentiment", negative_fraction=0.0).sft_examples(500)
    assert all(r > 0 for r in task.gold_reward([e["prompt"] for e in cleaner], [e["completion"] for e in cleaner]))
    assert mean_gold(task, examples) > 0.3


def test_pretraining_corpus_is_roughly_sentiment_balanced(task):
    documents = task.pretrain_corpus(1500)
    assert all(doc.startswith("Review: ") for doc in documents)
    rewards = [gold(task, doc) for doc in documents]
    assert abs(statistics.mean(rewards)) < 0.1
    assert 0.2 < sum(r > 0 for r in rewards) / len(rewards) < 0.45
    assert 0.2 < sum(r < 0 for r in rewards) / len(rewards) < 0.45


def test_preference_pairs_rank_by_gold_and_flip_with_label_noise(task):
    clean = task.preference_pairs(500)
    prompts = [p["prompt"] for p in clean]
    chosen, rejected = task.gold_reward(prompts, [p["chosen"] for p in clean]), task.gold_reward(prompts, [p["rejected"] for p in clean])
    assert all(c > r for c, r in zip(chosen, rejected))
    noisy = task.preference_pairs(2000, seed=0, label_noise=0.3)
    prompts = [p["prompt"] for p in noisy]
    chosen, rejected = task.gold_reward(prompts, [p["chosen"] for p in noisy]), task.gold_reward(prompts, [p["rejected"] for p in noisy])
    assert abs(sum(c < r for c, r in zip(chosen, rejected)) / 2000 - 0.3) < 0.04


def test_unpaired_labels_follow_gold_sign(task):
    examples = task.unpaired_examples(400)
    rewards = task.gold_reward([e["prompt"] for e in examples], [e["completion"] for e in examples])
    assert [e["label"] for e in examples] == [r > 0 for r in rewards]
    assert 0.2 < sum(e["label"] for e in examples) / 400 < 0.8
