"""The DPO paper's experiment in miniature (Rafailov et al. 2023, Figure 2, IMDb): gold reward vs KL.

On the built-in `sentiment` task, starting from an SFT model, train DPO on preference pairs sampled from
that model and ranked by the gold scorer, for several beta; measure each policy's gold reward and its
KL(policy || SFT reference) on held-out prompts, and plot the frontier. PPO against the quickstart's
reward model, for several KL coefficients, gives the paper's PPO points on the same axes.

    python benchmarks/dpo_beta_sweep.py --sft runs/quickstart/sft/model --out runs/dpo-sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tandem.policy_eval import gold_eval  # noqa: E402
from tandem.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from tandem.tasks import get_task  # noqa: E402
from tandem.trainers.dpo import DPOConfig, run_dpo  # noqa: E402
from tandem.trainers.ppo import PPOConfig, run_ppo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=Path("runs/quickstart/sft/model"), help="SFT model directory")
    parser.add_argument("--out", type=Path, default=Path("runs/dpo-sweep"))
    parser.add_argument("--betas", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--losses", nargs="+", default=["sigmoid"], help="DPO-family losses to sweep")
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--rm", type=Path, default=Path("runs/quickstart/rm/model"),
                        help="Reward model for the PPO points (the quickstart's)")
    parser.add_argument("--ppo-kl", type=float, nargs="*", default=[0.01, 0.03, 0.1, 0.3],
                        help="PPO KL coefficients to sweep (none: DPO only)")
    parser.add_argument("--ppo-steps", type=int, default=30)
    args = parser.parse_args()

    task = get_task("sentiment")
    prompts = task.eval_prompts(args.n_eval, seed=0)
    sft = load_causal_lm(args.sft)
    baseline = gold_eval(sft, load_tokenizer(args.sft), task, prompts)
    rows = [{"method": "sft", "beta": None, "gold_reward": baseline["gold_reward"], "kl": 0.0, "seconds": 0.0}]
    for loss in args.losses:
        for beta in args.betas:
            started = time.perf_counter()
            result = run_dpo(DPOConfig(
                model=args.sft, out=args.out / f"{loss}-beta{beta}", loss=loss, beta=beta, pairs="sampled",
                n_train=args.n_train, n_eval=args.n_eval, epochs=args.epochs, batch_size=32, progress=False,
            ))
            rows.append({"method": loss, "beta": beta, "gold_reward": result.metrics["eval/gold_reward"],
                         "kl": result.metrics["eval/kl_to_reference"], "seconds": time.perf_counter() - started})
            print(rows[-1], flush=True)

    for kl_coef in args.ppo_kl:
        started = time.perf_counter()
        result = run_ppo(PPOConfig(
            model=args.sft, out=args.out / f"ppo-kl{kl_coef}", reward=f"model:{args.rm}", kl_coef=kl_coef,
            max_steps=args.ppo_steps, batch_size=32, micro_batch_size=32, update_epochs=2, minibatches=2, lr=2e-5,
            n_eval=args.n_eval, progress=False,
        ))
        rows.append({"method": "ppo", "beta": kl_coef, "gold_reward": result.metrics["eval/gold_reward"],
                     "kl": result.metrics["eval/kl_to_reference"], "seconds": time.perf_counter() - started})
        print(rows[-1], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))
    table = ["| method | beta | gold reward | KL(policy‖SFT) | seconds |", "|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['beta'] if r['beta'] is not None else '-'} | {r['gold_reward']:.3f} | "
              f"{r['kl']:.2f} | {r['seconds']:.0f} |" for r in rows]
    (args.out / "sweep.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))

    figure, axis = plt.subplots(figsize=(5, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["kl"], r["gold_reward"], r["beta"]) for r in rows if r["method"] == method)
        axis.plot([p[0] for p in points], [p[1] for p in points], "o-" if method != "sft" else "k*", label=method)
        for kl, gold, beta in points:
            if beta is not None:
                axis.annotate(f"β={beta}", (kl, gold), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axis.set_xlabel("KL(policy ‖ SFT) per sequence (nats)")
    axis.set_ylabel("gold reward (held-out prompts)")
    axis.set_title("sentiment: reward vs KL frontier")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "frontier.png", dpi=120)
    print(f"plot: {args.out / 'frontier.png'}")


if __name__ == "__main__":
    main()
