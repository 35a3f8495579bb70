"""Verbal feedback (seed eq. 8): feedback writers, correlations, and reading users' feedback files."""

import json
import random

import pytest
from scipy import stats

from tandem.data import DataError
from tandem.ai_feedback.verbal import (
    FEEDBACK_WRITERS, feedback_examples, feedback_text, pearson, ranks, read_feedback_file, spearman, write_feedback,
)


def test_pearson_and_spearman_match_scipy():
    rng = random.Random(0)
    x = [rng.gauss(0, 1) for _ in range(50)]
    y = [a + rng.gauss(0, 1) for a in x]
    ties = [round(v) for v in y]
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, ties) == pytest.approx(stats.spearmanr(x, ties)[0])
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) != pearson([1, 1, 1], [1, 2, 3])  # NaN for a constant input
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1.0], [1.0])


def test_builtin_tasks_write_feedback_from_their_gold_scorers():
    assert set(FEEDBACK_WRITERS) >= {"polite", "sentiment", "arithmetic"}
    arithmetic = write_feedback("arithmetic", ["Question: What is 37 + 48?\nAnswer:"] * 3,
                                [" 37 + 48 = 85\n#### 85", " 37 + 48 = 88\n#### 88", " I am not sure"])
    assert arithmetic == ["Correct.", "The answer is off by 3.", "There is no final answer."]
    sentiment = write_feedback("sentiment", ["Review: The film"] * 3, [
        " was boring and awful. I hated the music.", " was long and quiet.", " was wonderful and brilliant. I loved it."])
    assert sentiment[0].startswith("Too negative") and sentiment[1].startswith("Too neutral")
    assert sentiment[2] == "Very positive and natural."
    assert "Too repetitive." in write_feedback("sentiment", ["Review: x"], [" great great great great great great"])[0]
    with pytest.raises(ValueError, match="writes no verbal feedback"):
        write_feedback("no_such_task", [], [])


def test_feedback_examples_carry_the_gold_score_and_distinct_feedback_per_score():
    rows = feedback_examples("polite", 100, seed=0)
    assert len(rows) == 200 and set(rows[0]) == {"prompt", "response", "feedback", "score"}
    by_feedback = {}
    for row in rows:
        by_feedback.setdefault(row["feedback"], set()).add(row["score"])
    assert len(by_feedback) > 5
    # the feedback determines the gold score (the words in it are what g_phi learns from)
    assert all(len(scores) == 1 for feedback, scores in by_feedback.items() if "'" not in feedback)
    assert feedback_text("P:", " r") == "P: r\nFeedback:"


def test_feedback_file_errors_name_the_line_and_field(tmp_path):
    path = tmp_path / "feedback.jsonl"
    good = {"prompt": "p", "response": "r", "feedback": "too long", "score": 0.5}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "score": "high"}) + "\n")
    with pytest.raises(DataError, match=r"line 2.*score"):
        read_feedback_file(path)
    path.write_text(json.dumps({**good, "feedback": None}) + "\n")
    with pytest.raises(DataError, match=r"line 1.*feedback"):
        read_feedback_file(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_feedback_file(path) == [good]
