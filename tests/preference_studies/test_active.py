"""The labelling loop of active learning, its summaries, and `tandem active` end to end."""

import json

import pytest
from pydantic import ValidationError

from checks import linear_preference_problem
from tandem.rewards.reward_heads import EnsembleConfig
from tandem.preference_studies.active import ActiveConfig, labelling_curve, labels_to_reach, run_active_study, summarise_curves


def test_labels_to_reach_is_the_first_crossing():
    assert labels_to_reach([16, 32, 48, 64], [0.6, 0.81, 0.79, 0.9], 0.8) == 32
    assert labels_to_reach([16, 32], [0.6, 0.7], 0.8) is None


def test_labelling_loop_asks_only_about_picked_pairs_and_improves():
    a, b, labels = linear_preference_problem(600, seed=1)
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
