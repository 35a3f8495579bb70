"""Fuzz the data readers and validation with thousands of seeded malformed files; print counts by outcome.

    python benchmarks/fuzz_data.py --cases 3000 --seed 0

Each case is one file from `tests/fuzz/malformed.py` (JSONL, JSON, CSV or Parquet; sft, messages,
preference, unpaired or prompt-only data; one record or the file's bytes broken). Outcomes: accepted
(valid examples), clear DataError (names the file, and the bad line where it can), and the failures:
other exception, unclear DataError, or an invalid example accepted -- with the first example of each.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fuzz.malformed import SIZE_LIMIT, make_case, run_case  # noqa: E402

LABELS = {
    "accepted": "accepted",
    "data_error": "clear DataError",
    "bad_error": "unclear DataError",
    "bad_accept": "invalid example accepted",
    "other_exception": "other exception",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="How many malformed files to try.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the case generator.")
    args = parser.parse_args()
    os.environ["TANDEM_MAX_RECORD_BYTES"] = str(SIZE_LIMIT)

    from tandem.models.tokenizer import train_tokenizer
    from tandem.tasks import get_task

    tokenizer = train_tokenizer(get_task("sentiment").pretrain_corpus(600, seed=0), vocab_size=512)
    rng, outcomes, first, by_case = random.Random(args.seed), Counter(), {}, Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.cases):
            case, baseline = make_case(rng, Path(folder), number)
            outcome, detail = run_case(case, baseline, tokenizer)
            outcomes[outcome] += 1
            by_case[(case.name.split("/")[-1], outcome)] += 1
            first.setdefault(outcome, f"case {number} {case.name}: {detail}")
            for path in Path(folder).iterdir():
                path.unlink()
    seconds = time.perf_counter() - start
    print(f"{args.cases} cases, seed {args.seed}, {seconds:.1f} s")
    for outcome, label in LABELS.items():
        print(f"  {label:26s} {outcomes[outcome]:6d}")
    for outcome, label in LABELS.items():
        if outcome in first:
            print(f"first {label}: {first[outcome][:400]}")
    print("by mutation:")
    for mutation in sorted({name for name, _ in by_case}):
        counts = ", ".join(f"{LABELS[o]} {by_case[(mutation, o)]}" for o in LABELS if by_case[(mutation, o)])
        print(f"  {mutation:18s} {counts}")
    sys.exit(1 if outcomes["other_exception"] + outcomes["bad_error"] + outcomes["bad_accept"] else 0)


if __name__ == "__main__":
    main()
