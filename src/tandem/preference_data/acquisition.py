"""Acquisition rules of active learning for preference labels: which unlabelled pairs to label next, scored from
the (K, N) matrix of an ensemble's member probabilities p_kn = P_k(A > B) (`tandem.rewards.reward_heads`):

    random        u_n ~ U(0, 1)                                        (the baseline)
    disagreement  Var_k p_kn                                           (query by committee)
    entropy       H(mean_k p_kn)                                       (predictive entropy, uncertainty sampling)
    bald          H(mean_k p_kn) - mean_k H(p_kn)                      (BALD mutual information, Houlsby et al. 2011)

with H(p) = -p log p - (1 - p) log(1 - p). BALD is the information-directed rule: it is the expected
information the label carries about the ensemble member, I(y; k | x), high only where members are
individually confident but disagree, not where every member says 50/50 (label noise).
`ACQUISITION_RULES` is a registry of pure functions (`register_acquisition`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from tandem.registry import registrar

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
