"""Synthetic preference generation from existing models (rule-labelled comparisons, in the spirit of Kim et al.
2023, "Aligning Large Language Models through Synthetic Feedback"), and what it is worth.

Candidate pairs {prompt, a, b} are built so that a rule says which side is better, with no human:

    corrupt      a = a policy sample, b = the same sample shuffled / truncated / with words replaced
    temperature  a = a sample at a low temperature, b = one at a high temperature
    checkpoint   a = a sample of the later checkpoint (SFT), b = one of the earlier (pre-trained)

A judge (`tandem.feedback.judges`) labels them: `rule_judge` (a is better, by construction) or the
task's gold reward (`gold_judge`). `run_synthetic_study` trains one reward model per source on the
same number of pairs and measures each on held-out gold-labelled pairs, against a reward model
trained on gold-labelled task pairs and against no training at all.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.feedback.judges import Judge, draw_labels, gold_judge, rule_judge
from tandem.feedback.measure import train_and_score, untrained_accuracy, write_pairs
from tandem.generation import sample
from tandem.registry import registrar
from tandem.tasks import get_task
from tandem.files import atomic_write_text

Corruption = Callable[[str, random.Random, list[str]], str]
CORRUPTIONS: dict[str, Corruption] = {}


# Decorator: make `fn(text, rng, vocabulary) -> corrupted text` available as corruption `name`.
register_corruption = registrar(CORRUPTIONS, "corruption")


def _join(words: list[str], like: str) -> str:
    """Words joined by spaces, keeping the leading space a continuation starts with."""
    return (" " if like.startswith(" ") else "") + " ".join(words)


@register_corruption("shuffle")
def shuffle_words(text: str, rng: random.Random, vocabulary: list[str] | None = None) -> str:
    """The same words in a random order (a different order whenever the words allow one)."""
    words = text.split()
    if len(set(words)) < 2:
        return text
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return _join(shuffled, text)


@register_corruption("truncate")
def truncate_words(text: str, rng: random.Random, vocabulary: list[str] | None = None, keep: tuple[float, float] = (0.2, 0.6)) -> str:
    """The first 20-60% of the words (at least one word fewer than the original)."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = max(1, min(len(words) - 1, round(rng.uniform(*keep) * len(words))))
    return _join(words[:kept], text)


@register_corruption("replace")
def replace_words(text: str, rng: random.Random, vocabulary: list[str], fraction: float = 0.3) -> str:
    """round(fraction * n) distinct word positions (at least one) replaced by other words drawn from `vocabulary`."""
    words = text.split()
    choices = sorted(set(vocabulary))
    if not words or len(choices) < 2:
        return text
    for position in rng.sample(range(len(words)), max(1, round(fraction * len(words)))):
        replacement = words[position]
        while replacement == words[position]:
            replacement = rng.choice(choices)
        words[position] = replacement
    return _join(words, text)


def corruption_pairs(rows: list[dict], kinds: list[str], seed: int) -> list[dict]:
    """{prompt, a: original, b: corrupted, method} for each {prompt, completion}; kinds taken in turn."""
    unknown = [kind for kind in kinds if kind not in CORRUPTIONS]
    if unknown or not kinds:
        raise ValueError(f"unknown corruption(s) {unknown}; known: {', '.join(CORRUPTIONS)}")
    rng = random.Random(seed)
    vocabulary = [word for row in rows for word in row["completion"].split()]
    pairs = []
    for index, row in enumerate(rows):
        kind = kinds[index % len(kinds)]
        corrupted = CORRUPTIONS[kind](row["completion"], rng, vocabulary)
        pairs.append({"prompt": row["prompt"], "a": row["completion"], "b": corrupted, "method": f"corrupt:{kind}"})
    return pairs


def policy_pairs(model_a, model_b, tokenizer, prompts: list[str], temperature_a: float, temperature_b: float,
                 max_new_tokens: int, seed: int) -> list[dict]:
    """{prompt, a, b}: a sampled from `model_a` at `temperature_a`, b from `model_b` at `temperature_b`."""
    a = sample(model_a, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature_a, seed=seed).texts
    b = sample(model_b, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature_b, seed=seed + 1).texts
    return [{"prompt": p, "a": x, "b": y} for p, x, y in zip(prompts, a, b)]


def label_pairs(pairs: list[dict], judge: Judge, generator: torch.Generator, drop_ties: bool = True) -> list[dict]:
    """Preference records {prompt, chosen, rejected, method} from candidate pairs and a judge's P(a better).

    Pairs with an empty response (a sample that stopped at once) or two identical responses are
    dropped; with `drop_ties`, so are pairs the judge calls exactly even (p = 0.5), rather than
    labelling them by a coin flip.
    """
    kept = [p for p in pairs if p["a"].strip() and p["b"].strip() and p["a"].strip() != p["b"].strip()]
    if not kept:
        return []
    probabilities = judge([p["prompt"] for p in kept], [p["a"] for p in kept], [p["b"] for p in kept])
    labels = draw_labels(probabilities, generator).tolist()
    records = []
    for pair, p, a_better in zip(kept, probabilities, labels):
        if drop_ties and p == 0.5:
            continue
        chosen, rejected = (pair["a"], pair["b"]) if a_better else (pair["b"], pair["a"])
        records.append({"prompt": pair["prompt"], "chosen": chosen, "rejected": rejected, "method": pair.get("method", "")})
    return records


def rule_agreement(pairs: list[dict], task) -> float | None:
    """Share of pairs (gold ties left out) where the construction rule 'a is better' agrees with the gold reward."""
    probabilities = gold_judge(task)([p["prompt"] for p in pairs], [p["a"] for p in pairs], [p["b"] for p in pairs])
    decided = [p for p in probabilities if p != 0.5]
    return sum(decided) / len(decided) if decided else None


# ----- the study -----------------------------------------------------------------------------------

METHODS = ("corrupt", "temperature", "checkpoint")


class SyntheticConfig(BaseModel):
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
    from tandem.models.loading import load_causal_lm, load_tokenizer

    policy, tokenizer = load_causal_lm(config.policy), load_tokenizer(config.policy)
    prompts = [row["prompt"] for row in task.sft_examples(n, seed=config.seed + 30_000)]
    candidates: dict[str, list[dict]] = {}
    for method in config.methods.split(","):
        if method == "corrupt":
            texts = sample(policy, tokenizer, prompts, max_new_tokens=task.max_new_tokens,
                           temperature=config.sample_temperature, seed=config.seed).texts
            rows = [{"prompt": p, "completion": t} for p, t in zip(prompts, texts)]
            pairs = corruption_pairs(rows, config.corruptions.split(","), seed=config.seed)
        elif method == "temperature":
            pairs = policy_pairs(policy, policy, tokenizer, prompts, config.low_temperature, config.high_temperature,
                                 task.max_new_tokens, seed=config.seed)
        else:
            earlier = load_causal_lm(config.earlier)
            pairs = policy_pairs(policy, earlier, tokenizer, prompts, config.sample_temperature, config.sample_temperature,
                                 task.max_new_tokens, seed=config.seed)
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
            write_pairs(config.out / f"pairs_{method}_{judge_name}.jsonl", labelled)
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
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    table = synthetic_table(result["rows"])
    atomic_write_text(out / "report.md", f"# Synthetic preferences: {result['config']['task']}\n\n{table}\n")
    print(table)
    measured = [r for r in result["rows"] if "accuracy" in r]
    if not measured:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
