"""Synthetic preference pairs from existing models (rule-labelled comparisons, in the spirit of Kim et al. 2023,
"Aligning Large Language Models through Synthetic Feedback"): candidate pairs {prompt, a, b} built so that a rule
says which side is better, with no human:

    corrupt      a = a policy sample, b = the same sample shuffled / truncated / with words replaced
    temperature  a = a sample at a low temperature, b = one at a high temperature
    checkpoint   a = a sample of the later checkpoint (SFT), b = one of the earlier (pre-trained)

Corruptions (`CORRUPTIONS`: shuffle, truncate, replace) are a registry of pure functions. A labeller
(`tandem.preference_data.labels`: `rule_judge`, or the task's gold reward with `gold_judge`) turns the candidates
into preference records with `label_pairs`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tandem.preference_data.labels import gold_judge
from tandem.preference_data.pairs import sample_pairs
from tandem.registry import registrar

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
                 max_new_tokens: int, seed: int, engine_a=None, engine_b=None) -> list[dict]:
    """{prompt, a, b}: a sampled from `model_a` at `temperature_a`, b from `model_b` at `temperature_b` (`sample_pairs`;
    `engine_a` / `engine_b`: generation engines made from them, sampling in their place)."""
    a, b = sample_pairs(model_a, tokenizer, prompts, max_new_tokens, seed=seed, temperature=temperature_a,
                        model_b=model_b, temperature_b=temperature_b, engine=engine_a, engine_b=engine_b)
    return [{"prompt": p, "a": x, "b": y} for p, x, y in zip(prompts, a, b)]


def rule_agreement(pairs: list[dict], task) -> float | None:
    """Share of pairs (gold ties left out) where the construction rule 'a is better' agrees with the gold reward."""
    probabilities = gold_judge(task)([p["prompt"] for p in pairs], [p["a"] for p in pairs], [p["b"] for p in pairs])
    decided = [p for p in probabilities if p != 0.5]
    return sum(decided) / len(decided) if decided else None
