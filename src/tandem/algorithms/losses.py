"""Supervised and reward-model losses: next-token NLL on completion tokens, and the Bradley-Terry pairwise loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


# rows of a (positions, vocabulary) block turned to float32 at a time: one float copy of 64 x 49k is 12 MB, where the
# whole (batch, length, vocabulary) block in float32 is gigabytes; chunked, it is also 4x faster than cross-entropy
# over transposed (B, V, T) logits on CPU (benchmarks/RESULTS.md, "Log-probs without big logits")
LOG_SOFTMAX_ROWS = 64


class _SelectiveLogSoftmax(torch.autograd.Function):
    """z_y - logsumexp(z) per row, `rows` rows at a time in float32; keeps only the input (in its own dtype) and
    the row's logsumexp for the backward, d/dz_v = g ([v = y] - softmax(z)_v), recomputed block by block."""

    @staticmethod
    def forward(ctx, logits, targets, rows):
        picked = torch.empty(len(logits), dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(picked)
        for start in range(0, len(logits), rows):
            block = logits[start : start + rows].float()
            lse[start : start + rows] = block.logsumexp(-1)
            picked[start : start + rows] = block.gather(-1, targets[start : start + rows, None]).squeeze(-1)
        ctx.save_for_backward(logits, targets, lse)
        ctx.rows = rows
        return picked - lse

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, len(logits), ctx.rows):
            end = start + ctx.rows
            g = grad[start:end, None].float()
            block = (logits[start:end].float() - lse[start:end, None]).exp_().mul_(-g)
            block.scatter_add_(-1, targets[start:end, None], g)
            grad_logits[start:end] = block
        return grad_logits, None, None


def selective_log_softmax(logits: torch.Tensor, targets: torch.Tensor, rows: int = LOG_SOFTMAX_ROWS) -> torch.Tensor:
    """log softmax(z)_y = z_y - logsumexp(z) for each row's target y, without the full log-softmax.

    logits: (N, V) in any float dtype, targets: (N,) -> (N,) float32. Differentiable; only `rows` rows are ever
    in float32 at once, forward or backward (a (N, V) float32 copy saved for the backward, as cross-entropy keeps
    its log-softmax, would be 1.6 GB for 32 x 256 completion tokens of a 49k vocabulary).
    """
    return _SelectiveLogSoftmax.apply(logits, targets, rows)


def scored_positions(labels: torch.Tensor) -> int:
    """How many trailing positions' logits score a label (the `logits_to_keep` of a forward): T - t0 + 1, where
    t0 is the first position holding a label (labels[:, 0] is never scored)."""
    labelled = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return labels.shape[1] - int(labelled[0]) if len(labelled) else 1


def scored_logits(logits, mask: torch.Tensor) -> torch.Tensor:
    """(N, V): the logits at the positions `mask` (B, T-1) marks, in its row-major order. `logits`: (B, T, V), the
    last K positions of them (B, K, V) as a `logits_to_keep` forward returns them, or rows' suffixes with their
    columns (`tandem.generation.prefix.SuffixLogits`, read by its `scored`)."""
    if not torch.is_tensor(logits):
        return logits.scored(mask)
    kept = logits.shape[1] - 1  # the last position predicts nothing
    if kept < mask.shape[1] and mask[:, : mask.shape[1] - kept].any():
        raise ValueError(f"logits of the last {kept + 1} positions cannot score labels before them")
    return logits[:, :-1][mask[:, mask.shape[1] - kept :]]


def token_log_probs(logits, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label_t | tokens < t) for each position, with the usual one-token shift.

    logits: (B, T, V) for inputs x_0..x_{T-1}, or only the last K positions (B, K, V), as a forward with
    `logits_to_keep=K` returns them (K >= `scored_positions(labels)`), or a shared-prefix forward's `SuffixLogits`
    (`scored_logits`); labels: (B, T) aligned with the inputs, IGNORE_INDEX where no loss. Returns (log_probs,
    mask), both (B, T-1): log_probs[b, t] scores labels[b, t+1] from the logits at position t, 0 where there is no
    label. Only the labelled positions are computed.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = selective_log_softmax(scored_logits(logits, mask), targets[mask])
    return torch.zeros(targets.shape, dtype=torch.float32, device=labels.device).masked_scatter(mask, picked), mask


def sft_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """L_SFT = -E[log p_theta(y | x)] = -E[sum_t log p_theta(y_t | x, y_<t)], the standard next-token NLL on the
    completion tokens (e.g. Ouyang et al. 2022, sec. 3.5), as a sum over completion tokens and their count.

    Prompt and padding positions carry IGNORE_INDEX in `labels` and add nothing. Returning the sum lets
    the training loop divide by the number of tokens in the whole global batch, so accumulation and
    data-parallel shards give the same gradient as one big batch.
    """
    log_probs, mask = token_log_probs(logits, labels)
    return -log_probs.sum(), int(mask.sum())


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coefficient: float = 0.0,
) -> torch.Tensor:
    """Per-pair reward-model loss (Ouyang et al. 2022, eq. 1): -log sigma(r(x, y_w) - r(x, y_l) - m).

    P(y_w > y_l | x) = exp(r_w) / (exp(r_w) + exp(r_l)) = sigma(r_w - r_l) (Bradley & Terry 1952;
    Ouyang et al. 2022). `margin` m (Llama 2, Touvron et al. 2023) asks the chosen reward to exceed the
    rejected one by m. `center_coefficient` c adds c * (r_w + r_l)^2 (Eisenstein et al. 2023), which
    keeps rewards centred on zero without changing which response is preferred.
    """
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    loss = -F.logsigmoid(difference)
    if center_coefficient:
        loss = loss + center_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return loss
