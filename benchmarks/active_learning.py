"""Labels needed to reach a held-out reward-model accuracy: active acquisition rules against random picking.

For each labeller setting (noiseless gold labels, and a noisy Bradley-Terry labeller whose utility is
the gold reward), runs `tandem active` (`tandem.preference_studies.active.run_active_study`): an ensemble of
linear reward heads on the frozen token-embedding features of the smoke quickstart's SFT model, a
pool of unlabelled sentiment pairs, and random / disagreement / entropy / BALD picking, over several
seeds. Writes each setting's results.json, report.md and plot, plus summary.json and
active_learning.png (both settings side by side) under --out.

    OMP_NUM_THREADS=1 python benchmarks/active_learning.py --out runs/bench/active
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tandem.preference_studies.active import ActiveConfig, plot_curves, run_active_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/active"))
    parser.add_argument("--model", type=Path, default=None, help="Feature model (default: train the smoke quickstart into --out).")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=384)
    parser.add_argument("--n-pool", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--noisy-target", type=float, default=0.8, help="Target accuracy of the noisy-labeller setting.")
    parser.add_argument("--noisy-temperature", type=float, default=0.3, help="Labeller temperature of the noisy setting (0: skip it).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    model = args.model
    if model is None:
        from tandem.pipeline import QuickstartConfig, run_quickstart

        quickstart = args.out / "quickstart"
        if not (quickstart / "sft" / "model" / "config.json").exists():
            run_quickstart(QuickstartConfig(out=quickstart, preset="smoke", progress=False))
        model = quickstart / "sft" / "model"

    settings = {"noiseless": (0.0, args.target)}
    if args.noisy_temperature > 0:
        settings[f"noisy_T{args.noisy_temperature:g}"] = (args.noisy_temperature, args.noisy_target)
    results = {}
    for name, (temperature, target) in settings.items():
        config = ActiveConfig(out=args.out / name, model=model, n_pool=args.n_pool, n_test=args.n_test, seeds=args.seeds,
                              budget=args.budget, target_accuracy=target, judge_temperature=temperature)
        print(f"\n=== {name}: judge temperature {temperature}, target {target} ===", flush=True)
        results[name] = run_active_study(config)

    summary = {name: {"judge_temperature": r["config"]["judge_temperature"], "target_accuracy": r["config"]["target_accuracy"],
                      "seconds": r["seconds"], "rules": r["summary"]} for name, r in results.items()}
    summary["_total_seconds"] = time.perf_counter() - started
    summary["_feature_model"] = str(model)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(results, args.out / "active_learning.png")
    print(f"\nwrote {args.out / 'summary.json'} and {args.out / 'active_learning.png'} in {summary['_total_seconds']:.0f}s")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        plot_curves(axis, result)
        axis.set_title(f"{name}: judge T={result['config']['judge_temperature']}, {result['config']['seeds']} seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
