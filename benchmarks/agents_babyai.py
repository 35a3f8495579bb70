"""Language-conditioned BabyAI (seed eq. 14): held-out-mission success of BabyAIBot imitation and of PPO, and
PPO's episodes-to-success next to the BabyAI paper's figures quoted in SPEC.md (thousands of episodes to 99%
success: GoToRedBallGrey ~16, GoToRedBall ~261-334, GoToLocal ~903-1114).

Runs `tandem babyai` (`run_babyai`) once per requested level and method on one thread:

    python benchmarks/agents_babyai.py --out runs/bench-babyai
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tandem.lm_inside_agents.experiments.babyai import BabyAIConfig, run_babyai


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-babyai"))
    parser.add_argument("--imitation-env", default="BabyAI-GoToLocal-v0")
    parser.add_argument("--ppo-env", default="BabyAI-GoToRedBallGrey-v0")
    parser.add_argument("--held-out", default="red box,green key,blue ball")
    parser.add_argument("--demos", type=int, default=1000)
    parser.add_argument("--imitation-epochs", type=int, default=10)
    parser.add_argument("--ppo-steps", type=int, default=200_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--all-actions", action="store_true", help="all 7 actions, as in the BabyAI paper")
    parser.add_argument("--skip", nargs="*", default=[], choices=["imitation", "ppo"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    runs = {}
    common = dict(navigation_only=not args.all_actions, eval_episodes=args.eval_episodes, seed=args.seed, progress=False)
    if "imitation" not in args.skip:
        runs["imitation"] = BabyAIConfig(out=args.out / "imitation", env=args.imitation_env, held_out=args.held_out,
                                         method="imitation", demos=args.demos, imitation_epochs=args.imitation_epochs, **common)
    if "ppo" not in args.skip:
        # GoToRedBallGrey has a single mission, so nothing can be held out there: every mission is "train"
        held = args.held_out if args.ppo_env != "BabyAI-GoToRedBallGrey-v0" else ""
        runs["ppo"] = BabyAIConfig(out=args.out / "ppo", env=args.ppo_env, held_out=held, method="ppo",
                                   ppo_steps=args.ppo_steps, num_envs=args.num_envs, **common)
    summary = {"threads": torch.get_num_threads()}
    for name, config in runs.items():
        started = time.perf_counter()
        report = run_babyai(config)
        report["wall_seconds"] = time.perf_counter() - started
        report["load_average_at_end"] = os.getloadavg()[0]
        summary[name] = report
        print(json.dumps({name: report}, indent=2, default=float), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
