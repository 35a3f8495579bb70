"""LM world model (seed eqs. 9-10): held-out next-state exact match, planning in the LM vs the true simulator,
and Dyna (imagined transitions) vs plain Q-learning, on deterministic FrozenLake with random maps.

Runs `tandem world-model` (`run_world_model`) with the settings below on one thread and records the wall time:

    python benchmarks/agents_world_model.py --out runs/bench-world-model

Data efficiency of a pretrained LM against the tiny one from scratch (one run per LM and episode count, planning
and Dyna off unless asked; a pretrained LM trains --pretrained-epochs passes over its transitions):

    python benchmarks/agents_world_model.py --lms tiny pretrained --lm-model SmolLM2-135M-Instruct.Q4_1.gguf \
        --episodes 50 100 300 --plan-episodes 0 --dyna-real-steps 0 --out runs/bench-world-model-smollm2
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
    parser.add_argument("--episodes", type=int, nargs="+", default=[400], help="random episodes collected (several: a sweep)")
    parser.add_argument("--lms", nargs="+", default=["tiny"], choices=["tiny", "pretrained"],
                        help="tiny: a tandem LM from scratch; pretrained: fine-tune --lm-model")
    parser.add_argument("--lm-model", type=Path, help="pretrained: a HF directory, .gguf or LoRA folder")
    parser.add_argument("--lora-rank", type=int, default=0, help="pretrained: LoRA rank (0: full fine-tuning)")
    parser.add_argument("--pretrained-epochs", type=float, default=3.0)
    parser.add_argument("--pretrained-batch-size", type=int, default=32, help="pretrained: transitions per SFT step")
    parser.add_argument("--pretrained-lr", type=float, default=1e-4, help="pretrained: peak learning rate")
    parser.add_argument("--spaced-cells", action="store_true", help="pretrained: map rows one cell per token")
    parser.add_argument("--pretrained-max-steps", type=int, help="pretrained: SFT steps (instead of --pretrained-epochs)")
    parser.add_argument("--end-repeats", type=int, default=1, help="pretrained: each transition that ends an episode trained this many times")
    parser.add_argument("--max-steps", type=int, default=1500, help="SFT optimizer steps of the tiny world model")
    parser.add_argument("--batch-size", type=int, default=16, help="transitions per SFT step of the tiny world model")
    parser.add_argument("--max-length", type=int, help="longest transition in tokens (default: the data's longest)")
    parser.add_argument("--planner", default="tree", choices=["tree", "shooting"])
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--max-nodes", type=int, default=2000, help="tree planner: most states expanded per decision")
    parser.add_argument("--plan-episodes", type=int, default=40)
    parser.add_argument("--dyna-real-steps", type=int, default=2000)
    parser.add_argument("--dyna-seeds", type=int, default=5)
    parser.add_argument("--dyna-optimism", type=float, default=0.0, help="initial Q value in Dyna (1: optimistic, for 8x8 maps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trained", type=Path, help="a world model an earlier run trained (its --out): measured, planned and "
                        "run Dyna in without training again (give the same --episodes, --map-size, --seed)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if "pretrained" in args.lms and args.lm_model is None:
        parser.error("--lms pretrained needs --lm-model")
    runs = [(lm, episodes) for lm in args.lms for episodes in args.episodes]
    summaries = []
    for lm, episodes in runs:
        out = args.out if len(runs) == 1 else args.out / f"{lm}-{episodes}"
        summaries.append(run_one(args, lm, episodes, out))
    if len(runs) > 1:
        rows = [{"lm": s["lm"], "episodes": s["config"]["episodes"], "n_train": s["n_train"], **{
            k: s["held_out"][k] for k in ("next_state_accuracy", "reward_accuracy", "done_accuracy", "copy_state_baseline",
                                          "n_transitions")}, "wall_seconds": s["wall_seconds"]} for s in summaries]
        (args.out / "sweep.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
        print("| LM | episodes | train transitions | held-out | next state | reward | done | copy-state | wall s |")
        for r in rows:
            print(f"| {r['lm']} | {r['episodes']} | {r['n_train']} | {int(r['n_transitions'])} | "
                  f"{r['next_state_accuracy']:.3f} | {r['reward_accuracy']:.3f} | {r['done_accuracy']:.3f} | "
                  f"{r['copy_state_baseline']:.3f} | {r['wall_seconds']:.0f} |")


def run_one(args, lm: str, episodes: int, out: Path) -> dict:
    model = {"model": args.lm_model, "lora_rank": args.lora_rank, "epochs": args.pretrained_epochs,
             "batch_size": args.pretrained_batch_size, "lr": args.pretrained_lr, "spaced_cells": args.spaced_cells,
             "max_steps": args.pretrained_max_steps, "end_repeats": args.end_repeats} if lm == "pretrained" \
        else {"max_steps": args.max_steps, "batch_size": args.batch_size}
    config = WorldModelConfig(
        out=out, env=args.env, map_size=args.map_size, n_maps=args.n_maps, episodes=episodes,
        max_length=args.max_length, planner=args.planner, horizon=args.horizon, max_nodes=args.max_nodes,
        plan_episodes=args.plan_episodes, dyna_real_steps=args.dyna_real_steps, dyna_seeds=args.dyna_seeds,
        dyna_optimism=args.dyna_optimism,
        seed=args.seed, progress=False, threads=args.threads, trained=args.trained, **model,
    )
    started = time.perf_counter()
    report = run_world_model(config)
    summary = {
        "lm": lm,
        "config": config.model_dump(mode="json"),
        "wall_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg()[0],
        "n_train": report["n_train"],
        "held_out": report["held_out"],
        "planning": report.get("planning"),
        "dyna": {k: {kk: v[kk] for kk in ("steps_to_solve", "mean_steps_to_solve", "solved_fraction")}
                 for k, v in report.get("dyna", {}).items()},
        "lm_model_check": report.get("lm_model_check"),
    }
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps(summary, indent=2, default=float))
    return summary


if __name__ == "__main__":
    main()
