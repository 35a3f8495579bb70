"""Pure pieces of judging: label-probability reading, text parsing, combining both orders, score-based comparison."""

import itertools
import math
import random

import pytest

from tandem.judges import Verdict, combine_orders, compare_from_scores, position_only, swap_average, swap_log_odds
from tandem.judges.reading import (
    expected_label_value,
    find_verdict,
    label_probabilities_from_top_logprobs,
    token_at_offset,
)


def test_expected_label_value_is_the_renormalised_weighted_mean():
    rng = random.Random(0)
    for _ in range(50):
        probabilities = [rng.random() * 0.1 for _ in range(10)]
        values = [k / 9 for k in range(10)]
        value, mass = expected_label_value(probabilities, values)
        brute = sum(p / sum(probabilities) * v for p, v in zip(probabilities, values))
        assert value == pytest.approx(brute, abs=1e-12) and mass == pytest.approx(sum(probabilities))
    assert expected_label_value([0.3, 0.1], [1.0, 0.0])[0] == pytest.approx(0.75)  # P(A) / (P(A) + P(B))
    assert expected_label_value([0.0, 0.0], [1.0, 0.0]) == (None, 0.0)
    with pytest.raises(ValueError):
        expected_label_value([0.5], [1.0, 0.0])


def test_swap_average_matches_its_formula_and_cancels_a_pure_position_bias():
    for p_ab, p_ba in itertools.product([0.0, 0.2, 0.5, 0.9, 1.0], repeat=2):
        assert swap_average(p_ab, p_ba) == pytest.approx((p_ab + 1 - p_ba) / 2)
    # a judge that prefers whatever is shown first by +0.15 on top of a true preference q for a (never clipped at 1)
    for q in (0.2, 0.5, 0.8):
        biased_ab, biased_ba = q + 0.15, (1 - q) + 0.15
        assert max(biased_ab, biased_ba) < 1
        assert swap_average(biased_ab, biased_ba) == pytest.approx(q)
    assert swap_average(1.0, 1.0) == 0.5  # always answers "first": no information left


def test_combine_orders_keeps_both_parts_and_propagates_an_unusable_order():
    good, also = Verdict(0.8, raw="A"), Verdict(0.4, raw="A?")
    combined = combine_orders(good, also)
    assert combined.value == pytest.approx((0.8 + 1 - 0.4) / 2) and combined.parts == (good, also)
    assert combined.usable and combined.method == "both_orders"
    broken = combine_orders(good, Verdict(None, reason="timeout", detail="no reply"))
    assert broken.value is None and broken.reason == "timeout" and "b first" in broken.detail


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_swap_log_odds_matches_its_formula_and_cancels_a_constant_log_odds_bias_exactly():
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for p_ab, p_ba in itertools.product([0.01, 0.2, 0.5, 0.9, 0.999], repeat=2):
        assert swap_log_odds(p_ab, p_ba) == pytest.approx(sigmoid((logit(p_ab) - logit(p_ba)) / 2), abs=1e-12)
    rng = random.Random(2)
    for _ in range(200):
        s, b = rng.uniform(-3, 3), rng.uniform(-8, 8)  # content log-odds for a, positional bias toward "first shown"
        p_ab, p_ba = sigmoid(s + b), sigmoid(-s + b)
        assert swap_log_odds(p_ab, p_ba) == pytest.approx(sigmoid(s), abs=1e-9)
        assert (swap_log_odds(p_ab, p_ba) > 0.5) == (swap_average(p_ab, p_ba) > 0.5)  # the same winner
    p_ab, p_ba = sigmoid(1 + 5), sigmoid(-1 + 5)  # a judge that answers "A" whatever it is shown
    assert swap_log_odds(p_ab, p_ba) == pytest.approx(sigmoid(1)) and abs(swap_average(p_ab, p_ba) - 0.5) < 0.01


def test_swap_log_odds_stays_finite_when_both_orders_saturate():
    assert swap_log_odds(1.0, 1.0) == 0.5 and swap_log_odds(0.0, 0.0) == 0.5  # one position always: no information
    assert swap_log_odds(1.0, 0.0) > 1 - 1e-8 and swap_log_odds(0.0, 1.0) < 1e-8
    assert swap_log_odds(1.0, 0.5) > 0.99


def test_position_only_names_the_position_that_won_both_orders():
    assert position_only(0.9, 0.8) == "first" and position_only(0.1, 0.4) == "second"
    assert position_only(0.9, 0.2) is None and position_only(0.5, 0.9) is None  # consistent, or a tie in one order


def test_combine_orders_reads_the_named_calibration():
    first, swapped = Verdict(0.99), Verdict(0.98)
    assert combine_orders(first, swapped, "log_odds").value == pytest.approx(swap_log_odds(0.99, 0.98))
    assert combine_orders(first, swapped).value == pytest.approx(swap_average(0.99, 0.98))
    with pytest.raises(KeyError):
        combine_orders(first, swapped, "median")


def test_compare_from_scores_is_antisymmetric_and_bounded():
    rng = random.Random(1)
    for _ in range(100):
        a, b = rng.random(), rng.random()
        p = compare_from_scores(a, b)
        assert 0 <= p <= 1 and p == pytest.approx(1 - compare_from_scores(b, a))
    assert compare_from_scores(0.3, 0.3) == 0.5 and compare_from_scores(1, 0) == 1


@pytest.mark.parametrize("text, label", [
    ("Verdict: A", "A"), ("The first is better.\nVerdict: (B)", "B"), ("verdict: **7**", "7"),
    ("A", "A"), ("  B is better", "B"), ("Verdict: 10", "10"), ("Reasoning... Verdict: A. Wait, Verdict: B", "B"),
])
def test_find_verdict_reads_the_label_after_the_last_prefix(text, label):
    labels = [str(k) for k in range(11)] if label.isdigit() else ["A", "B"]
    found = find_verdict(text, labels, "Verdict:")
    assert found is not None and found[0] == label and text[found[1] : found[1] + len(label)] == label


@pytest.mark.parametrize("text", ["Absolutely the first", "Verdict: C", "", "I cannot decide.", "Verdict: maybe A"])
def test_find_verdict_refuses_text_without_a_clean_label(text):
    assert find_verdict(text, ["A", "B"], "Verdict:") is None


def test_label_probabilities_add_token_spellings_and_locate_tokens():
    top = [(" A", math.log(0.5)), ("A", math.log(0.1)), (" B", math.log(0.2)), (" the", math.log(0.1))]
    assert label_probabilities_from_top_logprobs(top, ["A", "B"]) == pytest.approx([0.6, 0.2])
    tokens = ["Verdict", ":", " A", "\n"]
    assert token_at_offset(tokens, len("Verdict: ")) == 2 and token_at_offset(tokens, 100) is None
