"""Supervised and reward-model losses: next-token NLL on completion tokens, and the Bradley-Terry pairwise loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label_t | tokens < t) for each position, with the usual one-token shift.

    logits: (B, T, V) for inputs x_0..x_{T-1}; labels: (B, T) aligned with the inputs, IGNORE_INDEX where no loss.
    Returns (log_probs, mask), both (B, T-1): log_probs[b, t] scores labels[b, t+1] from logits[b, t].
    """
    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)
    log_probs = -F.cross_entropy(shifted_logits.transpose(1, 2), safe_targets, reduction="none")
    return log_probs * mask, mask


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
