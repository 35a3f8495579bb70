"""`tandem synth-prefs`: what synthetic preference pairs (`tandem.preference_data.synthetic_pairs`) are worth.

`run_synthetic_study` labels each method's candidate pairs (by the construction rule and/or the gold reward),
trains one reward model per source on the same number of pairs and measures each on held-out gold-labelled
pairs, against a reward model trained on gold-labelled task pairs and against no training at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator

from tandem.files import atomic_write_text, write_json, write_jsonl
from tandem.generation.engines import EngineOptions, make_engine
from tandem.plotting import headless_pyplot
from tandem.preference_data.labels import gold_judge, label_pairs, rule_judge
from tandem.preference_data.synthetic_pairs import CORRUPTIONS, corruption_pairs, policy_pairs, rule_agreement
from tandem.preference_studies.measure import train_and_score, untrained_accuracy
from tandem.tasks import get_task


# ----- the study -----------------------------------------------------------------------------------

METHODS = ("corrupt", "temperature", "checkpoint")


class SyntheticConfig(EngineOptions):
    """`tandem synth-prefs`: generate synthetic preference pairs and measure reward models trained on them."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/synth-prefs"), description="Output folder: pairs_*.jsonl, results.json, report.md, synthetic.png.")
    policy: Path = Field(Path("runs/quickstart/sft/model"), description="The model whose samples make the pairs (the later checkpoint).")
    earlier: Path = Field(Path("runs/quickstart/pretrain/model"), description="The earlier checkpoint for --methods checkpoint.")
    backbone: Path | None = Field(None, description="Causal LM the reward models start from (default: --policy).")
    task: str = Field("sentiment", description="Built-in task: prompts, gold-labelled pairs and the gold judge.")
    methods: str = Field("corrupt,temperature,checkpoint", description=f"Comma-separated sources of pairs: {', '.join(METHODS)}.")
    corruptions: str = Field("shuffle,truncate,replace", description="Comma-separated corruptions used by the corrupt method, in turn.")
    judge: Literal["rule", "gold", "both"] = Field("rule", description="Who labels the synthetic pairs: the construction rule, the gold reward, or one set of each.")
    n_pairs: int = Field(256, ge=2, description="Training pairs per reward model (synthetic and gold alike).")
    n_test: int = Field(500, ge=1, description="Held-out gold-labelled pairs the reward models are measured on.")
    low_temperature: float = Field(0.5, gt=0, description="Temperature of the preferred side of temperature pairs.")
    high_temperature: float = Field(1.5, gt=0, description="Temperature of the other side.")
    sample_temperature: float = Field(1.0, gt=0, description="Temperature of policy samples for corrupt and checkpoint pairs.")
    compare: bool = Field(True, description="Train and measure the reward models (off: only write the pairs).")
    rm_batch_size: int = Field(16, ge=1, description="Reward-model batch size.")
    rm_epochs: float = Field(4.0, gt=0, description="Passes over the training pairs.")
    rm_lr: float = Field(2e-4, gt=0, description="Reward-model learning rate.")
    seed: int = Field(0, description="Seed for prompts, sampling, labels and training.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision of reward-model training.")

    @field_validator("methods", "corruptions")
    @classmethod
    def _comma_list(cls, value: str, info) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        known = METHODS if info.field_name == "methods" else tuple(CORRUPTIONS)
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"unknown {info.field_name} {unknown}; known: {', '.join(known)}")
        return ",".join(names)


def synthetic_candidates(config: SyntheticConfig, task, n: int) -> dict[str, list[dict]]:
    """Unlabelled candidate pairs of each method, `n` per method, from the task's training prompts."""
    policy = make_engine(config.engine, config.policy, memory=config.engine_memory)  # every method's samples come from these engines
    earlier = make_engine(config.engine, config.earlier, memory=config.engine_memory) if "checkpoint" in config.methods.split(",") else None
    tokenizer = policy.tokenizer
    prompts = [row["prompt"] for row in task.sft_examples(n, seed=config.seed + 30_000)]
    candidates: dict[str, list[dict]] = {}
    for method in config.methods.split(","):
        if method == "corrupt":
            texts = policy.sample(prompts, max_new_tokens=task.max_new_tokens, temperature=config.sample_temperature,
                                  seed=config.seed).texts
            rows = [{"prompt": p, "completion": t} for p, t in zip(prompts, texts)]
            pairs = corruption_pairs(rows, config.corruptions.split(","), seed=config.seed)
        elif method == "temperature":
            pairs = policy_pairs(None, None, tokenizer, prompts, config.low_temperature, config.high_temperature,
                                 task.max_new_tokens, seed=config.seed, engine_a=policy)
        else:
            pairs = policy_pairs(None, None, tokenizer, prompts, config.sample_temperature, config.sample_temperature,
                                 task.max_new_tokens, seed=config.seed, engine_a=policy, engine_b=earlier)
        for pair in pairs:
            pair.setdefault("method", method)
        candidates[method] = pairs
    return candidates


def run_synthetic_study(config: SyntheticConfig) -> dict:
    """Write each method's labelled pairs; with --compare, the held-out gold accuracy of a reward model trained
    on each, on as many gold-labelled task pairs, and with no training."""
    started = time.perf_counter()
    task = get_task(config.task)
    candidates = synthetic_candidates(config, task, config.n_pairs + config.n_pairs // 2)  # ties and duplicates are dropped
    judges = {"rule": rule_judge, "gold": gold_judge(task)}
    chosen_judges = ["rule", "gold"] if config.judge == "both" else [config.judge]
    backbone = config.backbone or config.policy
    test = task.preference_pairs(config.n_test, seed=config.seed + 10_000, held_out=True)
    rows: list[dict] = []
    sets: dict[str, list[dict]] = {}
    for method, pairs in candidates.items():
        agreement = rule_agreement(pairs, task)
        for judge_name in chosen_judges:
            labelled = label_pairs(pairs, judges[judge_name], torch.Generator().manual_seed(config.seed))[: config.n_pairs]
            name = f"{method}/{judge_name}"
            write_jsonl(config.out / f"pairs_{method}_{judge_name}.jsonl", labelled)
            sets[name] = labelled
            rows.append({"source": name, "pairs": len(labelled), "rule_agrees_with_gold": agreement})
    result: dict = {"config": config.model_dump(mode="json"), "rows": rows}
    if config.compare:
        sets["gold (task pairs)"] = task.preference_pairs(config.n_pairs, seed=config.seed)
        rows.append({"source": "gold (task pairs)", "pairs": config.n_pairs, "rule_agrees_with_gold": None})
        for row in rows:
            measured = train_and_score(backbone, sets[row["source"]], test, config.out / "runs" / row["source"].replace("/", "_").replace(" ", "_"),
                                       seed=config.seed, batch_size=config.rm_batch_size, epochs=config.rm_epochs, lr=config.rm_lr,
                                       mixed_precision=config.mixed_precision)
            row.update(accuracy=measured["accuracy"], steps=measured["steps"], train_seconds=measured["seconds"])
        rows.append({"source": "none (untrained head)", "pairs": 0, "rule_agrees_with_gold": None,
                     "accuracy": untrained_accuracy(backbone, test, config.seed)})
    result["seconds"] = time.perf_counter() - started
    write_synthetic_report(config.out, result)
    return result


def synthetic_table(rows: list[dict]) -> str:
    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    lines = ["| training pairs | pairs | rule agrees with gold | held-out gold accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['pairs']} | {fmt(r['rule_agrees_with_gold'])} | {fmt(r.get('accuracy'))} |" for r in rows]
    return "\n".join(lines)


def write_synthetic_report(out: Path, result: dict) -> None:
    """results.json, report.md and (when measured) synthetic.png, a bar per training source."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    table = synthetic_table(result["rows"])
    atomic_write_text(out / "report.md", f"# Synthetic preferences: {result['config']['task']}\n\n{table}\n")
    print(table)
    measured = [r for r in result["rows"] if "accuracy" in r]
    if not measured:
        return
    plt = headless_pyplot()

    figure, axis = plt.subplots(figsize=(7, 3.6))
    axis.barh([r["source"] for r in measured], [r["accuracy"] for r in measured], color="#4c72b0")
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    axis.set_xlim(0, 1)
    axis.set_xlabel("held-out gold-pair accuracy of the reward model")
    axis.invert_yaxis()
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out / "synthetic.png", dpi=110)
    plt.close(figure)
