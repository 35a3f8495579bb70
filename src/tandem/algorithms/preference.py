"""The DPO family (DPO: Rafailov et al. 2023, eq. 7): preference losses on sequence log-probabilities, by name.

Every paired loss takes a `PairedLogps` and `beta` and returns per-pair losses plus detached implicit
rewards. Notation: pc, pr = policy log p(y_chosen | x), log p(y_rejected | x) summed over response
tokens; rc, rr = the same under the frozen reference; h = (pc - rc) - (pr - rr), so DPO's loss is
-log sigma(beta h). Conventions follow TRL where it differs from the papers (noted per loss), so results can be
compared with it. An unpaired loss (KTO) takes an `UnpairedLogps` instead: one response per example, good or bad.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tandem.registry import FactView, lookup, registrar


@dataclass
class PairedLogps:
    """Sequence log-probabilities of a batch of (chosen, rejected) pairs, all (B,)."""

    policy_chosen: Tensor  # sum of log p_theta over chosen response tokens
    policy_rejected: Tensor
    ref_chosen: Tensor | None  # reference model sums; None for reference-free losses
    ref_rejected: Tensor | None
    chosen_lengths: Tensor  # number of response tokens (float)
    rejected_lengths: Tensor
    chosen_nll: Tensor | None = None  # mean per-token NLL of chosen (ORPO's SFT term)


@dataclass
class UnpairedLogps:
    """Sequence log-probabilities of a batch of single responses labelled good or bad (KTO's data), all (B,)."""

    policy: Tensor  # sum of log p_theta over response tokens
    reference: Tensor | None  # the same under the frozen reference
    desirable: Tensor  # bool: the response is good
    kl_estimate: Tensor  # 0-d: mean log pi_theta - log pi_ref over mismatched responses (KTO's z0 before clamping)


@dataclass
class PreferenceLossOutput:
    loss: Tensor  # (B,) per-pair loss; the trainer sums and normalises
    chosen_rewards: Tensor  # (B,) implicit rewards, detached
    rejected_rewards: Tensor  # (B,)


@dataclass
class UnpairedLossOutput:
    loss: Tensor  # (B,) per-example loss
    rewards: Tensor  # (B,) implicit rewards, detached


PreferenceLoss = Callable[..., PreferenceLossOutput | UnpairedLossOutput]
PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}
PREFERENCE_LOSS_FACTS: dict[str, dict] = {}

# Decorator: make `fn(logps, beta, **options)` available as `preference_loss(name, ...)`. Facts:
# needs_reference (reads reference log-probs), paired (takes PairedLogps; else UnpairedLogps, one labelled
# response per example), options (the keyword arguments a config sets).
register_preference_loss = registrar(
    PREFERENCE_LOSSES, "preference loss", PREFERENCE_LOSS_FACTS, needs_reference=True, paired=True, options=()
)
NEEDS_REFERENCE = FactView(PREFERENCE_LOSS_FACTS, "needs_reference")


def preference_loss(
    name: str, logps: PairedLogps | UnpairedLogps, beta: float, **options
) -> PreferenceLossOutput | UnpairedLossOutput:
    """Look up the loss `name` and apply it; options are that loss's keyword arguments."""
    loss = lookup(PREFERENCE_LOSSES, name, "preference loss")
    facts = PREFERENCE_LOSS_FACTS[name]
    if facts["paired"] != isinstance(logps, PairedLogps):
        raise TypeError(f"preference loss {name!r} takes {'PairedLogps' if facts['paired'] else 'UnpairedLogps'}")
    references = (logps.ref_chosen, logps.ref_rejected) if facts["paired"] else (logps.reference,)
    if facts["needs_reference"] and any(r is None for r in references):
        raise ValueError(f"preference loss {name!r} needs reference log-probs "
                         f"({'ref_chosen, ref_rejected' if facts['paired'] else 'reference'})")
    return loss(logps, beta, **options)


def _log_ratios(logps: PairedLogps, average: bool = False) -> tuple[Tensor, Tensor]:
    """(pc - rc, pr - rr), optionally divided by each response's token count."""
    chosen = logps.policy_chosen - logps.ref_chosen
    rejected = logps.policy_rejected - logps.ref_rejected
    if average:
        chosen = chosen / logps.chosen_lengths.clamp(min=1)
        rejected = rejected / logps.rejected_lengths.clamp(min=1)
    return chosen, rejected


def _output(loss: Tensor, beta: float, chosen: Tensor, rejected: Tensor) -> PreferenceLossOutput:
    return PreferenceLossOutput(loss, beta * chosen.detach(), beta * rejected.detach())


def _smoothed_sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """-(1 - eps) log sigma(z) - eps log sigma(-z): Bradley-Terry with labels flipped w.p. eps."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@register_preference_loss("sigmoid", options=("label_smoothing",))
def dpo_sigmoid_loss(logps: PairedLogps, beta: float, label_smoothing: float = 0.0) -> PreferenceLossOutput:
    """DPO (Rafailov et al. 2023): -log sigma(beta h).

    With label_smoothing eps > 0 this is conservative DPO (cDPO, Mitchell 2023), as in TRL before 1.0
    and TRL's CPOTrainer: -(1 - eps) log sigma(beta h) - eps log sigma(-beta h). (TRL 1.x's DPOTrainer
    ignores label_smoothing for "sigmoid".) At policy = reference the loss is ln 2 for any eps.
    Rewards: beta (pc - rc), beta (pr - rr).
    """
    chosen, rejected = _log_ratios(logps)
    return _output(_smoothed_sigmoid_loss(beta * (chosen - rejected), label_smoothing), beta, chosen, rejected)


@register_preference_loss("robust", options=("label_smoothing",))
def robust_dpo_loss(logps: PairedLogps, beta: float, label_smoothing: float = 0.0) -> PreferenceLossOutput:
    """Robust DPO (Chowdhury et al. 2024), for labels flipped with known probability eps < 1/2:

    [(1 - eps) (-log sigma(beta h)) - eps (-log sigma(-beta h))] / (1 - 2 eps)    (TRL's "robust").

    Unbiased: averaged over the label noise, (1 - eps) L(h) + eps L(-h) = -log sigma(beta h), the clean
    DPO loss. eps = 0 gives DPO.
    """
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    chosen, rejected = _log_ratios(logps)
    logits = beta * (chosen - rejected)
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    return _output(loss, beta, chosen, rejected)


@register_preference_loss("ipo", options=("ipo_average",))
def ipo_loss(logps: PairedLogps, beta: float, ipo_average: bool = True) -> PreferenceLossOutput:
    """IPO (Azar et al. 2023): (h - 1/(2 tau))^2 with tau = beta.

    At h = 0 (policy = reference) the loss is 1/(4 tau^2). As in TRL, h is built from log-ratios
    averaged over response tokens, (pc - rc)/|yc| - (pr - rr)/|yr|, when ipo_average (the default);
    the paper writes h with sums. Rewards are beta times the summed log-ratios, as TRL 1.x reports them.
    """
    chosen, rejected = _log_ratios(logps, average=ipo_average)
    loss = (chosen - rejected - 1 / (2 * beta)) ** 2
    return _output(loss, beta, *_log_ratios(logps))


@register_preference_loss("hinge")
def slic_hinge_loss(logps: PairedLogps, beta: float) -> PreferenceLossOutput:
    """SLiC hinge loss (Zhao et al. 2023) on DPO's log-ratios: relu(1 - beta h). At h = 0 it is 1."""
    chosen, rejected = _log_ratios(logps)
    return _output(torch.relu(1 - beta * (chosen - rejected)), beta, chosen, rejected)


def _average_logps(logps: PairedLogps) -> tuple[Tensor, Tensor]:
    """Policy log-probs averaged over response tokens: pc/|yc|, pr/|yr|."""
    chosen = logps.policy_chosen / logps.chosen_lengths.clamp(min=1)
    return chosen, logps.policy_rejected / logps.rejected_lengths.clamp(min=1)


@register_preference_loss("simpo", needs_reference=False, options=("simpo_gamma", "label_smoothing"))
def simpo_loss(
    logps: PairedLogps, beta: float, simpo_gamma: float = 0.5, label_smoothing: float = 0.0
) -> PreferenceLossOutput:
    """SimPO (Meng et al. 2024), reference-free: -log sigma(beta (pc/|yc| - pr/|yr|) - gamma).

    `simpo_gamma` is the paper's target margin gamma (TRL's CPOTrainer default 0.5); TRL writes the
    same thing as beta * (pc/|yc| - pr/|yr| - simpo_gamma/beta). label_smoothing as in cDPO. TRL's
    CPOTrainer also adds cpo_alpha * NLL unless cpo_alpha = 0; that term is not part of this loss.
    Rewards: beta * average log-probs (as TRL reports them).
    """
    chosen, rejected = _average_logps(logps)
    logits = beta * (chosen - rejected) - simpo_gamma
    return _output(_smoothed_sigmoid_loss(logits, label_smoothing), beta, chosen, rejected)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and far below it (Maechler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register_preference_loss("orpo", needs_reference=False, options=("orpo_lambda",))
def orpo_loss(logps: PairedLogps, beta: float, orpo_lambda: float | None = None) -> PreferenceLossOutput:
    """ORPO (Hong et al. 2024), reference-free: NLL(y_c) + lambda * -log sigma(log odds(y_c) - log odds(y_r)).

    odds(y) = p / (1 - p) with p = exp(average log-prob), so log odds = avg - log(1 - exp(avg)).
    lambda is `orpo_lambda`, defaulting to beta, which is what TRL's ORPOTrainer calls lambda.
    NLL(y_c) is `logps.chosen_nll` if given, else -pc/|yc|: a per-sequence token mean (TRL takes one
    token mean over the whole batch; the two agree when lengths are equal).
    Rewards: beta * average log-probs (as TRL reports them).
    """
    weight = beta if orpo_lambda is None else orpo_lambda
    chosen, rejected = _average_logps(logps)
    log_odds = (chosen - _log1mexp(chosen)) - (rejected - _log1mexp(rejected))
    nll = -chosen if logps.chosen_nll is None else logps.chosen_nll
    return _output(nll - weight * F.logsigmoid(log_odds), beta, chosen, rejected)


def kto_reference_point(policy_logps_mismatched: Tensor, ref_logps_mismatched: Tensor) -> Tensor:
    """KTO's z0: the batch estimate of KL(pi_theta || pi_ref), max(0, mean(log pi_theta(y'|x) - log pi_ref(y'|x))).

    y' are mismatched completions (another example's response for prompt x), as in Ethayarajh et al.
    2024 and TRL. Detached: z0 is not differentiated. At initialisation (policy = reference) z0 = 0.
    Under data parallelism, average the unclamped means across processes before clamping, as TRL does.
    """
    return (policy_logps_mismatched - ref_logps_mismatched).mean().detach().clamp(min=0)


@register_preference_loss("kto", paired=False, options=("desirable_weight", "undesirable_weight"))
def kto_unpaired_loss(
    logps: UnpairedLogps, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> UnpairedLossOutput:
    """KTO (Ethayarajh et al. 2024) for unpaired data: one response per example, labelled good or bad.

    With r = log pi_theta(y|x) - log pi_ref(y|x) (summed over tokens) and z0 = max(0, kl_estimate), detached:
      desirable:   lambda_D (1 - sigma(beta (r - z0)))
      undesirable: lambda_U (1 - sigma(beta (z0 - r)))
    At initialisation (r = 0, z0 = 0) every example's loss is 0.5 (times its weight).
    Losses and rewards are (B,) in input order; rewards = beta r, detached.
    """
    z0 = logps.kl_estimate.detach().clamp(min=0)
    log_ratio = logps.policy - logps.reference
    desirable_loss = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))
    undesirable_loss = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))
    losses = torch.where(logps.desirable.bool(), desirable_loss, undesirable_loss)
    return UnpairedLossOutput(losses, beta * log_ratio.detach())


def kto_loss(policy_logps: Tensor, ref_logps: Tensor, desirable: Tensor, kl_estimate: Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """`kto_unpaired_loss` on plain tensors: (losses, rewards)."""
    out = kto_unpaired_loss(UnpairedLogps(policy_logps, ref_logps, desirable, kl_estimate), beta,
                            desirable_weight, undesirable_weight)
    return out.loss, out.rewards
