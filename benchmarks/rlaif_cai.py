"""RLAIF, Constitutional AI and the verbal-feedback reward on the `polite` task, default presets (seed eqs. 5, 6, 8).

    python benchmarks/rlaif_cai.py --out runs/bench_rlaif_cai [--preset default] [--threads 1]

Trains one base policy (pre-train -> SFT), then runs with it: `tandem rlaif` direct (GRPO on the judge's
score) and distilled (AI labels -> DPO), `tandem cai` (SL-CAI then RL-CAI with DPO) and `tandem
verbal-reward` (g_phi, then GRPO). Also measures how often a judge made of the tiny SFT model itself
(`local:` backend, A/B probabilities, both orders) agrees with gold, next to the built-in heuristic judge.
Writes results.json and results.png (gold reward and violation rate before/after) under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_rlaif_cai"))
    parser.add_argument("--preset", choices=["smoke", "default"], default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tandem.ai_feedback.cai import CAIConfig, run_cai
    from tandem.ai_feedback.rlaif import RLAIFConfig, label_policy_pairs, run_rlaif
    from tandem.ai_feedback.runs import BASE_PRESETS, base_models
    from tandem.ai_feedback.verbal import VerbalRewardConfig, run_verbal_reward
    from tandem.judges import build_judge

    results: dict = {"preset": args.preset, "threads": args.threads, "base_preset": BASE_PRESETS[args.preset]}
    started = time.perf_counter()
    _, sft = base_models(args.out / "base", "polite", args.preset, args.seed, progress=False)
    results["base_seconds"] = round(time.perf_counter() - started, 1)
    common = {"model": sft, "preset": args.preset, "seed": args.seed, "progress": False}
    runs = {
        "rlaif_direct_grpo": lambda: run_rlaif(RLAIFConfig(out=args.out / "rlaif_direct", **common)),
        "rlaif_distilled_dpo": lambda: run_rlaif(RLAIFConfig(out=args.out / "rlaif_distilled", mode="distilled",
                                                             algorithm="dpo", **common)),
        "cai": lambda: run_cai(CAIConfig(out=args.out / "cai", **common)),
        "verbal_reward": lambda: run_verbal_reward(VerbalRewardConfig(out=args.out / "verbal", **common)),
    }
    for name, run in runs.items():
        started = time.perf_counter()
        results[name] = run()
        results[name]["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {results[name]['wall_seconds']} s", flush=True)
    started = time.perf_counter()
    try:
        judge = build_judge(f"local:{sft}")
        _, agreement = label_policy_pairs(sft, "polite", judge, 256, args.seed)
        results["tiny_lm_judge_agreement"] = {**agreement, "judge_stats": judge.stats.as_dict()}
    except ValueError as error:  # e.g. the tokenizer splits the answer labels
        results["tiny_lm_judge_agreement"] = {"error": str(error)}
    results["tiny_lm_judge_seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot(results, args.out / "results.png")
    print(json.dumps(summary(results), indent=2))


def summary(results: dict) -> dict:
    """The numbers for the closing note."""
    cai = results["cai"]["policies"]
    return {
        "rlaif_direct": {k: results["rlaif_direct_grpo"][k] for k in ("ai_label_agreement", "before", "after")},
        "rlaif_distilled": {k: results["rlaif_distilled_dpo"][k] for k in ("before", "after")},
        "cai": {**cai, "rule_agreement": results["cai"]["rl_cai"]["rule_agreement"]},
        "verbal": {k: results["verbal_reward"].get(k) for k in ("g_phi_vs_gold", "before", "after", "gold_gain")},
        "tiny_lm_judge_agreement": results["tiny_lm_judge_agreement"],
        "wall_seconds": {k: v["wall_seconds"] for k, v in results.items() if isinstance(v, dict) and "wall_seconds" in v},
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("SFT", results["cai"]["policies"]["sft"]),
            ("RLAIF direct", results["rlaif_direct_grpo"]["after"]),
            ("RLAIF distilled", results["rlaif_distilled_dpo"]["after"]),
            ("SL-CAI", results["cai"]["policies"].get("sl_cai")),
            ("SL+RL-CAI", results["cai"]["policies"].get("rl_cai")),
            ("GRPO on g_phi", results["verbal_reward"].get("after"))]
    rows = [(name, metrics) for name, metrics in rows if metrics]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, key in zip(axes, ("gold_reward", "helpfulness", "violation_rate")):
        axis.bar([name for name, _ in rows], [metrics[key] for _, metrics in rows], color="tab:blue")
        axis.set_title(key.replace("_", " "))
        axis.tick_params(axis="x", rotation=45)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"polite task, held-out prompts ({results['preset']} preset)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
