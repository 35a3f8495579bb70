"""`tandem active`: active selection of which preference pairs to label (active learning; querying where an
ensemble of reward models disagrees, as in Christiano et al. 2017), and how many labels each rule needs.

The reward model is an ensemble of reward heads on frozen features (`tandem.rewards.reward_heads`),
the features standardised with the unlabelled pool's statistics. Each round the loop (`labelling_curve`) fits
the ensemble, measures held-out accuracy and labels the top `batch_size` pairs of an acquisition rule
(`tandem.preference_data.acquisition`: random, disagreement, entropy, bald), asking a labeller that stands in
for the human (`tandem.preference_data.labels.gold_judge`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import Tensor
from tqdm.auto import tqdm

from tandem.files import atomic_write_text, write_json
from tandem.generation.engines import EngineOptions
from tandem.plotting import headless_pyplot
from tandem.preference_data.acquisition import ACQUISITION_RULES, acquisition_scores, select_batch
from tandem.preference_data.labels import draw_labels, gold_judge
from tandem.rewards.reward_heads import (
    EnsembleConfig,
    ensemble_accuracy,
    fit_ensemble,
    response_features,
)
from tandem.tasks import get_task


# ----- the labelling loop --------------------------------------------------------------------------

def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> int | None:
    """The first label count on a learning curve whose accuracy is at least `target` (None: never)."""
    return next((n for n, a in zip(labels, accuracy) if a >= target), None)


Oracle = Callable[[list[int]], Tensor]


def labelling_curve(
    pool_a: Tensor,
    pool_b: Tensor,
    oracle: Oracle,
    test_a: Tensor,
    test_b: Tensor,
    test_labels: Tensor,
    rule: str,
    *,
    seed_size: int,
    batch_size: int,
    budget: int,
    ensemble: EnsembleConfig,
    seed: int,
) -> dict[str, list]:
    """Label `seed_size` random pairs, then repeatedly fit the ensemble, measure held-out accuracy and
    label the `batch_size` pairs the rule scores highest, until `budget` labels are spent.

    `oracle(indices)` returns labels (1: A better) for pool pairs: the human's place. The initial
    labelled set depends only on `seed`, so every rule starts from the same labelled pairs.
    Returns {"labels": [n labelled at each fit], "accuracy": [held-out accuracy], "picked": [pool indices in order]}.
    """
    if not 0 < seed_size <= budget <= len(pool_a):
        raise ValueError(f"need 0 < seed_size ({seed_size}) <= budget ({budget}) <= pool size ({len(pool_a)})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    start = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(pool_a), generator=start)[:seed_size].tolist()
    labels = oracle(picked).float()
    rule_generator = torch.Generator().manual_seed(seed * 7919 + 1)
    curve: dict[str, list] = {"labels": [], "accuracy": []}
    for round_index in range(budget):  # bounded: each round labels at least one pair
        model = fit_ensemble(pool_a[picked], pool_b[picked], labels, ensemble, seed=seed * 1000 + round_index)
        curve["labels"].append(len(picked))
        curve["accuracy"].append(ensemble_accuracy(model, test_a, test_b, test_labels))
        if len(picked) >= budget:
            break
        labelled = torch.zeros(len(pool_a), dtype=torch.bool)
        labelled[picked] = True
        scores = acquisition_scores(rule, model.preference_probs(pool_a, pool_b), rule_generator)
        chosen = select_batch(scores, labelled, min(batch_size, budget - len(picked))).tolist()
        picked += chosen
        labels = torch.cat([labels, oracle(chosen).float()])
    curve["picked"] = picked
    return curve


# ----- the study: labels needed per rule -----------------------------------------------------------


def summarise_curves(curves: dict[str, list[dict]], target: float, baseline: str = "random") -> dict[str, dict]:
    """Per rule: labels needed to reach `target` on each seed, their mean (over seeds that reached it),
    how many seeds reached it, labels saved against `baseline` (paired by seed), and final accuracy."""
    summary: dict[str, dict] = {}
    for rule, runs in curves.items():
        needed = [labels_to_reach(run["labels"], run["accuracy"], target) for run in runs]
        reached = [n for n in needed if n is not None]
        summary[rule] = {
            "labels_needed": needed,
            "mean_labels_needed": sum(reached) / len(reached) if reached else None,
            "seeds_reaching_target": len(reached),
            "final_accuracy": sum(run["accuracy"][-1] for run in runs) / len(runs),
            "mean_accuracy_over_curve": sum(sum(run["accuracy"]) / len(run["accuracy"]) for run in runs) / len(runs),
        }
    if baseline in summary:
        base = summary[baseline]["labels_needed"]
        for rule, row in summary.items():
            pairs = [(b, n) for b, n in zip(base, row["labels_needed"]) if b is not None and n is not None]
            row["labels_saved_vs_random"] = (
                sum(1 - n / b for b, n in pairs) / len(pairs) if pairs else None
            )  # mean over seeds where both reached the target
    return summary


class ActiveConfig(EngineOptions):
    """`tandem active`: how many labels each acquisition rule needs to reach a held-out reward-model accuracy."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/active"), description="Output folder: results.json, report.md, active_learning.png.")
    model: Path = Field(Path("runs/quickstart/sft/model"), description="Causal LM whose frozen features the reward heads read (and the policy for --pool policy).")
    task: str = Field("sentiment", description="Built-in task: its gold reward is the judge standing in for the human.")
    pool: Literal["task", "policy"] = Field("task", description="Unlabelled pairs: the task's candidate pairs, or two samples of --model per prompt.")
    n_pool: int = Field(2000, ge=2, description="Unlabelled pairs in the pool.")
    n_test: int = Field(500, ge=1, description="Held-out gold-labelled pairs (held-out prompts) for measuring accuracy.")
    rules: str = Field("random,disagreement,entropy,bald", description="Comma-separated acquisition rules to compare.")
    seeds: int = Field(5, ge=1, description="Repetitions (seeds seed..seed+seeds-1), each with its own seed set.")
    seed: int = Field(0, description="First seed.")
    seed_size: int = Field(16, ge=1, description="Randomly chosen pairs labelled before the first fit.")
    batch_size: int = Field(16, ge=1, description="Pairs labelled per round.")
    budget: int = Field(384, ge=1, description="Labels spent in total per run.")
    target_accuracy: float = Field(0.85, gt=0, le=1, description="Held-out accuracy whose label cost is reported.")
    judge_temperature: float = Field(0.0, ge=0, description="0: noiseless gold labels; > 0: Bradley-Terry noise, P(A>B) = sigma((gA - gB) / T).")
    members: int = Field(5, ge=2, description="Reward heads in the ensemble.")
    head: Literal["linear", "mlp"] = Field("linear", description="Reward head on the frozen features.")
    feature_layer: int = Field(0, description="hidden_states index the features come from: 0 = token embeddings, -1 = last layer.")
    head_steps: int = Field(150, ge=1, description="Full-batch Adam steps per fit.")
    head_lr: float = Field(0.05, gt=0, description="Adam learning rate of the heads.")
    weight_decay: float = Field(1e-2, ge=0, description="L2 penalty on the heads' weights.")
    progress: bool = Field(True, description="Show a progress bar.")

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in ACQUISITION_RULES]
        if unknown or not names:
            raise ValueError(f"unknown acquisition rule(s) {unknown}; known: {', '.join(sorted(ACQUISITION_RULES))}")
        return ",".join(names)

    @model_validator(mode="after")
    def _sizes_fit(self) -> ActiveConfig:
        if not self.seed_size <= self.budget <= self.n_pool:
            raise ValueError(f"need seed_size ({self.seed_size}) <= budget ({self.budget}) <= n_pool ({self.n_pool})")
        return self


def shuffled_sides(pairs: list[dict], seed: int) -> list[dict]:
    """Gold-ranked pairs {prompt, chosen, rejected} as unlabelled {prompt, a, b}, the better side at random."""
    rng = random.Random(seed)
    out = []
    for pair in pairs:
        a, b = (pair["chosen"], pair["rejected"]) if rng.random() < 0.5 else (pair["rejected"], pair["chosen"])
        out.append({"prompt": pair["prompt"], "a": a, "b": b})
    return out


def pair_features(model, tokenizer, pairs: list[dict], layer: int) -> tuple[Tensor, Tensor]:
    prompts = [p["prompt"] for p in pairs]
    return (response_features(model, tokenizer, prompts, [p["a"] for p in pairs], layer),
            response_features(model, tokenizer, prompts, [p["b"] for p in pairs], layer))


def run_active_study(config: ActiveConfig) -> dict:
    """Learning curves (held-out accuracy vs labels) of every rule on every seed; writes JSON, Markdown and a PNG."""
    from tandem.generation.engines import engine_for
    from tandem.preference_data.synthetic_pairs import policy_pairs
    from tandem.models.loading import load_causal_lm, load_tokenizer

    started = time.perf_counter()
    task = get_task(config.task)
    model, tokenizer = load_causal_lm(config.model), load_tokenizer(config.model)
    if config.pool == "task":
        pool = shuffled_sides(task.preference_pairs(config.n_pool, seed=config.seed), seed=config.seed)
    else:
        prompts = [row["prompt"] for row in task.sft_examples(config.n_pool, seed=config.seed)]
        engine = engine_for(config.engine, model, tokenizer, config.model)  # the features stay on the HF model
        pool = policy_pairs(model, model, tokenizer, prompts, 1.0, 1.0, task.max_new_tokens, seed=config.seed,
                            engine_a=engine, engine_b=engine)
        del engine
    test = shuffled_sides(task.preference_pairs(config.n_test, seed=config.seed + 10_000, held_out=True), config.seed + 1)
    pool_a, pool_b = pair_features(model, tokenizer, pool, config.feature_layer)
    test_a, test_b = pair_features(model, tokenizer, test, config.feature_layer)
    everything = torch.cat([pool_a, pool_b])  # unlabelled statistics only
    mean, std = everything.mean(0), everything.std(0) + 1e-6
    pool_a, pool_b, test_a, test_b = ((x - mean) / std for x in (pool_a, pool_b, test_a, test_b))
    exact = gold_judge(task)
    test_labels = torch.tensor(exact([t["prompt"] for t in test], [t["a"] for t in test], [t["b"] for t in test]))
    judge = gold_judge(task, config.judge_temperature)
    ensemble = EnsembleConfig(members=config.members, head=config.head, steps=config.head_steps, lr=config.head_lr,
                              weight_decay=config.weight_decay)
    rules = config.rules.split(",")
    curves: dict[str, list[dict]] = {rule: [] for rule in rules}
    bar = tqdm(total=len(rules) * config.seeds, desc="active", disable=not config.progress)
    for seed in range(config.seed, config.seed + config.seeds):
        for rule in rules:
            labeller = torch.Generator().manual_seed(seed)  # the same noisy human for every rule

            def oracle(indices: list[int]) -> Tensor:
                rows = [pool[i] for i in indices]
                return draw_labels(judge([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows]), labeller)

            curve = labelling_curve(pool_a, pool_b, oracle, test_a, test_b, test_labels, rule, seed_size=config.seed_size,
                                    batch_size=config.batch_size, budget=config.budget, ensemble=ensemble, seed=seed)
            curves[rule].append({"seed": seed, "labels": curve["labels"], "accuracy": curve["accuracy"]})
            bar.update(1)
    bar.close()
    summary = summarise_curves(curves, config.target_accuracy)
    result = {"config": config.model_dump(mode="json"), "summary": summary, "curves": curves,
              "seconds": time.perf_counter() - started}
    write_active_report(config.out, result)
    return result


def active_table(summary: dict[str, dict], target: float, seeds: int) -> str:
    """Markdown table: labels needed to reach `target` per rule, savings against random, final accuracy."""
    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    rows = [f"| rule | labels to reach {target:.2f} (mean) | seeds reaching it | labels saved vs random | final accuracy |",
            "|---|---|---|---|---|"]
    for rule, row in summary.items():
        rows.append(f"| {rule} | {fmt(row['mean_labels_needed'], '{:.0f}')} | {row['seeds_reaching_target']}/{seeds} | "
                    f"{fmt(row.get('labels_saved_vs_random'), '{:.0%}')} | {row['final_accuracy']:.3f} |")
    return "\n".join(rows)


def plot_curves(axis, result: dict) -> None:
    """Mean +- std (over seeds) held-out accuracy against labels, one line per rule, and the target."""
    for rule, runs in result["curves"].items():
        length = min(len(run["accuracy"]) for run in runs)
        accuracy = torch.tensor([run["accuracy"][:length] for run in runs])
        labels = runs[0]["labels"][:length]
        mean, std = accuracy.mean(0), accuracy.std(0, unbiased=False)
        needed = result["summary"][rule]["mean_labels_needed"]
        tag = f"{rule} ({needed:.0f} labels)" if needed is not None else f"{rule} (target not reached)"
        axis.plot(labels, mean, marker="o", markersize=3, label=tag)
        axis.fill_between(labels, mean - std, mean + std, alpha=0.15)
    axis.axhline(result["config"]["target_accuracy"], color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("labelled pairs")
    axis.set_ylabel("held-out reward-model accuracy (gold)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")


def write_active_report(out: Path, result: dict) -> None:
    """results.json, report.md and active_learning.png (mean +- std held-out accuracy vs labels per rule)."""
    plt = headless_pyplot()

    out.mkdir(parents=True, exist_ok=True)
    config = result["config"]
    write_json(out / "results.json", result)
    table = active_table(result["summary"], config["target_accuracy"], config["seeds"])
    atomic_write_text(out / "report.md", f"# Active learning: {config['task']}, pool {config['pool']}, "
                      f"judge temperature {config['judge_temperature']}\n\n{table}\n")
    figure, axis = plt.subplots(figsize=(6, 4))
    plot_curves(axis, result)
    axis.set_title(f"{config['task']}: {config['seeds']} seeds, ensemble of {config['members']} {config['head']} heads")
    figure.tight_layout()
    figure.savefig(out / "active_learning.png", dpi=110)
    plt.close(figure)
    print(table)
