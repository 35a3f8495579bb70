"""Per-step time of `tandem agent-rl` against an earlier commit, side by side in one run (issue: engine speed).

    python benchmarks/agent_step_time.py --steps 2 --old ca1de36 [--engines hf vllm] [--out runs/bench-agent-step]
    python benchmarks/agent_step_time.py --steps 3 --new-args="--prefill-memory 12"   # options of this code only

The earlier commit is checked out once into a `git worktree` and run with its `src` first on PYTHONPATH; both run
the same command (SmolLM2-135M-Instruct on FrozenLake 4x4, history none or `--history full`, 8 tokens a turn, 8
turns, 2 start states x 4 episodes, one torch thread, no evaluation), alternating old and new for each repeat so a
busy machine disturbs both alike. Each run's `train/time/step` (rollout + update) is read from its metrics.jsonl,
the first step left out when there are more than one. Writes OUT/step_time.json with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from agentrl_results import smollm2

ROOT = Path(__file__).resolve().parents[1]


def command(model: str, out: Path, steps: int, engine: str | None, history: str = "none") -> list[str]:
    args = [sys.executable, "-m", "tandem.cli", "agent-rl", "--model", model, "--env", "frozenlake:size=4",
            "--history", history, "--max-new-tokens", "8", "--max-turns", "8", "--batch-size", "2",
            "--episodes-per-start", "4", "--n-eval", "0", "--threads", "1", "--max-steps", str(steps),
            "--no-progress", "--out", str(out)]
    return args + (["--engine", engine] if engine else [])


def step_times(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [r["train/time/step"] for r in records if "train/time/step" in r]
    return times[1:] if len(times) > 1 else times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="ca1de36", help="The commit to compare against.")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["hf"], help="Engines of the new code (hf, vllm).")
    parser.add_argument("--history", default="none", choices=["none", "full"],
                        help="The issue's command uses none; full (the default of agent-rl) shows the KV cache kept across turns.")
    parser.add_argument("--new-args", default="", help="Options added to this code's command only (e.g. --new-args='--prefill-memory 12').")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-agent-step"))
    args = parser.parse_args()
    model = smollm2()
    args.out.mkdir(parents=True, exist_ok=True)
    worktree = args.out / f"worktree-{args.old}"
    if not worktree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree.resolve()), args.old], check=True)
    results: dict[str, list[float]] = {"old": []}
    for repeat in range(args.repeats):
        out = args.out / f"old-{repeat}"
        env = {**os.environ, "PYTHONPATH": str((worktree / "src").resolve())}
        subprocess.run(command(model, out, args.steps, None, args.history), check=True, env=env)
        results["old"] += step_times(out)
        for engine in args.engines:
            out = args.out / f"new-{engine}-{repeat}"
            subprocess.run(command(model, out, args.steps, engine, args.history) + shlex.split(args.new_args), check=True)
            results.setdefault(engine, []).extend(step_times(out))
    medians = {name: statistics.median(times) for name, times in results.items()}
    summary = {"old_commit": args.old, "history": args.history, "new_args": args.new_args, "steps": args.steps, "repeats": args.repeats, "step_seconds": results,
               "median_step_seconds": medians,
               "speedup": {name: medians["old"] / m for name, m in medians.items() if name != "old"}}
    (args.out / "step_time.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
