"""Mitigations of reward-model over-optimisation as reward sources: ensembles (Coste et al. 2023) and clipping.

Combiners take a (members, samples) array of scores and return one score per sample:

    mean                  r = mean_k r_k
    worst_case            r = min_k r_k                              (WCO in Coste et al. 2023)
    uncertainty_weighted  r = mean_k r_k - lambda * var_k r_k        (UWO; population variance over members)

Members trained from different seeds put their scores on different scales, so an ensemble can first
standardise each member, r_k -> (r_k - m_k) / s_k, with (m_k, s_k) measured on samples of the initial
policy (`EnsembleReward.calibrate`); without that, min and variance compare incomparable numbers.

Both `EnsembleReward` and `ClippedReward` fit tandem's `RewardSource` protocol (a `name` and
`__call__(prompts, completions, **columns) -> list[float | None]`), so any trainer takes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tandem.registry import registrar
from tandem.rewards.base import RewardSource, as_reward_source, reward_name

Combiner = Callable[..., np.ndarray]
COMBINERS: dict[str, Combiner] = {}


# Decorator: make `fn(scores, **options)` available as `combine_scores(name, scores)`.
register_combiner = registrar(COMBINERS, "ensemble combiner")


def _members_by_samples(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be a (members, samples) array with at least one member, got shape {scores.shape}")
    return scores


@register_combiner("mean")
def combine_mean(scores) -> np.ndarray:
    """r = (1/K) sum_k r_k over the K members (NaN members, i.e. not scored, are left out)."""
    return np.nanmean(_members_by_samples(scores), axis=0)


@register_combiner("worst_case")
def combine_worst_case(scores) -> np.ndarray:
    """r = min_k r_k: worst-case optimisation (Coste et al. 2023)."""
    return np.nanmin(_members_by_samples(scores), axis=0)


@register_combiner("uncertainty_weighted")
def combine_uncertainty_weighted(scores, lam: float = 0.5) -> np.ndarray:
    """r = mean_k r_k - lambda * (1/K) sum_k (r_k - mean)^2: uncertainty-weighted optimisation (Coste et al. 2023)."""
    if lam < 0:
        raise ValueError(f"the variance weight lambda must be non-negative, got {lam}")
    scores = _members_by_samples(scores)
    return np.nanmean(scores, axis=0) - lam * np.nanvar(scores, axis=0)


def combine_scores(name: str, scores, **options) -> np.ndarray:
    """Combine a (members, samples) score array with the combiner registered as `name`."""
    if name not in COMBINERS:
        raise ValueError(f"unknown ensemble combiner {name!r}; known: {', '.join(sorted(COMBINERS))}")
    return COMBINERS[name](scores, **options)


def clip_rewards(rewards, low: float | None = None, high: float | None = None) -> np.ndarray:
    """min(max(r, low), high), either bound optional (reward clipping, a classic over-optimisation guard)."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"clip bounds are reversed: low {low} > high {high}")
    return np.clip(np.asarray(rewards, dtype=np.float64), low, high)


def _to_optional(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


class EnsembleReward:
    """An ensemble of reward sources (e.g. `RewardModelScorer`s of several seeds) combined per sample.

        ensemble = EnsembleReward([RewardModelScorer(p) for p in paths], combine="uncertainty_weighted", lam=0.5)
        ensemble.calibrate(prompts, sft_completions)   # standardise each member on the initial policy's samples
        rewards = ensemble(prompts, completions)

    A member returning None for a sample is left out of that sample's combination; a sample no member
    scores gets None.
    """

    def __init__(self, members: Sequence[RewardSource], combine: str = "mean", name: str | None = None,
                 **combine_options) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINERS:
            raise ValueError(f"unknown ensemble combiner {combine!r}; known: {', '.join(sorted(COMBINERS))}")
        self.members = [as_reward_source(member) for member in members]
        self.combine = combine
        self.combine_options = combine_options
        self.offsets = np.zeros(len(self.members))
        self.scales = np.ones(len(self.members))
        options = "".join(f",{k}={v:g}" for k, v in combine_options.items())
        self.name = name or f"ensemble:{combine}{options}[{','.join(reward_name(m) for m in self.members)}]"

    def member_scores(self, prompts: list[str], completions: list[str], **columns: list) -> np.ndarray:
        """(members, samples) standardised scores; NaN where a member returned None."""
        rows = []
        for member, offset, scale in zip(self.members, self.offsets, self.scales):
            raw = np.array([np.nan if r is None else float(r) for r in member(prompts, completions, **columns)])
            if raw.shape != (len(completions),):
                raise ValueError(f"reward member {reward_name(member)!r} returned {raw.size} scores for {len(completions)} completions")
            rows.append((raw - offset) / scale)
        return np.stack(rows)

    def calibrate(self, prompts: list[str], completions: list[str], **columns: list) -> EnsembleReward:
        """Set each member's offset and scale to its mean and standard deviation on these samples."""
        self.offsets = np.zeros(len(self.members))
        self.scales = np.ones(len(self.members))
        raw = self.member_scores(prompts, completions, **columns)
        self.set_normalisation(np.nanmean(raw, axis=1), np.nanstd(raw, axis=1))
        return self

    def set_normalisation(self, offsets: Sequence[float], scales: Sequence[float]) -> None:
        offsets, scales = np.asarray(offsets, dtype=np.float64), np.asarray(scales, dtype=np.float64)
        if offsets.shape != (len(self.members),) or scales.shape != (len(self.members),):
            raise ValueError(f"need one offset and one scale per member ({len(self.members)})")
        if np.any(~np.isfinite(scales)) or np.any(scales <= 0):
            raise ValueError(f"member scales must be positive and finite, got {scales.tolist()}")
        self.offsets, self.scales = offsets, scales

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        scores = self.member_scores(prompts, completions, **columns)
        combined = np.full(scores.shape[1], np.nan)
        scored = ~np.all(np.isnan(scores), axis=0)
        if scored.any():
            combined[scored] = combine_scores(self.combine, scores[:, scored], **self.combine_options)
        return _to_optional(combined)

    def __repr__(self) -> str:
        return f"EnsembleReward({self.name!r})"


class ClippedReward:
    """r' = clip(r, low, high) of another reward source; None stays None."""

    def __init__(self, source: RewardSource, low: float | None = None, high: float | None = None,
                 name: str | None = None) -> None:
        if low is None and high is None:
            raise ValueError("ClippedReward needs a low or a high bound")
        clip_rewards([0.0], low, high)  # checks the bounds' order
        self.source = as_reward_source(source)
        self.low, self.high = low, high
        self.name = name or f"clip[{low},{high}]({reward_name(self.source)})"

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        raw = np.array([np.nan if r is None else float(r) for r in self.source(prompts, completions, **columns)])
        return _to_optional(clip_rewards(raw, self.low, self.high))

    def __repr__(self) -> str:
        return f"ClippedReward({self.name!r})"
