"""AI preference labels (RLAIF, Lee et al. 2023; RL-CAI, Bai et al. 2022b): pairs sampled from a policy, labelled by
a judge.

    a, b = sample_pairs(policy, tokenizer, prompts, max_new_tokens=40, seed=0)
    p = ai_preferences(judge, prompts, a, b)            # P(a better), both orders averaged by the judge; None = unusable
    rows = preference_rows(prompts, a, b, p)            # {"prompt", "chosen", "rejected", "ai_probability"} for DPO / RM
    label_agreement(p, gold_a, gold_b)                   # how often the AI label agrees with the gold label

An unusable verdict stays None all the way: it never becomes a label, and it is counted in the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from tandem.generation import sample


def sample_pairs(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int = 0,
                 temperature: float = 1.0) -> tuple[list[str], list[str]]:
    """Two independent samples from `model` for each prompt (seeds `seed` and `seed + 1`)."""
    first = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed).texts
    second = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + 1).texts
    return first, second


def ai_preferences(judge, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float | None]:
    """P(a better than b) per pair from `judge.compare` (which asks in both orders when the judge is set to)."""
    return [verdict.value if verdict.usable else None for verdict in judge.compare(prompts, responses_a, responses_b)]


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
    """Preference records from AI labels: chosen = the response the judge prefers.

    A pair is left out when its label is unusable (None), when the judge has no preference beyond
    `min_confidence` (|p - 0.5| <= min_confidence: ties), or when the two responses are the same text.
    """
    rows = []
    for prompt, a, b, p in zip(prompts, responses_a, responses_b, probabilities, strict=True):
        if p is None or abs(p - 0.5) <= min_confidence or a == b:
            continue
        chosen, rejected = (a, b) if p > 0.5 else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "ai_probability": max(p, 1.0 - p)})
    return rows


def label_agreement(probabilities: Sequence[float | None], gold_a: Sequence[float], gold_b: Sequence[float]) -> dict:
    """How often the AI label agrees with the gold label, over the pairs where gold has a preference.

    Returns `agreement` (over pairs with a usable, decided AI label; chance is 0.5), `coverage` (share of
    gold-decided pairs the AI decided), `unusable` and `ai_ties` counts, and `n_gold_decided`.
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
