import numpy as np
import pytest

from tandem.rewards.ensemble import (
    COMBINERS,
    ClippedReward,
    EnsembleReward,
    clip_rewards,
    combine_scores,
)
from tandem.rewards import RewardSource, WeightedSum

# three members (rows) scoring two samples (columns)
SCORES = np.array([[1.0, -2.0], [3.0, 0.0], [2.0, 5.0]])


def test_combiners_match_hand_computation():
    assert combine_scores("mean", SCORES).tolist() == pytest.approx([2.0, 1.0])
    assert combine_scores("worst_case", SCORES).tolist() == [1.0, -2.0]
    # population variances: (1 + 1 + 0) / 3 = 2/3 and (9 + 1 + 16) / 3 = 26/3
    uwo = combine_scores("uncertainty_weighted", SCORES, lam=0.5)
    assert uwo.tolist() == pytest.approx([2.0 - 0.5 * 2 / 3, 1.0 - 0.5 * 26 / 3])
    assert combine_scores("uncertainty_weighted", SCORES, lam=0.0).tolist() == pytest.approx([2.0, 1.0])
    assert set(COMBINERS) == {"mean", "worst_case", "uncertainty_weighted"}


def test_combiner_errors_are_clear():
    with pytest.raises(ValueError, match="known: mean"):
        combine_scores("median", SCORES)
    with pytest.raises(ValueError, match="members, samples"):
        combine_scores("mean", [1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        combine_scores("uncertainty_weighted", SCORES, lam=-1)


def test_clip_rewards():
    assert clip_rewards([-3.0, 0.5, 4.0], low=-1.0, high=2.0).tolist() == [-1.0, 0.5, 2.0]
    assert clip_rewards([-3.0, 4.0], high=1.0).tolist() == [-3.0, 1.0]
    with pytest.raises(ValueError, match="reversed"):
        clip_rewards([0.0], low=2.0, high=1.0)


def member(column):
    def score(prompts, completions, **_):
        return [None if SCORES[column, i] == 99 else float(SCORES[column, i]) for i in range(len(completions))]

    score.__qualname__ = f"member{column}"
    return score


def test_ensemble_reward_is_a_reward_source_and_combines_members():
    ensemble = EnsembleReward([member(0), member(1), member(2)], combine="worst_case")
    assert isinstance(ensemble, RewardSource)
    assert ensemble(["p", "p"], ["a", "b"]) == [1.0, -2.0]
    assert "worst_case" in ensemble.name and "member0" in ensemble.name
    # an ensemble inside tandem's WeightedSum works like any source
    assert WeightedSum([(2.0, ensemble)])(["p", "p"], ["a", "b"]) == [2.0, -4.0]
    uwo = EnsembleReward([member(0), member(1), member(2)], combine="uncertainty_weighted", lam=1.0)
    assert uwo(["p", "p"], ["a", "b"]) == pytest.approx([2.0 - 2 / 3, 1.0 - 26 / 3])


def test_ensemble_calibration_standardises_each_member():
    ensemble = EnsembleReward([member(0), member(2)], combine="mean").calibrate(["p", "p"], ["a", "b"])
    # member 0: mean -0.5, std 1.5 -> (1, -2) becomes (1, -1); member 2: mean 3.5, std 1.5 -> (-1, 1)
    assert np.allclose(ensemble.member_scores(["p", "p"], ["a", "b"]), [[1.0, -1.0], [-1.0, 1.0]])
    assert ensemble(["p", "p"], ["a", "b"]) == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        ensemble.set_normalisation([0.0, 0.0], [1.0, 0.0])


def test_members_returning_none_are_left_out():
    def partial(prompts, completions, **_):
        return [None, 7.0]

    def absent(prompts, completions, **_):
        return [None, None]

    assert EnsembleReward([member(0), partial], combine="mean")(["p", "p"], ["a", "b"]) == [1.0, 2.5]
    assert EnsembleReward([absent], combine="mean")(["p", "p"], ["a", "b"]) == [None, None]


def test_clipped_reward_source():
    clipped = ClippedReward(member(2), high=3.0)
    assert isinstance(clipped, RewardSource)
    assert clipped(["p", "p"], ["a", "b"]) == [2.0, 3.0]
    assert ClippedReward(lambda p, c, **_: [None, -5.0], low=-1.0)(["p", "p"], ["a", "b"]) == [None, -1.0]
    with pytest.raises(ValueError, match="bound"):
        ClippedReward(member(0))
