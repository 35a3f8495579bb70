"""Policy and value losses for PPO-style updates, and loss aggregation that survives accumulation.

Per-token losses are (B, T) over response positions; `aggregate_loss` reduces them to a scalar.

Aggregation contract: every mode is  sum over this micro-batch / a GLOBAL normaliser,
where the normaliser comes from `global_normaliser(mode, mask_of_the_whole_batch, constant)`. The
normaliser is additive (the sum over micro-batches or shards of their own `global_normaliser` is the
full batch's), so a trainer can all-reduce (SUM) the per-process counts. Then:
  * gradient accumulation: ADD the micro-batch losses (do not divide by the number of micro-batches);
  * data parallel: the global loss is the SUM of the shards' losses. DDP averages gradients over
    `world_size` processes, so multiply each process's loss by `world_size` to get the full-batch gradient.
Both give exactly the gradient of the full batch in one piece, for every mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tandem.algorithms.advantages import masked_mean
from tandem.algorithms.kl import kl_k3
from tandem.algorithms.losses import scored_logits
from tandem.registry import lookup, registrar


@dataclass
class PolicyLossOutput:
    loss: Tensor  # (B, T) per-token loss; reduce it with aggregate_loss
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached scalars, masked means over this micro-batch


PolicyLoss = Callable[..., PolicyLossOutput]
POLICY_LOSSES: dict[str, PolicyLoss] = {}
POLICY_LOSS_FACTS: dict[str, dict] = {}

# Decorator: make `fn(logp, old_logp, advantages, mask, **options)` available as `policy_loss(name, ...)`;
# `options` names the keyword arguments a config may set (the trainer passes those the user gave).
register_policy_loss = registrar(POLICY_LOSSES, "policy loss", POLICY_LOSS_FACTS, options=())


def policy_loss(
    name: str, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, **options
) -> PolicyLossOutput:
    """Look up the policy loss `name` and apply it; options are that loss's keyword arguments."""
    return lookup(POLICY_LOSSES, name, "policy loss")(logp, old_logp, advantages, mask, **options)


def _ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    # Clamping the log-ratio keeps exp finite for tokens the policy has moved very far (as verl does).
    return torch.exp((logp - old_logp).clamp(-20.0, 20.0))


@register_policy_loss("ppo_clip", options=("clip_low", "clip_high", "dual_clip"))
def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
) -> PolicyLossOutput:
    """PPO's clipped surrogate (Schulman et al. 2017), per token, with rho = pi_theta / pi_old:

    L = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)).

    clip_high defaults to clip_low; a larger clip_high is DAPO's clip-higher (Yu et al. 2025, 0.28),
    which leaves room for low-probability tokens to grow. dual_clip = c > 1 (Ye et al. 2020) also
    bounds the loss of negative-advantage tokens: L = min(L, -c A) where A < 0, so a huge ratio cannot
    blow up the update. Stats: clip_fraction (tokens whose clipped term is active), dual_clip_fraction,
    approx_kl = mean k3 estimate of KL(pi_old || pi_theta) on tokens sampled from pi_old.
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = _ratio(logp, old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    stats = {"clip_fraction": masked_mean((clipped > unclipped).float(), mask).detach()}
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        bound = -advantages * dual_clip
        dual_active = (advantages < 0) & (loss > bound)
        loss = torch.where(advantages < 0, torch.minimum(loss, bound), loss)
        stats["dual_clip_fraction"] = masked_mean(dual_active.float(), mask).detach()
    stats["approx_kl"] = masked_mean(kl_k3(old_logp, logp), mask).detach()
    return PolicyLossOutput(loss, stats)


@register_policy_loss("gspo", options=("clip_low", "clip_high"))
def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float | None = 4e-4,
) -> PolicyLossOutput:
    """GSPO-token (Zheng et al. 2025, "Group Sequence Policy Optimization"): a clipped surrogate on the
    sequence's length-normalised importance ratio instead of each token's.

    s_i = (pi_theta(y_i | x) / pi_old(y_i | x))^(1/|y_i|) = exp(mean_t (log pi_theta(y_i,t) - log pi_old(y_i,t))),
    s_i,t = sg[s_i] * pi_theta(y_i,t) / sg[pi_theta(y_i,t)]   (equal to s_i in value; sg = stop-gradient),
    L_i,t = max(-A_i,t s_i,t, -A_i,t clip(s_i,t, 1 - eps_low, 1 + eps_high)).

    Averaged per sequence then over sequences (`--loss-agg seq-mean-token-mean`, the paper's objective),
    its gradient is the paper's: -1/G sum_i s_i A_i 1/|y_i| sum_t grad log pi_theta(y_i,t) over the
    sequences whose s_i is not clipped, for advantages A_i,t = A_i shared by the sequence's tokens (GRPO's).
    Per-token advantages are what the token form adds. One token per sequence gives `ppo_clip`. The
    paper's epsilons are 3e-4 and 4e-4: a sequence ratio moves far less than a token's. clip_high=None
    means clip_low. Stats as `ppo_clip`'s: clip_fraction, approx_kl (per token).
    """
    clip_high = clip_low if clip_high is None else clip_high
    mask = mask.bool()
    # Padding may hold garbage: select it away before averaging (0 * inf would be NaN).
    log_ratio = torch.where(mask, logp - old_logp, 0.0)
    sequence_log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    ratio = torch.exp(sequence_log_ratio.detach().clamp(-20.0, 20.0) + logp - logp.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    stats = {
        "clip_fraction": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": masked_mean(kl_k3(old_logp, logp), mask).detach(),
    }
    return PolicyLossOutput(loss, stats)


@register_policy_loss("reinforce")
def reinforce_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> PolicyLossOutput:
    """Unclipped importance-weighted policy gradient, -A rho (Williams 1992 when pi_old = pi_theta).

    On-policy (one update per rollout) its gradient, -A grad log pi, is REINFORCE's.
    """
    stats = {"approx_kl": masked_mean(kl_k3(old_logp, logp), mask).detach()}
    return PolicyLossOutput(-advantages * _ratio(logp, old_logp), stats)


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None = 0.2
) -> tuple[Tensor, Tensor]:
    """PPO's value loss with value clipping (as in OpenAI baselines, TRL, verl), per token:

    0.5 * max((v - R)^2, (clip(v, v_old - c, v_old + c) - R)^2).

    clip=None gives the plain 0.5 (v - R)^2. Returns (loss (B, T), fraction of tokens where the
    clipped term is the larger one).
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros((), device=values.device)
    clipped = (torch.clamp(values, old_values - clip, old_values + clip) - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), masked_mean((clipped > unclipped).float(), mask).detach()


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at each position, H = logsumexp(z) - sum_v softmax(z)_v z_v.

    logits (..., V) -> (...). Computed in float32 at least, differentiable (for an entropy bonus).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def token_entropy(logits, mask: Tensor) -> Tensor:
    """`entropy_from_logits` at the scored positions only: mask (B, T-1) as `token_log_probs` returns it, logits
    (B, T, V), the last K positions of them (a `logits_to_keep` forward) or `SuffixLogits` (`scored_logits`).
    -> (B, T-1), 0 off the mask."""
    rows = scored_logits(logits, mask)
    entropy = torch.cat([entropy_from_logits(block) for block in rows.split(64)]) if len(rows) else rows.new_zeros(0)
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_scatter(mask, entropy.float())


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[R - V] / Var[R] over masked tokens: 1 is a perfect critic, 0 no better than a constant."""
    variance = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    residual_variance = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return 1 - residual_variance / variance.clamp(min=1e-12)


# Loss aggregation: each mode = (numerator over this micro-batch, additive normaliser from a mask).


@dataclass(frozen=True)
class Aggregation:
    numerator: Callable[[Tensor, Tensor], Tensor]  # (loss_mat, bool mask) -> scalar sum
    normaliser: Callable[[Tensor, float | None], Tensor]  # (bool mask, constant) -> count


def _token_sum(loss_mat: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, loss_mat, 0).sum()


def _sum_of_sequence_means(loss_mat: Tensor, mask: Tensor) -> Tensor:
    return (torch.where(mask, loss_mat, 0).sum(-1) / mask.sum(-1).clamp(min=1)).sum()


def _tokens(mask: Tensor, constant: float | None) -> Tensor:
    return mask.sum().float()


def _sequences(mask: Tensor, constant: float | None) -> Tensor:
    # Sequences with no response token contribute nothing and are not counted.
    return (mask.sum(-1) > 0).sum().float()


def _constant_times_sequences(mask: Tensor, constant: float | None) -> Tensor:
    return (mask.shape[-1] if constant is None else constant) * _sequences(mask, constant)


LOSS_AGGREGATIONS: dict[str, Aggregation] = {
    # sum over all response tokens / all response tokens: every token weighs the same (DAPO).
    "token-mean": Aggregation(_token_sum, _tokens),
    # mean over sequences of each sequence's token mean (the original GRPO).
    "seq-mean-token-mean": Aggregation(_sum_of_sequence_means, _sequences),
    # mean over sequences of each sequence's token sum.
    "seq-mean-token-sum": Aggregation(_token_sum, _sequences),
    # Dr. GRPO (Liu et al. 2025): token sum / (constant * sequences), constant = max response length.
    "seq-mean-token-sum-norm": Aggregation(_token_sum, _constant_times_sequences),
}


def _aggregation(mode: str) -> Aggregation:
    return lookup(LOSS_AGGREGATIONS, mode, "loss aggregation")


def global_normaliser(mode: str, mask: Tensor, constant: float | None = None) -> Tensor:
    """The denominator of `mode` for the batch whose response mask is `mask` (a 0-d float tensor).

    token-mean: number of response tokens; seq-mean-*: number of sequences with a response token;
    seq-mean-token-sum-norm: constant * number of sequences, constant defaulting to mask.shape[-1]
    (pass it explicitly, e.g. max_new_tokens, when micro-batches are padded to different widths).
    Additive over disjoint parts of the batch, for a fixed constant.
    """
    return _aggregation(mode).normaliser(mask.bool(), constant)


def aggregate_loss(
    loss_mat: Tensor, mask: Tensor, mode: str, normaliser: Tensor | float | None = None, constant: float | None = None
) -> Tensor:
    """Reduce a (B, T) per-token loss: the mode's sum over this micro-batch divided by `normaliser`.

    Pass normaliser = global_normaliser(mode, full_batch_mask, constant) when this is one micro-batch
    or shard of a larger batch (see the module docstring); None means this batch is the whole batch.
    Masked-out positions are selected away (torch.where), so padding garbage never enters the value.
    """
    aggregation = _aggregation(mode)
    mask = mask.bool()
    if normaliser is None:
        normaliser = aggregation.normaliser(mask, constant)
    normaliser = torch.as_tensor(normaliser, dtype=loss_mat.dtype, device=loss_mat.device)
    # A batch with nothing to normalise has a zero numerator; keep 0 / 0 from becoming NaN.
    return aggregation.numerator(loss_mat, mask) / normaliser.clamp(min=torch.finfo(loss_mat.dtype).tiny)
