"""Reward-model over-optimisation (Gao et al. 2022) in miniature, with mitigations: `tandem overopt` as a script.

    python benchmarks/overopt_study.py --sft runs/quickstart/sft/model --out runs/overopt
    python benchmarks/overopt_study.py --preset smoke --out /tmp/overopt-smoke

Writes report.json, report.md, overopt.png and mitigations.png under --out (see `tandem.overopt.study`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tandem.overopt.study import OveroptConfig, run_overopt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/overopt"))
    parser.add_argument("--preset", choices=["default", "smoke"], default="default")
    parser.add_argument("--sft", type=Path, default=None, help="SFT model (default: pre-train and fine-tune one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the shared machine: 1)")
    parser.add_argument("--resume", action="store_true", help="reuse finished stages in --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report = run_overopt(OveroptConfig(out=args.out, preset=args.preset, sft=args.sft, seed=args.seed,
                                       resume=args.resume, progress=True))
    print(f"figures: {report['figures']}; wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
