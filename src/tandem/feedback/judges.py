"""Judges that stand in for the human labeller: callables returning P(response A is better than B).

A judge is `judge(prompts, responses_a, responses_b) -> list[float]`, one probability per pair. The
labelling loop (`tandem.feedback.active`) asks it only about the pairs it picked, exactly as it would
ask a person; `draw_labels` turns probabilities into binary labels with a seeded generator, so a
noisy judge (0 < p < 1) gives noisy labels reproducibly. Any `tandem.judges.Judge` (a local or remote
LLM judge, a Python function) works through `pairwise`, which reads its `compare` verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Judge = Callable[[list[str], list[str], list[str]], list[float]]


def gold_judge(task, temperature: float = 0.0) -> Judge:
    """A judge from a task's gold reward g: P(A > B) = sigma((g_A - g_B) / temperature).

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


def pairwise(judge) -> Judge:
    """A `tandem.judges.Judge` (anything with `compare(prompts, a, b) -> verdicts`) as a P(A better) callable.

    An unusable verdict (value None) counts as 0.5: no preference, so `label_pairs` drops the pair.
    """
    if not hasattr(judge, "compare"):
        return judge  # already a callable returning probabilities

    def ask(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float]:
        return [0.5 if v.value is None else float(v.value) for v in judge.compare(prompts, responses_a, responses_b)]

    return ask


def rule_judge(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[float]:
    """The construction rule of synthetic pairs: response A (the uncorrupted / later / cooler one) is better."""
    return [1.0] * len(prompts)


def draw_labels(probabilities: torch.Tensor | list[float], generator: torch.Generator) -> torch.Tensor:
    """Binary labels (1.0: A better) drawn as Bernoulli(p); p in {0, 1} gives the deterministic label."""
    p = torch.as_tensor(probabilities, dtype=torch.float32)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("a judge must return probabilities in [0, 1]")
    return (torch.rand(p.shape, generator=generator) < p).float()
