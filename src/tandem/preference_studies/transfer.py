"""Transfer of a reward model to a new task with few labels (transfer learning: fine-tune the source reward model).

The source reward model (trained on one task, e.g. the quickstart's sentiment RM) is fine-tuned on k
gold-labelled pairs of a target task; the baseline trains a fresh scalar head on the same backbone
(the SFT model) on the same k pairs with the same steps. Both are measured on held-out pairs of the
target task, next to the source model with no target labels at all (zero-shot).

The default target is a related but different preference: "concise sentiment", the sentiment task
whose gold reward penalises every word beyond 12 (0.1 each) instead of beyond 25, so long glowing
continuations that win under the source preference lose under the target one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.files import atomic_write_text, write_json
from tandem.models.loading import load_reward_model, load_tokenizer
from tandem.plotting import headless_pyplot
from tandem.preference_studies.measure import pair_accuracy, train_and_score
from tandem.rewards.model import RewardModelScorer
from tandem.specs import parse_options
from tandem.tasks import get_task


def preference_agreement(source_task, target_task, pairs: list[dict]) -> float:
    """Share of target pairs (chosen by the target's gold) that the source task's gold ranks the same way."""
    prompts = [p["prompt"] for p in pairs]
    chosen = source_task.gold_reward(prompts, [p["chosen"] for p in pairs])
    rejected = source_task.gold_reward(prompts, [p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / max(len(pairs), 1)


class TransferConfig(BaseModel):
    """`tandem transfer-rm`: a source reward model fine-tuned with k target labels vs a fresh head trained on k."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/transfer-rm"), description="Output folder: results.json, report.md, transfer.png.")
    source_rm: Path = Field(Path("runs/quickstart/rm/model"), description="The reward model trained on the source task.")
    backbone: Path = Field(Path("runs/quickstart/sft/model"), description="Causal LM the from-scratch baseline starts from.")
    source_task: str = Field("sentiment", description="Built-in task the source reward model was trained on.")
    target_task: str = Field("sentiment", description="Built-in task whose preferences the reward model must learn.")
    target_options: str = Field("max_natural_words=12:length_penalty_per_word=0.1",
                                description="Constructor options of the target task, key=value separated by colons "
                                "(as in a task spec: sentiment:max_natural_words=12).")
    ks: str = Field("16,64,256", description="Comma-separated numbers of target labels.")
    seeds: int = Field(3, ge=1, description="Repetitions per k (different label sets and initialisations).")
    seed: int = Field(0, description="First seed.")
    n_test: int = Field(500, ge=1, description="Held-out target pairs.")
    rm_batch_size: int = Field(16, ge=1, description="Reward-model batch size.")
    rm_epochs: float = Field(8.0, gt=0, description="Passes over the k pairs (at least --rm-min-steps steps).")
    rm_min_steps: int = Field(20, ge=1, description="Fewest optimizer steps per run.")
    rm_lr: float = Field(2e-4, gt=0, description="Reward-model learning rate (both arms).")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision of reward-model training.")

    @field_validator("ks")
    @classmethod
    def _positive_ints(cls, value: str) -> str:
        try:
            ks = [int(k) for k in value.split(",") if k.strip()]
        except ValueError:
            raise ValueError(f"--ks must be comma-separated integers, got {value!r}") from None
        if not ks or min(ks) < 2:
            raise ValueError(f"--ks must hold label counts >= 2, got {value!r}")
        return ",".join(map(str, ks))

    @field_validator("target_options")
    @classmethod
    def _parsable(cls, value: str) -> str:
        parse_options(value, f"--target-options {value!r}")
        return value


def run_transfer_study(config: TransferConfig) -> dict:
    """Held-out target accuracy of transfer and from-scratch reward models for each k and seed, plus zero-shot."""
    started = time.perf_counter()
    source_task = get_task(config.source_task)
    target_task = get_task(config.target_task, **parse_options(config.target_options, "--target-options"))
    test = target_task.preference_pairs(config.n_test, seed=config.seed + 10_000, held_out=True)
    zero_shot = pair_accuracy(RewardModelScorer(load_reward_model(config.source_rm), load_tokenizer(config.source_rm)), test)
    runs = []
    for k in (int(k) for k in config.ks.split(",")):
        for seed in range(config.seed, config.seed + config.seeds):
            train = target_task.preference_pairs(k, seed=seed + 20_000)  # not the source RM's training pairs
            for arm, start in (("transfer", config.source_rm), ("scratch", config.backbone)):
                measured = train_and_score(start, train, test, config.out / "runs" / f"{arm}_k{k}_s{seed}", seed=seed,
                                           batch_size=config.rm_batch_size, epochs=config.rm_epochs,
                                           min_steps=config.rm_min_steps, lr=config.rm_lr, mixed_precision=config.mixed_precision)
                runs.append({"arm": arm, "k": k, "seed": seed, **measured})
    result = {
        "config": config.model_dump(mode="json"),
        "source_preference_agrees_with_target": preference_agreement(source_task, target_task, test),
        "zero_shot_accuracy": zero_shot,
        "runs": runs,
        "summary": summarise_transfer(runs),
        "seconds": time.perf_counter() - started,
    }
    write_transfer_report(config.out, result)
    return result


def summarise_transfer(runs: list[dict]) -> list[dict]:
    """Mean and spread of accuracy per (k, arm), and the paired gain of transfer over scratch."""
    rows = []
    for k in sorted({r["k"] for r in runs}):
        arms = {arm: [r["accuracy"] for r in runs if r["k"] == k and r["arm"] == arm] for arm in ("transfer", "scratch")}
        gains = [t - s for t, s in zip(arms["transfer"], arms["scratch"])]
        rows.append({"k": k, **{f"{arm}_mean": sum(v) / len(v) for arm, v in arms.items()},
                     **{f"{arm}_min": min(v) for arm, v in arms.items()}, **{f"{arm}_max": max(v) for arm, v in arms.items()},
                     "mean_gain": sum(gains) / len(gains), "seeds": len(gains)})
    return rows


def transfer_table(result: dict) -> str:
    lines = ["| target labels k | transfer (source RM fine-tuned) | scratch (fresh head on SFT) | gain | seeds |",
             "|---|---|---|---|---|",
             f"| 0 (zero-shot source RM) | {result['zero_shot_accuracy']:.3f} | 0.5 (untrained) | - | - |"]
    for row in result["summary"]:
        lines.append(f"| {row['k']} | {row['transfer_mean']:.3f} [{row['transfer_min']:.3f}, {row['transfer_max']:.3f}] | "
                     f"{row['scratch_mean']:.3f} [{row['scratch_min']:.3f}, {row['scratch_max']:.3f}] | "
                     f"{row['mean_gain']:+.3f} | {row['seeds']} |")
    return "\n".join(lines)


def write_transfer_report(out: Path, result: dict) -> None:
    """results.json, report.md and transfer.png (held-out target accuracy against k, both arms)."""
    plt = headless_pyplot()

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    table = transfer_table(result)
    agreement = result["source_preference_agrees_with_target"]
    atomic_write_text(out / "report.md", f"# Reward-model transfer\n\nThe source task's gold agrees with the target's on "
                      f"{agreement:.1%} of held-out target pairs.\n\n{table}\n")
    print(table)
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    ks = [row["k"] for row in result["summary"]]
    for arm, colour in (("transfer", "#4c72b0"), ("scratch", "#dd8452")):
        axis.plot(ks, [row[f"{arm}_mean"] for row in result["summary"]], marker="o", color=colour, label=arm)
        axis.fill_between(ks, [row[f"{arm}_min"] for row in result["summary"]], [row[f"{arm}_max"] for row in result["summary"]],
                          color=colour, alpha=0.15)
    axis.axhline(result["zero_shot_accuracy"], color="grey", linestyle="--", linewidth=1, label="source RM, zero-shot")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("target-task labels k")
    axis.set_ylabel("held-out target accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "transfer.png", dpi=110)
    plt.close(figure)
