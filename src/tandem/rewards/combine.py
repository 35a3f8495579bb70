"""Weighted sums of reward sources, e.g. a format bonus plus answer correctness."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.rewards.base import RewardFunction, as_reward_source, reward_name


class WeightedSum:
    """r(x, y) = sum over sources s that apply to the sample of w_s * r_s(x, y); None when none applies.

    A source returning None for a sample is left out of that sample's sum (not counted as 0 and not
    renormalised, as TRL's GRPO combines reward functions). `score_safely` scores each term on its own,
    so a failing term is reported under its own name.

        reward = WeightedSum([(0.5, get_verifier("format")), (1.0, get_verifier("numeric"))])
    """

    def __init__(self, terms: Sequence[tuple[float, RewardFunction]], name: str | None = None) -> None:
        if not terms:
            raise ValueError("WeightedSum needs at least one (weight, source) term")
        self.terms: list[tuple[float, RewardFunction]] = []
        for weight, source in terms:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise TypeError(f"weights must be numbers, got {weight!r} for {reward_name(source)!r}")
            self.terms.append((float(weight), as_reward_source(source)))
        self.name = name or " + ".join(f"{weight:g}*{reward_name(source)}" for weight, source in self.terms)

    def combine(self, per_term: Sequence[Sequence[float | None]]) -> list[float | None]:
        """Combine each term's rewards (one list per term, in `terms` order) sample by sample."""
        if len(per_term) != len(self.terms):
            raise ValueError(f"{len(per_term)} reward lists for {len(self.terms)} terms")
        combined: list[float | None] = []
        for rewards in zip(*per_term, strict=True):
            applicable = [(weight, reward) for (weight, _), reward in zip(self.terms, rewards) if reward is not None]
            combined.append(sum(weight * float(reward) for weight, reward in applicable) if applicable else None)
        return combined

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        return self.combine([source(prompts, completions, **columns) for _, source in self.terms])

    def __repr__(self) -> str:
        return f"WeightedSum({self.name!r})"
