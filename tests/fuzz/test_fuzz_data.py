"""Seeded fuzzing of the data readers and validation: malformed files give a clear DataError or valid examples."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fuzz.malformed import SIZE_LIMIT, make_case, run_case

CASES = 240
SEED = 1234


def test_malformed_data_is_accepted_valid_or_a_clear_data_error(tmp_path, monkeypatch, sentiment_tokenizer):
    monkeypatch.setenv("TANDEM_MAX_RECORD_BYTES", str(SIZE_LIMIT))
    rng = random.Random(SEED)
    outcomes, failures = Counter(), []
    for number in range(CASES):
        case, baseline = make_case(rng, tmp_path, number)
        outcome, detail = run_case(case, baseline, sentiment_tokenizer)
        outcomes[outcome] += 1
        if outcome not in ("accepted", "data_error"):
            failures.append(f"case {number} {case.name}: {outcome}: {detail}")
    assert not failures, "\n".join(failures[:10])
    assert outcomes["accepted"] >= CASES // 20 and outcomes["data_error"] >= CASES // 2  # the generator covers both


@pytest.mark.parametrize("seed", [0, 1])
def test_the_generator_is_seeded(tmp_path, seed):
    def names(folder):
        rng = random.Random(seed)
        return [make_case(rng, folder, number)[0].name for number in range(20)]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert names(tmp_path / "a") == names(tmp_path / "b")
