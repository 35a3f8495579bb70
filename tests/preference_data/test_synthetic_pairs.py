"""Corruptions, rule-labelled synthetic pairs and how often the rule agrees with gold."""

import random

import pytest
import torch

from tandem.preference_data.labels import label_pairs, rule_judge
from tandem.preference_data.synthetic_pairs import (
    CORRUPTIONS,
    corruption_pairs,
    replace_words,
    rule_agreement,
    shuffle_words,
    truncate_words,
)
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
