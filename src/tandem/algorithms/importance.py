"""The sampler/trainer mismatch: how far the rollout engine's log-probs are from the training forward's, and
truncated importance sampling (TIS) to correct the policy gradient for it.

The engine that samples (vLLM, or `generate` in bf16) and the forward that trains compute the same policy with
different kernels and precisions, so the tokens are drawn from pi_sampler, not from the pi_old the loss
assumes. Yao et al. 2025 ("Your efficient RL framework secretly brings you off-policy RL training") weight each
token's policy-gradient term by the truncated ratio min(pi_old / pi_sampler, C), as verl and TRL do.
"""

from __future__ import annotations

import torch
from torch import Tensor


def truncated_importance_weights(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """w = min(exp(log pi_old - log pi_sampler), C) per token, without gradient (Ionides 2008's truncated IS).

    `old_logp` is the training forward's log-prob of each sampled token before the update, `sampler_logp`
    the engine's at sampling time. The log-ratio is clamped at +-20 before exp, as the PPO ratio is.
    """
    if cap <= 0:
        raise ValueError(f"the truncation cap must be > 0, got {cap}")
    return torch.exp((old_logp.detach() - sampler_logp.detach()).clamp(-20.0, 20.0)).clamp(max=cap)


def logprob_gap(train_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[float, float]:
    """(sum of |log pi_train - log pi_sampler| over the masked tokens, their count): summed, so that micro-batches
    and processes add up; the mean is the `logprob_mismatch` metric (0 is ideal)."""
    gap = (train_logp.detach().float() - sampler_logp.detach().float()).abs()
    return float(torch.where(mask.bool(), gap, 0.0).sum()), float(mask.sum())
