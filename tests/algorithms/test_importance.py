"""Truncated importance sampling and the sampler/trainer gap, against their formulas."""

import math

import pytest
import torch

from tandem.algorithms.importance import logprob_gap, truncated_importance_weights


def test_truncated_weights_follow_the_formula_token_by_token():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -4.0]], requires_grad=True)
    sampler = torch.tensor([[-1.5, -1.0, -0.5], [-0.5, -2.0, -4.2]])
    weights = truncated_importance_weights(old, sampler, cap=2.0)
    for i in range(2):
        for t in range(3):
            expected = min(math.exp(float(old[i, t]) - float(sampler[i, t])), 2.0)
            assert weights[i, t].item() == pytest.approx(expected, rel=1e-6)
    assert not weights.requires_grad  # a weight, not a path for the gradient


def test_equal_log_probs_give_weight_one_and_a_bad_cap_fails():
    logp = torch.randn(3, 5)
    assert torch.equal(truncated_importance_weights(logp, logp, cap=2.0), torch.ones(3, 5))
    with pytest.raises(ValueError):
        truncated_importance_weights(logp, logp, cap=0.0)


def test_gap_is_the_masked_sum_of_absolute_differences():
    train = torch.tensor([[-1.0, -2.0, 9.0]])
    sampler = torch.tensor([[-1.5, -1.0, 0.0]])
    total, count = logprob_gap(train, sampler, torch.tensor([[1, 1, 0]]))
    assert (total, count) == (pytest.approx(1.5), 2.0)
