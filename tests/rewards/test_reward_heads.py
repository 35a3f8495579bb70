"""The ensemble of reward heads on frozen features learns a preference, and its members disagree."""

import pytest

from checks import linear_preference_problem
from tandem.preference_data.acquisition import ensemble_disagreement
from tandem.rewards.reward_heads import EnsembleConfig, ensemble_accuracy, fit_ensemble


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_the_ensemble_learns_a_linear_preference_and_its_members_disagree(head):
    a, b, labels = linear_preference_problem(400)
    ensemble = fit_ensemble(a[:300], b[:300], labels[:300], EnsembleConfig(head=head, steps=200), seed=0)
    assert ensemble_accuracy(ensemble, a[300:], b[300:], labels[300:]) > 0.85
    probs = ensemble.preference_probs(a[300:], b[300:])
    assert probs.shape == (5, 100)
    assert float(ensemble_disagreement(probs).mean()) > 1e-5  # bootstrap + init make the members differ
