"""From judgements to preference labels: the one labelling rule, and the labellers that stand in for a human.

A labeller is `labeller(prompts, responses_a, responses_b) -> list[float | None]`: P(response A is better than B)
per pair. `gold_judge` (a task's gold reward, noiseless or Bradley-Terry noisy) and `rule_judge` (A is better by
construction) are labellers; `pairwise` makes one of any `tandem.judges.Judge` through its `compare` verdicts.

The labelling rule, everywhere (AI labels for RLAIF / RL-CAI, synthetic pairs, active learning):

* an unusable verdict is None (`verdict_probabilities`): it never becomes a label; the pair is left out and
  counted as unusable (`label_agreement`);
* p = 0.5 is a tie: no preference, the pair is left out (a tie is never settled by a coin flip);
* otherwise the chosen response is A when p > 0.5 (`preference_rows`), or, for a noisy labeller that is
  sampled like a human, A with probability p (`label_pairs`, `draw_labels`).

    a, b = sample_pairs(policy, tokenizer, prompts, max_new_tokens=40, seed=0)   # tandem.preference_data.pairs
    p = verdict_probabilities(judge, prompts, a, b)     # P(a better), both orders averaged by the judge; None = unusable
    rows = preference_rows(prompts, a, b, p)            # {"prompt", "chosen", "rejected", "ai_probability"} for DPO / RM
    label_agreement(p, gold_a, gold_b)                  # how often the label agrees with the gold label
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import fmean

import torch

Labeller = Callable[[list[str], list[str], list[str]], list[float | None]]


# ---- labellers ---------------------------------------------------------------------------------------------
def gold_judge(task, temperature: float = 0.0) -> Labeller:
    """A labeller from a task's gold reward g: P(A > B) = sigma((g_A - g_B) / temperature).

    temperature 0 is the noiseless labeller: 1 if g_A > g_B, 0 if g_A < g_B, 0.5 on a tie. A positive
    temperature is the Bradley-Terry model of a noisy human (Bradley & Terry 1952) whose utility is the gold reward.
    """
    if temperature < 0:
        raise ValueError(f"judge temperature must be >= 0, got {temperature}")

    def judge(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float]:
        gold_a = task.gold_reward(prompts, responses_a)
        gold_b = task.gold_reward(prompts, responses_b)
        if temperature == 0:
            return [0.5 if a == b else float(a > b) for a, b in zip(gold_a, gold_b)]
        return [1.0 / (1.0 + math.exp(-(a - b) / temperature)) for a, b in zip(gold_a, gold_b)]

    return judge


def rule_judge(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float]:
    """The construction rule of synthetic pairs: response A (the uncorrupted / later / cooler one) is better."""
    return [1.0] * len(prompts)


def verdict_probabilities(judge, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float | None]:
    """P(a better than b) per pair from `judge.compare` (which asks in both orders when the judge is set to);
    None for an unusable verdict, whatever value it carries (the "neutral" policy's 0.5 included)."""
    return [verdict.value if verdict.usable else None for verdict in judge.compare(prompts, responses_a, responses_b)]


def pairwise(judge) -> Labeller:
    """A `tandem.judges.Judge` (anything with `compare(prompts, a, b) -> verdicts`) as a labeller."""
    if not hasattr(judge, "compare"):
        return judge  # already a labeller

    def ask(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float | None]:
        return verdict_probabilities(judge, prompts, responses_a, responses_b)

    return ask


# ---- probabilities -> labels ------------------------------------------------------------------------------
def draw_labels(probabilities: torch.Tensor | list[float], generator: torch.Generator) -> torch.Tensor:
    """Binary labels (1.0: A better) drawn as Bernoulli(p); p in {0, 1} gives the deterministic label."""
    p = torch.as_tensor(probabilities, dtype=torch.float32)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("a judge must return probabilities in [0, 1]")
    return (torch.rand(p.shape, generator=generator) < p).float()


def ensemble_probabilities(per_member: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Mean of the usable probabilities of each pair over the ensemble members (None when none is usable)."""
    if not per_member:
        raise ValueError("an ensemble needs at least one member")
    sizes = {len(member) for member in per_member}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members labelled different numbers of pairs: {sorted(sizes)}")
    merged = []
    for values in zip(*per_member):
        usable = [v for v in values if v is not None]
        merged.append(fmean(usable) if usable else None)
    return merged


def preference_rows(prompts: list[str], responses_a: list[str], responses_b: list[str],
                    probabilities: Sequence[float | None], min_confidence: float = 0.0) -> list[dict]:
    """Preference records from labels: chosen = the response the labeller prefers.

    A pair is left out when its label is unusable (None), when the labeller has no preference beyond
    `min_confidence` (|p - 0.5| <= min_confidence: ties), or when the two responses are the same text.
    """
    rows = []
    for prompt, a, b, p in zip(prompts, responses_a, responses_b, probabilities, strict=True):
        if p is None or abs(p - 0.5) <= min_confidence or a == b:
            continue
        chosen, rejected = (a, b) if p > 0.5 else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "ai_probability": max(p, 1.0 - p)})
    return rows


def label_pairs(pairs: list[dict], judge: Labeller, generator: torch.Generator, drop_ties: bool = True) -> list[dict]:
    """Preference records {prompt, chosen, rejected, method} from candidate pairs {prompt, a, b}, the label of each
    drawn from the labeller's P(a better) (`draw_labels`), as a noisy human would give it.

    Pairs with an empty response (a sample that stopped at once) or two identical responses are dropped, and
    so are pairs with an unusable label (None); with `drop_ties`, so are pairs the labeller calls exactly even
    (p = 0.5), rather than labelling them by a coin flip.
    """
    kept = [p for p in pairs if p["a"].strip() and p["b"].strip() and p["a"].strip() != p["b"].strip()]
    if not kept:
        return []
    probabilities = judge([p["prompt"] for p in kept], [p["a"] for p in kept], [p["b"] for p in kept])
    usable = [(pair, p) for pair, p in zip(kept, probabilities) if p is not None]
    labels = draw_labels([p for _, p in usable], generator).tolist()
    records = []
    for (pair, p), a_better in zip(usable, labels):
        if drop_ties and p == 0.5:
            continue
        chosen, rejected = (pair["a"], pair["b"]) if a_better else (pair["b"], pair["a"])
        records.append({"prompt": pair["prompt"], "chosen": chosen, "rejected": rejected, "method": pair.get("method", "")})
    return records


def label_agreement(probabilities: Sequence[float | None], gold_a: Sequence[float], gold_b: Sequence[float]) -> dict:
    """How often the label agrees with the gold label, over the pairs where gold has a preference.

    Returns `agreement` (over pairs with a usable, decided label; chance is 0.5), `coverage` (share of
    gold-decided pairs the labeller decided), `unusable` and `ai_ties` counts, and `n_gold_decided`.
    """
    agree = decided = unusable = ties = gold_decided = 0
    for p, a, b in zip(probabilities, gold_a, gold_b, strict=True):
        if a == b:
            continue
        gold_decided += 1
        if p is None:
            unusable += 1
        elif p == 0.5:
            ties += 1
        else:
            decided += 1
            agree += (p > 0.5) == (a > b)
    return {
        "agreement": agree / decided if decided else float("nan"),
        "coverage": decided / gold_decided if gold_decided else float("nan"),
        "n_gold_decided": gold_decided, "n_ai_decided": decided, "unusable": unusable, "ai_ties": ties,
    }
