"""Acquisition rules against their formulas, the reward-head ensemble, and the labelling loop."""

import json
import math

import pytest
import torch
from pydantic import ValidationError

from tandem.preference_data.acquisition import (
    ACQUISITION_RULES,
    acquisition_scores,
    bald,
    binary_entropy,
    ensemble_disagreement,
    predictive_entropy,
    select_batch,
)
from tandem.preference_data.labels import draw_labels, gold_judge
from tandem.preference_data.reward_heads import EnsembleConfig, ensemble_accuracy, fit_ensemble
from tandem.preference_studies.active import ActiveConfig, labelling_curve, labels_to_reach, run_active_study, summarise_curves


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


def test_labels_to_reach_is_the_first_crossing():
    assert labels_to_reach([16, 32, 48, 64], [0.6, 0.81, 0.79, 0.9], 0.8) == 32
    assert labels_to_reach([16, 32], [0.6, 0.7], 0.8) is None


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


def linear_problem(n: int, dim: int = 8, seed: int = 0):
    """Pairs of random features, labelled by a hidden linear reward."""
    generator = torch.Generator().manual_seed(seed)
    a, b, w = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator), torch.randn(dim, generator=generator)
    return a, b, ((a - b) @ w > 0).float()


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_the_ensemble_learns_a_linear_preference_and_its_members_disagree(head):
    a, b, labels = linear_problem(400)
    ensemble = fit_ensemble(a[:300], b[:300], labels[:300], EnsembleConfig(head=head, steps=200), seed=0)
    assert ensemble_accuracy(ensemble, a[300:], b[300:], labels[300:]) > 0.85
    probs = ensemble.preference_probs(a[300:], b[300:])
    assert probs.shape == (5, 100)
    assert float(ensemble_disagreement(probs).mean()) > 1e-5  # bootstrap + init make the members differ


def test_labelling_loop_asks_only_about_picked_pairs_and_improves():
    a, b, labels = linear_problem(600, seed=1)
    pool_a, pool_b, pool_labels = a[:400], b[:400], labels[:400]
    asked: list[int] = []

    def oracle(indices):
        asked.extend(indices)
        return pool_labels[indices]

    curve = labelling_curve(pool_a, pool_b, oracle, a[400:], b[400:], labels[400:], "bald", seed_size=8, batch_size=8,
                            budget=64, ensemble=EnsembleConfig(steps=100), seed=0)
    assert curve["labels"] == list(range(8, 65, 8))
    assert asked == curve["picked"] and len(set(asked)) == 64
    assert curve["accuracy"][-1] > curve["accuracy"][0] + 0.1
    other = labelling_curve(pool_a, pool_b, lambda i: pool_labels[i], a[400:], b[400:], labels[400:], "random", seed_size=8,
                            batch_size=8, budget=16, ensemble=EnsembleConfig(steps=10), seed=0)
    assert other["picked"][:8] == curve["picked"][:8]  # every rule starts from the same seed set
    with pytest.raises(ValueError, match="seed_size"):
        labelling_curve(pool_a, pool_b, oracle, a, b, labels, "random", seed_size=0, batch_size=8, budget=16,
                        ensemble=EnsembleConfig(), seed=0)


def test_summary_counts_labels_and_savings_paired_by_seed():
    curves = {
        "random": [{"labels": [10, 20, 30], "accuracy": [0.5, 0.7, 0.9]}, {"labels": [10, 20, 30], "accuracy": [0.5, 0.6, 0.85]}],
        "bald": [{"labels": [10, 20, 30], "accuracy": [0.5, 0.9, 0.9]}, {"labels": [10, 20, 30], "accuracy": [0.5, 0.6, 0.7]}],
    }
    summary = summarise_curves(curves, target=0.8)
    assert summary["random"]["labels_needed"] == [30, 30] and summary["random"]["mean_labels_needed"] == 30
    assert summary["bald"]["labels_needed"] == [20, None] and summary["bald"]["seeds_reaching_target"] == 1
    assert summary["bald"]["labels_saved_vs_random"] == pytest.approx(1 - 20 / 30)
    assert summary["bald"]["final_accuracy"] == pytest.approx(0.8)


def test_config_rejects_unknown_rules_and_impossible_budgets():
    with pytest.raises(ValidationError, match="unknown acquisition rule"):
        ActiveConfig(rules="random,oracle")
    with pytest.raises(ValidationError, match="budget"):
        ActiveConfig(n_pool=100, budget=200)
    assert ActiveConfig(rules=" bald , random").rules == "bald,random"


@pytest.mark.e2e
def test_active_study_writes_curves_table_and_plot(tmp_path, tiny_model_dir):
    config = ActiveConfig(out=tmp_path / "active", model=tiny_model_dir, n_pool=240, n_test=120, rules="random,bald",
                          seeds=2, seed_size=16, budget=96, batch_size=16, head_steps=80, target_accuracy=0.7, progress=False)
    result = run_active_study(config)
    for name in ("results.json", "report.md", "active_learning.png"):
        assert (tmp_path / "active" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "active" / "results.json").read_text())
    assert set(saved["curves"]) == {"random", "bald"} and len(saved["curves"]["bald"]) == 2
    for runs in result["curves"].values():
        for run in runs:
            assert run["labels"][0] == 16 and run["labels"][-1] == 96
    # even a random model's token embeddings carry the words: labels must beat the 16-label start
    first = sum(run["accuracy"][0] for runs in result["curves"].values() for run in runs) / 4
    last = sum(run["accuracy"][-1] for runs in result["curves"].values() for run in runs) / 4
    assert last > first + 0.05 and last > 0.6
    assert "| bald |" in (tmp_path / "active" / "report.md").read_text()


def test_a_tandem_judge_object_labels_pairs_through_its_compare_verdicts():
    from tandem.preference_data.labels import pairwise
    from tandem.judges.function import FunctionJudge

    judge = FunctionJudge(score=lambda prompts, responses: [min(len(r) / 10, 1.0) for r in responses])
    assert pairwise(judge)(["p", "p"], ["long answer", "a"], ["short", "longer one"]) == pytest.approx([0.75, 0.05])
    plain = gold_judge(type("T", (), {"gold_reward": lambda self, p, c: [0.0] * len(c)})())
    assert pairwise(plain) is plain
