"""Active selection of which preference pairs to label (active learning; querying where an ensemble of reward
models disagrees, as in Christiano et al. 2017).

The reward model here is an ensemble of K small reward heads r_k on *frozen* features phi(x, y) of a
causal LM (the SFT model by default): phi is the last hidden state averaged over the response tokens,
standardised with the unlabelled pool's statistics. Each head is linear (r = w . phi) or a one-layer
MLP; P_k(A > B) = sigma(r_k(phi_A) - r_k(phi_B)) (Bradley & Terry 1952) and each member is fitted with the
Bradley-Terry loss -log sigma(r_k(phi_w) - r_k(phi_l)) (Ouyang et al. 2022, eq. 1) on its own bootstrap resample
of the labelled pairs (Poisson(1) weights) from its own initialisation, which is what makes the members disagree
where the data say little (Lakshminarayanan et al. 2017, "deep ensembles").

Acquisition rules score every unlabelled pair from the (K, N) matrix of member probabilities p_kn;
the loop labels the top `batch_size` pairs, asking a judge that stands in for the human:

    random        u_n ~ U(0, 1)                                        (the baseline)
    disagreement  Var_k p_kn                                           (query by committee)
    entropy       H(mean_k p_kn)                                       (predictive entropy, uncertainty sampling)
    bald          H(mean_k p_kn) - mean_k H(p_kn)                      (BALD mutual information, Houlsby et al. 2011)

with H(p) = -p log p - (1 - p) log(1 - p). BALD is the information-directed rule: it is the expected
information the label carries about the ensemble member, I(y; k | x), high only where members are
individually confident but disagree, not where every member says 50/50 (label noise).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn
from tqdm.auto import tqdm

from tandem.algorithms.losses import bradley_terry_loss
from tandem.data import pad_sft_batch, tokenize_sft
from tandem.feedback.judges import draw_labels, gold_judge
from tandem.registry import registrar
from tandem.tasks import get_task
from tandem.files import atomic_write_text

AcquisitionRule = Callable[[Tensor, torch.Generator], Tensor]
ACQUISITION_RULES: dict[str, AcquisitionRule] = {}


# Decorator: make `fn(member_probs, generator) -> scores` available as acquisition rule `name`.
register_acquisition = registrar(ACQUISITION_RULES, "acquisition rule")


def binary_entropy(p: Tensor) -> Tensor:
    """H(p) = -p log p - (1 - p) log(1 - p) in nats, with 0 log 0 = 0."""
    p = p.clamp(0.0, 1.0)
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


@register_acquisition("random")
def random_scores(member_probs: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform random scores: picking the top ones is labelling a random subset."""
    return torch.rand(member_probs.shape[-1], generator=generator)


@register_acquisition("disagreement")
def ensemble_disagreement(member_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Var_k p_kn, the (population) variance of P(A > B) across the K ensemble members."""
    return member_probs.var(dim=0, unbiased=False)


@register_acquisition("entropy")
def predictive_entropy(member_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """H(mean_k p_kn): entropy of the ensemble's predictive distribution of the label."""
    return binary_entropy(member_probs.mean(dim=0))


@register_acquisition("bald")
def bald(member_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """BALD mutual information I(y; k) = H(mean_k p_kn) - mean_k H(p_kn) (Houlsby et al. 2011), >= 0."""
    return binary_entropy(member_probs.mean(dim=0)) - binary_entropy(member_probs).mean(dim=0)


def acquisition_scores(rule: str, member_probs: Tensor, generator: torch.Generator) -> Tensor:
    """Scores (N,) of rule `rule` for member probabilities (K, N); higher = label sooner."""
    if rule not in ACQUISITION_RULES:
        raise ValueError(f"unknown acquisition rule {rule!r}; known: {', '.join(sorted(ACQUISITION_RULES))}")
    if member_probs.ndim != 2:
        raise ValueError(f"member_probs must be (members, pairs), got shape {tuple(member_probs.shape)}")
    return ACQUISITION_RULES[rule](member_probs, generator)


def select_batch(scores: Tensor, labelled: Tensor, k: int) -> Tensor:
    """Indices of the `k` highest-scoring pairs not yet labelled (fewer if fewer remain)."""
    masked = scores.masked_fill(labelled, -math.inf)
    k = min(k, int((~labelled).sum()))
    return torch.topk(masked, k).indices


def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> int | None:
    """The first label count on a learning curve whose accuracy is at least `target` (None: never)."""
    return next((n for n, a in zip(labels, accuracy) if a >= target), None)


# ----- frozen features -----------------------------------------------------------------------------


@torch.no_grad()
def response_features(model, tokenizer, prompts: list[str], responses: list[str], layer: int = 0,
                      batch_size: int = 64, max_length: int | None = 256) -> Tensor:
    """phi(x, y): hidden states of layer `layer` averaged over the response tokens (and EOS), (N, hidden).

    `layer` indexes Hugging Face's `hidden_states`: 0 is the input embeddings, -1 the last layer.
    """
    backbone = getattr(model, model.base_model_prefix)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [tokenize_sft({"prompt": p, "completion": r}, tokenizer, max_length) for p, r in zip(prompts, responses, strict=True)]
    features = []
    for start in range(0, len(rows), batch_size):
        batch = pad_sft_batch(rows[start : start + batch_size], tokenizer.pad_token_id)
        hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                          output_hidden_states=True).hidden_states[layer]
        mask = (batch["labels"] != -100).to(device).unsqueeze(-1).float()
        features.append(((hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    model.train(was_training)
    return torch.cat(features) if features else torch.zeros(0, model.config.hidden_size)


# ----- the ensemble of reward heads ----------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleConfig:
    """K reward heads on frozen features, trained full-batch with Adam."""

    members: int = 5
    head: str = "linear"        # "linear": r = w . phi; "mlp": r = v . tanh(W phi + b)
    hidden_size: int = 32
    steps: int = 150
    lr: float = 0.05
    weight_decay: float = 1e-2  # L2 penalty on every weight, per member
    bootstrap: bool = True


class RewardHeadEnsemble(nn.Module):
    """K reward heads evaluated together: `rewards(phi)` is (K, N), `preference_probs` is (K, N)."""

    def __init__(self, dim: int, config: EnsembleConfig, generator: torch.Generator):
        super().__init__()
        if config.head not in ("linear", "mlp"):
            raise ValueError(f"unknown reward head {config.head!r}; known: linear, mlp")
        if config.members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {config.members}")
        k, h = config.members, config.hidden_size
        self.head = config.head
        if self.head == "linear":
            self.weight = nn.Parameter(torch.randn(k, dim, generator=generator) / math.sqrt(dim))
        else:
            self.hidden = nn.Parameter(torch.randn(k, dim, h, generator=generator) / math.sqrt(dim))
            self.bias = nn.Parameter(torch.zeros(k, h))
            self.weight = nn.Parameter(torch.randn(k, h, generator=generator) / math.sqrt(h))

    def rewards(self, features: Tensor) -> Tensor:
        if self.head == "linear":
            return torch.einsum("nd,kd->kn", features, self.weight)
        activations = torch.tanh(torch.einsum("nd,kdh->knh", features, self.hidden) + self.bias[:, None, :])
        return torch.einsum("knh,kh->kn", activations, self.weight)

    def preference_probs(self, features_a: Tensor, features_b: Tensor) -> Tensor:
        """P_k(A > B) = sigma(r_k(phi_A) - r_k(phi_B)) for every member k and pair n."""
        return torch.sigmoid(self.rewards(features_a) - self.rewards(features_b))


def fit_ensemble(features_a: Tensor, features_b: Tensor, labels: Tensor, config: EnsembleConfig, seed: int) -> RewardHeadEnsemble:
    """Train every member on its bootstrap resample with -log sigma(r_w - r_l) (Bradley-Terry); labels 1 = A better."""
    generator = torch.Generator().manual_seed(seed)
    ensemble = RewardHeadEnsemble(features_a.shape[1], config, generator)
    n = len(labels)
    weights = torch.ones(config.members, n)
    if config.bootstrap and config.members > 1:
        weights = torch.poisson(torch.ones(config.members, n), generator=generator)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
    a_better = labels.bool()
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.lr)
    for _ in range(config.steps):
        rewards_a, rewards_b = ensemble.rewards(features_a), ensemble.rewards(features_b)
        chosen, rejected = torch.where(a_better, rewards_a, rewards_b), torch.where(a_better, rewards_b, rewards_a)
        loss = (weights * bradley_terry_loss(chosen, rejected)).sum()
        loss = loss + config.weight_decay * sum((p**2).sum() for name, p in ensemble.named_parameters() if name != "bias")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ensemble.requires_grad_(False)


def ensemble_accuracy(ensemble: RewardHeadEnsemble, features_a: Tensor, features_b: Tensor, labels: Tensor) -> float:
    """Share of pairs where the ensemble-mean P(A > B) is on the side of the label."""
    mean = ensemble.preference_probs(features_a, features_b).mean(0)
    return float(((mean > 0.5).float() == labels).float().mean())


# ----- the labelling loop --------------------------------------------------------------------------

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


class ActiveConfig(BaseModel):
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
    from tandem.feedback.synthetic import policy_pairs
    from tandem.models.loading import load_causal_lm, load_tokenizer

    started = time.perf_counter()
    task = get_task(config.task)
    model, tokenizer = load_causal_lm(config.model), load_tokenizer(config.model)
    if config.pool == "task":
        pool = shuffled_sides(task.preference_pairs(config.n_pool, seed=config.seed), seed=config.seed)
    else:
        prompts = [row["prompt"] for row in task.sft_examples(config.n_pool, seed=config.seed)]
        pool = policy_pairs(model, model, tokenizer, prompts, 1.0, 1.0, task.max_new_tokens, seed=config.seed)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    config = result["config"]
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
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
