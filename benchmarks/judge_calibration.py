"""Position bias of a small local judge, and what each way of reading it recovers (issue 13).

On held-out preference pairs of built-in tasks (gold = the task's scorer), one local judge is read
four ways; each row reports agreement with gold (ties count half), how far the values sit from 0.5,
and the share of pairs won by the same shown position in both orders (the verdict follows position):

    single order   one order per pair, the gold response first or second with equal odds
    average        both orders, (p_AB + 1 - p_BA) / 2                       (`swap_average`)
    log_odds       both orders, sigmoid((logit p_AB - logit p_BA) / 2)      (`swap_log_odds`)
    score          each response rated alone on the 0-9 scale, the higher wins (`compare_from_scores`)

Both orders come from one `judge.compare` call (its parts are the two orders' verdicts), so the
single-order and both-orders rows read the same forward passes.

    python benchmarks/judge_calibration.py --model /tmp/smol/hf --n 64 --threads 1

Writes a JSON file (--out) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tandem.judges import CALIBRATIONS, LocalJudge, compare_from_scores
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.tasks import get_task


def agreement(values: list[float]) -> float:
    """Share of values > 0.5 (value = P(gold-preferred response better)), a value of exactly 0.5 counting half."""
    return sum(1.0 if v > 0.5 else 0.5 if v == 0.5 else 0.0 for v in values) / len(values)


def reading_row(values: list[float]) -> dict:
    return {"agreement": agreement(values), "mean_distance_from_half": sum(abs(v - 0.5) for v in values) / len(values),
            "min": min(values), "max": max(values), "pairs": len(values)}


def measure(judge: LocalJudge, pairs: list[dict]) -> dict:
    prompts, chosen, rejected = ([p[key] for p in pairs] for key in ("prompt", "chosen", "rejected"))
    started = time.perf_counter()
    compared = [v for v in judge.compare(prompts, chosen, rejected) if v.usable]
    compare_seconds = time.perf_counter() - started
    orders = [(v.parts[0].value, v.parts[1].value) for v in compared]  # P(chosen better | chosen first), P(rejected better | rejected first)
    rows = {"single order": reading_row([p for p, _ in orders] + [1.0 - q for _, q in orders])}
    for name, combine in CALIBRATIONS.items():
        rows[name] = reading_row([combine(p, q) for p, q in orders])
    started = time.perf_counter()
    scored = judge.score(prompts + prompts, chosen + rejected)
    score_seconds = time.perf_counter() - started
    n = len(pairs)
    score_values = [compare_from_scores(c.value, r.value) for c, r in zip(scored[:n], scored[n:]) if c.usable and r.usable]
    rows["score"] = reading_row(score_values)
    label_a = [p for p, _ in orders] + [q for _, q in orders]
    return {
        "readings": rows,
        "position_only_fraction": judge.stats.position_only_fraction,
        "position_only": dict(judge.stats.position_only),
        "mean_p_label_a": sum(label_a) / len(label_a),
        "tied_orders": sum(p == q for p, q in orders),
        "usable_pairs": len(orders), "pairs": n,
        "seconds": {"compare": round(compare_seconds, 1), "score": round(score_seconds, 1)},
    }


def markdown(results: dict) -> str:
    lines = ["| task | reading | agreement with gold | mean abs(v - 0.5) | value range | same position both orders |",
             "|---|---|---|---|---|---|"]
    for task, result in results["tasks"].items():
        for name, row in result["readings"].items():
            position = f"{result['position_only_fraction']:.0%}" if name in CALIBRATIONS or name == "single order" else "n/a"
            lines.append(f"| {task} | {name} | {row['agreement']:.3f} | {row['mean_distance_from_half']:.3f} | "
                         f"{row['min']:.3f}-{row['max']:.3f} | {position} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("/tmp/smol/hf"), help="Local HF causal LM directory (the judge).")
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "polite"])
    parser.add_argument("--n", type=int, default=64, help="Held-out preference pairs per task.")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/judge-calibration/results.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_causal_lm(args.model, dtype=getattr(torch, args.dtype))
    tokenizer = load_tokenizer(args.model)
    results = {"model": str(args.model), "n": args.n, "seed": args.seed, "dtype": args.dtype, "tasks": {}}
    for task in args.tasks:
        judge = LocalJudge(model, tokenizer, batch_size=args.batch_size, name=f"{args.model.name}:{task}")
        pairs = get_task(task).preference_pairs(args.n, seed=args.seed, held_out=True)
        results["tasks"][task] = measure(judge, pairs)
        print(task, json.dumps(results["tasks"][task]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
