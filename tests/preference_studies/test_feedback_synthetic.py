"""Corruptions, labelling of synthetic pairs, and the synthetic-preference and transfer studies end to end."""

import json
import random

import pytest
import torch
from pydantic import ValidationError

from tandem.preference_data.labels import label_pairs, rule_judge
from tandem.preference_data.synthetic_pairs import (
    CORRUPTIONS,
    corruption_pairs,
    replace_words,
    rule_agreement,
    shuffle_words,
    truncate_words,
)
from tandem.preference_studies.measure import rm_steps
from tandem.preference_studies.synthetic import SyntheticConfig, run_synthetic_study
from tandem.preference_studies.transfer import TransferConfig, preference_agreement, run_transfer_study
from tandem.specs import parse_options
from tandem.tasks import get_task

TEXT = " I loved the music and the story was wonderful."


def test_shuffle_keeps_the_words_in_another_order():
    shuffled = shuffle_words(TEXT, random.Random(0))
    assert shuffled != TEXT and shuffled.startswith(" ")
    assert sorted(shuffled.split()) == sorted(TEXT.split())
    assert shuffle_words(" great great", random.Random(0)) == " great great"  # no other order exists


def test_truncate_keeps_a_strict_prefix():
    for seed in range(20):
        cut = truncate_words(TEXT, random.Random(seed)).split()
        assert 1 <= len(cut) < len(TEXT.split()) and cut == TEXT.split()[: len(cut)]


def test_replace_changes_the_requested_share_of_positions():
    vocabulary = ["boring", "dull", "music", "night"]
    words = TEXT.split()
    for seed in range(20):
        replaced = replace_words(TEXT, random.Random(seed), vocabulary, fraction=0.3).split()
        changed = [i for i, (a, b) in enumerate(zip(words, replaced)) if a != b]
        assert len(replaced) == len(words) and len(changed) == round(0.3 * len(words))
        assert all(replaced[i] in vocabulary for i in changed)


def test_corruption_pairs_take_kinds_in_turn_and_reject_unknown_ones():
    rows = [{"prompt": f"Review {i}:", "completion": TEXT} for i in range(6)]
    pairs = corruption_pairs(rows, ["shuffle", "truncate", "replace"], seed=0)
    assert [p["method"] for p in pairs[:3]] == ["corrupt:shuffle", "corrupt:truncate", "corrupt:replace"]
    assert all(p["a"] == TEXT and p["b"] != TEXT for p in pairs)
    assert set(CORRUPTIONS) >= {"shuffle", "truncate", "replace"}
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption_pairs(rows, ["melt"], seed=0)


def test_label_pairs_follows_the_judge_and_drops_identical_empty_and_tied_pairs():
    pairs = [{"prompt": "p", "a": " x", "b": " y"}, {"prompt": "p", "a": " same", "b": "same "}, {"prompt": "p", "a": " u", "b": " v"},
             {"prompt": "p", "a": " w", "b": ""}]
    records = label_pairs(pairs, rule_judge, torch.Generator().manual_seed(0))
    assert [(r["chosen"], r["rejected"]) for r in records] == [(" x", " y"), (" u", " v")]
    flipped = label_pairs(pairs, lambda p, a, b: [0.0] * len(p), torch.Generator())
    assert [(r["chosen"], r["rejected"]) for r in flipped] == [(" y", " x"), (" v", " u")]
    assert label_pairs(pairs, lambda p, a, b: [0.5] * len(p), torch.Generator()) == []


def test_rule_agreement_against_gold():
    task = get_task("sentiment")
    pairs = [{"prompt": "Review: It", "a": " was wonderful.", "b": " was awful."},
             {"prompt": "Review: It", "a": " was awful.", "b": " was great."},
             {"prompt": "Review: It", "a": " was long.", "b": " was short."}]  # a gold tie: left out
    assert rule_agreement(pairs, task) == pytest.approx(0.5)


def test_options_are_parsed_and_validated():
    assert parse_options(TransferConfig().target_options, "target") == {"max_natural_words": 12,
                                                                         "length_penalty_per_word": 0.1}
    with pytest.raises(ValidationError, match="key=value"):
        TransferConfig(target_options="max_natural_words")
    with pytest.raises(ValidationError, match="ks"):
        TransferConfig(ks="16,x")
    with pytest.raises(ValidationError, match="unknown methods"):
        SyntheticConfig(methods="corrupt,dream")
    assert rm_steps(16, 16, epochs=8, min_steps=20) == 20 and rm_steps(256, 16, epochs=8, min_steps=20) == 128


def test_the_concise_target_disagrees_with_plain_sentiment_on_some_pairs():
    source, target = get_task("sentiment"), get_task("sentiment", **parse_options(TransferConfig().target_options, "target"))
    agreement = preference_agreement(source, target, target.preference_pairs(300, seed=1, held_out=True))
    assert 0.5 < agreement < 0.97  # related (mostly agree) but a different preference


@pytest.mark.e2e
def test_synthetic_study_measures_against_gold_and_no_training(tmp_path, smoke_pipeline):
    out, _ = smoke_pipeline
    config = SyntheticConfig(out=tmp_path / "synth", policy=out / "sft" / "model", earlier=out / "pretrain" / "model",
                             n_pairs=64, n_test=128, rm_epochs=4, mixed_precision="no")
    result = run_synthetic_study(config)
    rows = {row["source"]: row for row in result["rows"]}
    assert set(rows) == {"corrupt/rule", "temperature/rule", "checkpoint/rule", "gold (task pairs)", "none (untrained head)"}
    for method in ("corrupt", "temperature", "checkpoint"):
        pairs = [json.loads(line) for line in (tmp_path / "synth" / f"pairs_{method}_rule.jsonl").read_text().splitlines()]
        assert 0 < len(pairs) <= 64 and all(p["chosen"] != p["rejected"] for p in pairs)
    # training on gold-labelled pairs must beat the untrained head it started from
    assert rows["gold (task pairs)"]["accuracy"] > rows["none (untrained head)"]["accuracy"] + 0.1
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows.values())
    assert (tmp_path / "synth" / "synthetic.png").stat().st_size > 0


@pytest.mark.e2e
def test_transfer_study_compares_both_arms_on_the_target(tmp_path, smoke_pipeline):
    out, _ = smoke_pipeline
    config = TransferConfig(out=tmp_path / "transfer", source_rm=out / "rm" / "model", backbone=out / "sft" / "model",
                            ks="32", seeds=1, n_test=128, rm_min_steps=10, mixed_precision="no")
    result = run_transfer_study(config)
    assert {run["arm"] for run in result["runs"]} == {"transfer", "scratch"}
    (row,) = result["summary"]
    # the sentiment reward model already knows most of the target preference: far above chance
    assert result["zero_shot_accuracy"] > 0.6 and row["transfer_mean"] > 0.6
    assert row["mean_gain"] == pytest.approx(row["transfer_mean"] - row["scratch_mean"])
    assert "| 32 |" in (tmp_path / "transfer" / "report.md").read_text()
    assert not (tmp_path / "transfer" / "runs" / "transfer_k32_s0" / "run" / "model").exists()  # models are not kept
