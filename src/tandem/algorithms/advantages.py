"""Advantage estimators for RL on language models, registered by name (GAE, GRPO, Dr. GRPO, RLOO, REINFORCE++).

Token-level tensors are (B, T) over response positions with a `mask` (bool or 0/1 float) that is 1 on
response tokens; outcome rewards sit on each response's last token (`token_rewards_from_scores`).
Every registered estimator maps `AdvantageInputs` and its own options to (advantages, returns), both
(B, T) and 0 outside the mask. Estimators run without gradient: advantages are constants in the loss.
Whitening is over the whole batch: on one process, the batch it is given; across processes, give
`AdvantageInputs.reduce` (a sum over processes, e.g. an all-reduce) and the mean and variance are
those of the global batch (sums and counts reduced), while each process keeps only its own rows.
Group estimators need every sample of a group on one process (the rollout keeps groups together).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tandem.registry import FactView, lookup, registrar

Reduce = Callable[[Tensor], Tensor]  # sums a tensor over processes (identity on one process)


@dataclass
class AdvantageInputs:
    """What a rollout provides to an advantage estimator."""

    rewards: Tensor  # (B, T) token-level rewards (outcome reward on the last response token)
    mask: Tensor  # (B, T) 1 on response tokens
    values: Tensor | None = None  # (B, T) critic values V(s_t), for GAE
    group_ids: Tensor | None = None  # (B,) which prompt each response answers, for group baselines
    group_size: int | None = None  # or: contiguous groups of this size
    kl: Tensor | None = None  # (B, T) per-token KL to the reference, for estimators that fold it in
    reduce: Reduce | None = None  # sum over processes: batch statistics (whitening) become global


AdvantageEstimator = Callable[..., tuple[Tensor, Tensor]]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
ADVANTAGE_FACTS: dict[str, dict] = {}

# Decorator: make `fn(inputs, **options)` available as `compute_advantages(name, ...)`, with what it reads:
# needs_values (critic values, a value head), score_only (nothing but the sequence scores and groups: no
# log-prob forward needed before the update).
register_advantage_estimator = registrar(
    ADVANTAGE_ESTIMATORS, "advantage estimator", ADVANTAGE_FACTS, needs_values=False, score_only=False
)
NEEDS_VALUES = FactView(ADVANTAGE_FACTS, "needs_values")
SCORE_ONLY = FactView(ADVANTAGE_FACTS, "score_only")


def compute_advantages(name: str, inputs: AdvantageInputs, **options) -> tuple[Tensor, Tensor]:
    """Look up the estimator `name` and apply it; options are that estimator's keyword arguments."""
    estimator = lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")
    if NEEDS_VALUES[name] and inputs.values is None:
        raise ValueError(f"advantage estimator {name!r} needs critic values")
    return estimator(inputs, **options)


# Masked statistics and shape helpers.


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce | None = None) -> Tensor:
    """Mean of `values` where mask is set (over everything, or along `dim`); 0 where nothing is set.

    With `reduce` (a sum over processes) the overall mean is that of every process's entries together.
    """
    mask = mask.bool()
    total = torch.where(mask, values, 0).sum() if dim is None else torch.where(mask, values, 0).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    if reduce is not None:
        if dim is not None:
            raise ValueError("a reduced mean is over everything (dim=None)")
        return (reduce(total.double()) / reduce(count.double()).clamp(min=1)).to(values.dtype)
    return total / count.clamp(min=1)


@torch.no_grad()
def whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce | None = None) -> Tensor:
    """(v - mean) / sqrt(var + eps) over the masked entries; 0 outside the mask.

    var is the unbiased (n - 1) masked variance, as in TRL and verl. With shift_mean=False the mean is
    added back, so only the scale changes (TRL's whitening of rewards). With `reduce` (a sum over
    processes) mean and variance are the global batch's: sum and count, then the sum of squared
    deviations from the global mean, each summed over processes (two reductions, exact).
    """
    mask = mask.bool()
    mean = masked_mean(values, mask, reduce=reduce)
    count = mask.sum()
    squares = torch.where(mask, (values - mean) ** 2, 0).sum()
    if reduce is not None:
        squares, count = reduce(squares.double()).to(values.dtype), reduce(count.double())
    variance = squares / (count - 1).clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0)


def sequence_to_token_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """Broadcast one advantage per sequence (B,) to every response token: (B, T), 0 outside the mask."""
    return torch.where(mask.bool(), advantages.unsqueeze(-1), 0)


def token_rewards_from_scores(scores: Tensor, mask: Tensor) -> Tensor:
    """Place each sequence's score (B,) on its last response token: (B, T). Rows with no token get 0."""
    mask = mask.bool()
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=-1)
    rewards = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    rows = (last >= 0).nonzero().squeeze(-1)
    rewards[rows, last[rows]] = scores[rows]
    return rewards


def sequence_scores(rewards: Tensor, mask: Tensor) -> Tensor:
    """Total reward of each response: sum of token rewards over the mask, (B,)."""
    return torch.where(mask.bool(), rewards, 0).sum(-1)


def _group_index(n: int, group_ids: Tensor | None, group_size: int | None, device: torch.device) -> Tensor:
    """Dense group index 0..G-1 for each of n samples, from ids or from contiguous groups of group_size."""
    if (group_ids is None) == (group_size is None):
        raise ValueError("give exactly one of group_ids and group_size")
    if group_ids is not None:
        return torch.unique(group_ids, return_inverse=True)[1].to(device)
    if group_size < 1 or n % group_size:
        raise ValueError(f"batch of {n} does not split into groups of {group_size}")
    return torch.arange(n, device=device) // group_size


def _group_centered(scores: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per sample: r - mean_group, the group's unbiased std, its size, and whether the group is constant."""
    groups = int(index.max()) + 1
    zeros = torch.zeros(groups, dtype=scores.dtype, device=scores.device)
    counts = zeros.index_add(0, index, torch.ones_like(scores))
    centered = scores - (zeros.index_add(0, index, scores) / counts)[index]
    std = (zeros.index_add(0, index, centered**2) / (counts - 1).clamp(min=1)).sqrt()
    high = zeros.scatter_reduce(0, index, scores, "amax", include_self=False)
    low = zeros.scatter_reduce(0, index, scores, "amin", include_self=False)
    # Rounding in the mean can leave r - mean = 1e-17 in an all-equal group; make it exactly 0.
    constant = (high == low)[index]
    return torch.where(constant, 0, centered), std[index], counts[index], constant


# Pure estimators with natural signatures.


@torch.no_grad()
def informative_groups(scores: Tensor, group_ids: Tensor, valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Rows whose group's (valid) rewards are not all equal (DAPO dynamic sampling, Yu et al. 2025).

    A group with one reward for every sample gets zero group-relative advantage and so no policy
    gradient; DAPO drops such groups and samples more prompts. Returns a bool per row.
    """
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid.bool()
    index = torch.unique(group_ids, return_inverse=True)[1]
    n = int(index.max()) + 1 if index.numel() else 0
    high = torch.full((n,), -torch.inf, dtype=scores.dtype, device=scores.device)
    low = torch.full((n,), torch.inf, dtype=scores.dtype, device=scores.device)
    high = high.scatter_reduce(0, index[valid], scores[valid], reduce="amax")
    low = low.scatter_reduce(0, index[valid], scores[valid], reduce="amin")
    spread = (high - low).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    return spread[index] > eps


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1},   returns R_t = A_t + V_t,
    where t+1 is the next *response* token: positions outside the mask are skipped (padding, or tool
    output inside a multi-turn response, as in verl), and V = 0 after the last response token.
    Returns (advantages, returns), (B, T), 0 outside the mask.
    """
    mask = mask.bool()
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[-1])):
        here = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(here, advantage, 0)
        next_value = torch.where(here, values[:, t], next_value)
        next_advantage = torch.where(here, advantage, next_advantage)
    return advantages, torch.where(mask, advantages + values, 0)


@torch.no_grad()
def grpo_advantages(
    scores: Tensor,
    group_ids: Tensor | None = None,
    group_size: int | None = None,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> Tensor:
    """GRPO outcome advantage (Shao et al. 2024): A_i = (r_i - mean_group) / (std_group + eps), (B,).

    std is the unbiased sample std (TRL, verl). norm_by_std=False gives Dr. GRPO's A_i = r_i - mean_group
    (Liu et al. 2025), which removes the bias towards groups with small reward spread. A group whose
    rewards are all equal (including a group of one) gets A = 0 exactly.
    """
    index = _group_index(scores.shape[0], group_ids, group_size, scores.device)
    centered, std, _, _ = _group_centered(scores, index)
    return centered / (std + eps) if norm_by_std else centered


@torch.no_grad()
def rloo_advantages(scores: Tensor, group_ids: Tensor | None = None, group_size: int | None = None) -> Tensor:
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j = n / (n - 1) (r_i - mean_group), (B,).

    Each sample's baseline is the mean of the other samples for the same prompt. A group of one has no
    baseline and gets A = 0 (verl would use the raw score).
    """
    index = _group_index(scores.shape[0], group_ids, group_size, scores.device)
    centered, _, counts, constant = _group_centered(scores, index)
    return torch.where(constant, 0, centered * counts / (counts - 1).clamp(min=1))


@torch.no_grad()
def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """G_t = sum_{k >= t} gamma^(k - t) r_k over response tokens (positions outside the mask skipped)."""
    mask = mask.bool()
    running = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[-1])):
        running = torch.where(mask[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(mask[:, t], running, 0)
    return returns


@torch.no_grad()
def reinforce_plus_plus_advantages(
    rewards: Tensor, mask: Tensor, gamma: float = 1.0, kl: Tensor | None = None, kl_coef: float = 0.0,
    reduce: Reduce | None = None,
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025): token rewards r_t = 1[t = last] r(x, y) - beta KL_t, return
    G_t = sum_{k >= t} gamma^(k - t) r_k, advantage = G whitened over the whole batch's response tokens.

    `kl` is the per-token KL to the reference (the paper uses k1), `kl_coef` is beta.
    Returns (advantages, returns), (B, T).
    """
    if kl_coef and kl is None:
        raise ValueError("kl_coef > 0 needs the per-token kl")
    if kl_coef:
        rewards = rewards - kl_coef * kl
    returns = discounted_returns(rewards, mask, gamma)
    return whiten(returns, mask, reduce=reduce), returns


@torch.no_grad()
def reinforce_plus_plus_baseline_advantages(
    scores: Tensor, mask: Tensor, group_ids: Tensor | None = None, group_size: int | None = None,
    reduce: Reduce | None = None,
) -> Tensor:
    """REINFORCE++-baseline (Hu 2025): A = whiten_batch(r - mean_group), broadcast to tokens, (B, T).

    The group mean removes the prompt's difficulty; whitening over all response tokens of the batch
    (not per group, unlike GRPO) sets the scale. The KL to the reference goes into the loss (k3).
    """
    index = _group_index(scores.shape[0], group_ids, group_size, scores.device)
    centered, _, _, _ = _group_centered(scores, index)
    return whiten(sequence_to_token_advantages(centered, mask), mask, reduce=reduce)


# The registry: uniform (inputs, **options) -> (advantages, returns) adapters.


def _kl_penalised(inputs: AdvantageInputs, kl_coef: float) -> Tensor:
    """r_t - beta KL_t (Ziegler et al. 2019; Ouyang et al. 2022, eq. 2): the per-token KL penalty in the rewards."""
    if not kl_coef:
        return inputs.rewards
    if inputs.kl is None:
        raise ValueError("kl_coef > 0 needs the per-token kl in AdvantageInputs")
    return inputs.rewards - kl_coef * inputs.kl


@register_advantage_estimator("gae", needs_values=True)
def _gae(
    inputs: AdvantageInputs, gamma: float = 1.0, lam: float = 0.95, kl_coef: float = 0.0, whiten_advantages: bool = True
):
    """PPO-RLHF: GAE on KL-penalised token rewards, advantages whitened over the batch (TRL, verl)."""
    rewards = _kl_penalised(inputs, kl_coef)
    advantages, returns = gae_advantages(rewards, inputs.values, inputs.mask, gamma, lam)
    return (whiten(advantages, inputs.mask, reduce=inputs.reduce) if whiten_advantages else advantages), returns


def _outcome(inputs: AdvantageInputs, sequence_advantages: Tensor) -> tuple[Tensor, Tensor]:
    token_advantages = sequence_to_token_advantages(sequence_advantages, inputs.mask)
    return token_advantages, token_advantages


@register_advantage_estimator("grpo", score_only=True)
def _grpo(inputs: AdvantageInputs, eps: float = 1e-6, norm_by_std: bool = True):
    scores = sequence_scores(inputs.rewards, inputs.mask)
    return _outcome(inputs, grpo_advantages(scores, inputs.group_ids, inputs.group_size, eps, norm_by_std))


@register_advantage_estimator("dr_grpo", score_only=True)
def _dr_grpo(inputs: AdvantageInputs):
    """Dr. GRPO's advantage: GRPO without the std division. Pair it with "seq-mean-token-sum-norm"."""
    return _grpo(inputs, norm_by_std=False)


@register_advantage_estimator("rloo", score_only=True)
def _rloo(inputs: AdvantageInputs):
    scores = sequence_scores(inputs.rewards, inputs.mask)
    return _outcome(inputs, rloo_advantages(scores, inputs.group_ids, inputs.group_size))


@register_advantage_estimator("reinforce_plus_plus")
def _reinforce_plus_plus(inputs: AdvantageInputs, gamma: float = 1.0, kl_coef: float = 0.0):
    return reinforce_plus_plus_advantages(inputs.rewards, inputs.mask, gamma, inputs.kl, kl_coef, inputs.reduce)


@register_advantage_estimator("reinforce_plus_plus_baseline", score_only=True)
def _reinforce_plus_plus_baseline(inputs: AdvantageInputs):
    scores = sequence_scores(inputs.rewards, inputs.mask)
    advantages = reinforce_plus_plus_baseline_advantages(scores, inputs.mask, inputs.group_ids, inputs.group_size,
                                                         inputs.reduce)
    return advantages, advantages
