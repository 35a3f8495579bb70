"""One-shot RLVR, reading (a) of seed section 3.3: a judge prompt holding one example of verbal feedback.

Compares, on held-out preference pairs of a built-in task, how often a judge's scores order the pair
as the gold scorer does, for the zero-shot `score` template and the one-shot `score_oneshot_feedback`
template (one response, the feedback a person gave it, and its score), with the same judge model.

    python benchmarks/one_shot_judge.py --judge runs/quickstart/sft/model --pairs 200

Any judge backend works through `--judge` (a local model directory here; use `tandem judge` with
`judge:openai:URL:MODEL` for an endpoint). Writes `results.json` to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tandem.judges import LocalJudge
from tandem.tasks import get_task


def agreement(judge, pairs: list[dict]) -> dict:
    prompts = [p["prompt"] for p in pairs]
    chosen = judge.score(prompts, [p["chosen"] for p in pairs])
    rejected = judge.score(prompts, [p["rejected"] for p in pairs])
    decided = [(c.value, r.value) for c, r in zip(chosen, rejected) if c.usable and r.usable and c.value != r.value]
    right = sum(c > r for c, r in decided)
    return {"agreement": right / len(decided) if decided else None, "decided": len(decided), "pairs": len(pairs),
            "unusable": sum(not v.usable for v in chosen + rejected)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=Path("runs/quickstart/sft/model"))
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/one-shot-judge"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = get_task(args.task).preference_pairs(args.pairs, seed=123, held_out=True)
    results = {}
    for template in ("score", "score_oneshot_feedback"):
        judge = LocalJudge(args.judge, score_template=template)
        results[template] = agreement(judge, pairs)
        print(template, results[template], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
