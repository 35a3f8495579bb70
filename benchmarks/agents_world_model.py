"""LM world model (seed eqs. 9-10): held-out next-state exact match, planning in the LM vs the true simulator,
and Dyna (imagined transitions) vs plain Q-learning, on deterministic FrozenLake with random maps.

Runs `tandem world-model` (`run_world_model`) with the settings below on one thread and records the wall time:

    python benchmarks/agents_world_model.py --out runs/bench-world-model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from tandem.lm_inside_agents.experiments.world_model import WorldModelConfig, run_world_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-world-model"))
    parser.add_argument("--env", default="FrozenLake-v1", help="FrozenLake-v1 or Taxi-v4")
    parser.add_argument("--map-size", type=int, default=4)
    parser.add_argument("--n-maps", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--max-steps", type=int, default=600, help="SFT optimizer steps of the world model")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--planner", default="tree", choices=["tree", "shooting"])
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--plan-episodes", type=int, default=40)
    parser.add_argument("--dyna-real-steps", type=int, default=2000)
    parser.add_argument("--dyna-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = WorldModelConfig(
        out=args.out, env=args.env, map_size=args.map_size, n_maps=args.n_maps, episodes=args.episodes,
        max_steps=args.max_steps, max_length=args.max_length, planner=args.planner, horizon=args.horizon,
        plan_episodes=args.plan_episodes, dyna_real_steps=args.dyna_real_steps, dyna_seeds=args.dyna_seeds,
        seed=args.seed, progress=False,
    )
    started = time.perf_counter()
    report = run_world_model(config)
    summary = {
        "config": config.model_dump(mode="json"),
        "wall_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg()[0],
        "held_out": report["held_out"],
        "planning": report.get("planning"),
        "dyna": {k: {kk: v[kk] for kk in ("steps_to_solve", "mean_steps_to_solve", "solved_fraction")}
                 for k, v in report.get("dyna", {}).items()},
    }
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
