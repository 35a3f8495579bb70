"""Acquisition rules against their formulas and brute-force loops, and batch selection."""

import math

import pytest
import torch

from tandem.preference_data.acquisition import (
    ACQUISITION_RULES,
    acquisition_scores,
    bald,
    binary_entropy,
    ensemble_disagreement,
    predictive_entropy,
    select_batch,
)


def h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -p * math.log(p) - (1 - p) * math.log(1 - p)


MEMBER_PROBS = torch.tensor([[0.9, 0.5, 0.5, 0.2, 1.0], [0.1, 0.5, 0.6, 0.3, 1.0], [0.8, 0.5, 0.4, 0.25, 0.0]])


def test_binary_entropy_matches_the_formula_including_the_ends():
    p = torch.tensor([0.0, 0.1, 0.5, 0.73, 1.0])
    assert torch.allclose(binary_entropy(p), torch.tensor([h(float(x)) for x in p]), atol=1e-6)


def test_disagreement_entropy_and_bald_match_brute_force_loops():
    k, n = MEMBER_PROBS.shape
    for j in range(n):
        column = [float(MEMBER_PROBS[i, j]) for i in range(k)]
        mean = sum(column) / k
        variance = sum((p - mean) ** 2 for p in column) / k
        assert ensemble_disagreement(MEMBER_PROBS)[j] == pytest.approx(variance, abs=1e-6)
        assert predictive_entropy(MEMBER_PROBS)[j] == pytest.approx(h(mean), abs=1e-6)
        assert bald(MEMBER_PROBS)[j] == pytest.approx(h(mean) - sum(h(p) for p in column) / k, abs=1e-6)


def test_bald_ignores_pairs_every_member_finds_a_coin_flip_but_entropy_does_not():
    probs = torch.tensor([[0.5, 0.95], [0.5, 0.05]])  # pair 0: all unsure (noise); pair 1: confident members disagree
    assert bald(probs)[0] == pytest.approx(0.0, abs=1e-7)
    assert bald(probs)[1] > 0.4
    assert float(predictive_entropy(probs)[0]) == pytest.approx(float(predictive_entropy(probs)[1]), abs=1e-6)  # entropy cannot tell them apart
    assert (bald(MEMBER_PROBS) >= -1e-7).all()


def test_rules_are_registered_and_unknown_ones_are_named():
    assert {"random", "disagreement", "entropy", "bald"} <= set(ACQUISITION_RULES)
    first = acquisition_scores("random", MEMBER_PROBS, torch.Generator().manual_seed(3))
    again = acquisition_scores("random", MEMBER_PROBS, torch.Generator().manual_seed(3))
    assert first.shape == (5,) and torch.equal(first, again)
    with pytest.raises(ValueError, match="unknown acquisition rule 'nope'.*bald"):
        acquisition_scores("nope", MEMBER_PROBS, torch.Generator())
    with pytest.raises(ValueError, match="members, pairs"):
        acquisition_scores("bald", MEMBER_PROBS[0], torch.Generator())


def test_select_batch_takes_the_best_unlabelled_pairs():
    scores = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.95])
    labelled = torch.tensor([False, False, False, False, True])
    assert select_batch(scores, labelled, 2).tolist() == [0, 2]
    assert sorted(select_batch(scores, labelled, 10).tolist()) == [0, 1, 2, 3]
