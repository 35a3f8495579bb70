"""AI preference labels: agreement with gold, preference rows, ensembles, and position-swap averaging."""

import itertools
import math
import random

import pytest
import torch

from tandem.preference_data.labels import (
    draw_labels,
    ensemble_probabilities,
    gold_judge,
    label_agreement,
    pairwise,
    preference_rows,
    verdict_probabilities,
)
from tandem.judges import FunctionJudge


def brute_force_agreement(probabilities, gold_a, gold_b):
    decided = [(p, a, b) for p, a, b in zip(probabilities, gold_a, gold_b) if a != b and p is not None and p != 0.5]
    return sum((p > 0.5) == (a > b) for p, a, b in decided) / len(decided)


def test_agreement_matches_a_brute_force_count():
    rng = random.Random(0)
    probabilities = [rng.choice([None, 0.5, rng.random()]) for _ in range(300)]
    gold_a = [rng.choice([0.0, 0.5, 1.0]) for _ in range(300)]
    gold_b = [rng.choice([0.0, 0.5, 1.0]) for _ in range(300)]
    result = label_agreement(probabilities, gold_a, gold_b)
    assert result["agreement"] == pytest.approx(brute_force_agreement(probabilities, gold_a, gold_b))
    gold_decided = sum(a != b for a, b in zip(gold_a, gold_b))
    assert result["n_gold_decided"] == gold_decided
    assert result["n_ai_decided"] + result["unusable"] + result["ai_ties"] == gold_decided
    assert result["coverage"] == pytest.approx(result["n_ai_decided"] / gold_decided)


def test_agreement_extremes():
    assert label_agreement([0.9, 0.2], [1, 0], [0, 1])["agreement"] == 1.0
    assert label_agreement([0.1, 0.8], [1, 0], [0, 1])["agreement"] == 0.0
    nothing = label_agreement([None, 0.5], [1, 0], [0, 1])
    assert nothing["unusable"] == 1 and nothing["ai_ties"] == 1 and nothing["coverage"] == 0.0


def test_preference_rows_follow_the_label_and_drop_unusable_ties_and_duplicates():
    rows = preference_rows(["p"] * 5, ["a1", "a2", "a3", "a4", "same"], ["b1", "b2", "b3", "b4", "same"],
                           [0.8, 0.3, None, 0.5, 0.9])
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a1", "b1"), ("b2", "a2")]
    assert rows[1]["ai_probability"] == pytest.approx(0.7)
    assert len(preference_rows(["p", "p"], ["a", "c"], ["b", "d"], [0.55, 0.9], min_confidence=0.1)) == 1


def test_ensemble_averages_the_usable_members():
    assert ensemble_probabilities([[0.2, None, None], [0.6, 0.9, None]]) == [pytest.approx(0.4), 0.9, None]
    with pytest.raises(ValueError, match="different numbers"):
        ensemble_probabilities([[0.1], [0.1, 0.2]])
    with pytest.raises(ValueError, match="at least one"):
        ensemble_probabilities([])


def test_both_orders_cancel_a_judge_that_prefers_the_first_position():
    # P(first better) = 0.5 + 0.3 (position bias) + 0.1 * (len(first) - len(second)) clipped
    def biased(prompts, first, second):
        return [min(1.0, max(0.0, 0.8 + 0.1 * (len(f) - len(s)))) for f, s in zip(first, second)]

    one_order = FunctionJudge(compare=biased, both_orders=False)
    both = FunctionJudge(compare=biased, both_orders=True)
    a, b = ["xx", "x"], ["x", "xx"]
    assert verdict_probabilities(one_order, ["p", "p"], a, b) == [pytest.approx(0.9), pytest.approx(0.7)]  # both say "a"
    debiased = verdict_probabilities(both, ["p", "p"], a, b)
    assert debiased == [pytest.approx(0.6), pytest.approx(0.4)]  # (p_ab + 1 - p_ba) / 2: the bias is gone
    for (x, y) in itertools.permutations(["x", "xx", "xxx"], 2):
        assert verdict_probabilities(both, ["p"], [x], [y])[0] == pytest.approx(1 - verdict_probabilities(both, ["p"], [y], [x])[0])


def test_unusable_verdicts_stay_none_and_are_counted():
    judge = FunctionJudge(score=lambda prompts, responses: [None if "?" in r else 0.7 for r in responses])
    assert verdict_probabilities(judge, ["p", "p"], ["ok", "??"], ["fine", "fine"]) == [0.5, None]
    assert judge.stats.n_unusable == 1


def test_one_rule_for_unusable_verdicts_wherever_labels_are_made():
    """`pairwise` (the labeller of synthetic pairs and active learning) follows the same rule as the AI labels: an
    unusable verdict is None, never a label, so `label_pairs` drops the pair even when ties are kept."""
    from tandem.preference_data.labels import label_pairs

    judge = FunctionJudge(score=lambda prompts, responses: [None if "?" in r else float("long" in r) for r in responses])
    pairs = [{"prompt": "p", "a": "long answer", "b": "short"}, {"prompt": "p", "a": "what??", "b": "fine"}]
    probabilities = pairwise(judge)([p["prompt"] for p in pairs], [p["a"] for p in pairs], [p["b"] for p in pairs])
    assert probabilities[1] is None and probabilities == verdict_probabilities(
        judge, ["p", "p"], [p["a"] for p in pairs], [p["b"] for p in pairs])
    for drop_ties in (True, False):
        records = label_pairs(pairs, pairwise(judge), torch.Generator().manual_seed(0), drop_ties=drop_ties)
        assert [r["chosen"] for r in records] == ["long answer"]
    assert preference_rows(["p", "p"], [p["a"] for p in pairs], [p["b"] for p in pairs], probabilities)[0]["chosen"] == "long answer"


def test_judges_and_labels():
    class Task:
        def gold_reward(self, prompts, completions):
            return [float(len(c)) for c in completions]

    assert gold_judge(Task())(["", "", ""], ["aa", "a", "b"], ["a", "aa", "c"]) == [1.0, 0.0, 0.5]
    noisy = gold_judge(Task(), temperature=2.0)(["", ""], ["aaa", "a"], ["a", "aaa"])
    assert noisy[0] == pytest.approx(1 / (1 + math.exp(-1.0))) and noisy[0] + noisy[1] == pytest.approx(1.0)
    labels = draw_labels([1.0, 0.0] * 50, torch.Generator().manual_seed(0))
    assert labels.tolist() == [1.0, 0.0] * 50
    with pytest.raises(ValueError, match="probabilities"):
        draw_labels([1.5], torch.Generator())


def test_a_tandem_judge_object_labels_pairs_through_its_compare_verdicts():
    judge = FunctionJudge(score=lambda prompts, responses: [min(len(r) / 10, 1.0) for r in responses])
    assert pairwise(judge)(["p", "p"], ["long answer", "a"], ["short", "longer one"]) == pytest.approx([0.75, 0.05])
    plain = gold_judge(type("T", (), {"gold_reward": lambda self, p, c: [0.0] * len(c)})())
    assert pairwise(plain) is plain
