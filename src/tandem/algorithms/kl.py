"""KL to the reference policy, the beta KL(pi || pi_ref) penalty of RLHF (Ziegler et al. 2019; Ouyang et al. 2022,
eq. 2): per-token estimators registered by name, and KL controllers.

Estimators follow Schulman (2020), "Approximating KL divergence": with tokens sampled from pi and
x = log pi(y_t) - log pi_ref(y_t), each k is a per-token estimate whose mean over samples estimates
KL(pi || pi_ref). Inputs are (B, T) log-probabilities of the sampled tokens; outputs are (B, T).
Masking is the caller's job (multiply by the response mask or pass through `aggregate_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tandem.registry import lookup, registrar

KLEstimator = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: dict[str, KLEstimator] = {}


# Decorator: make `fn(logp, ref_logp)` available as `kl_estimate(name, ...)`.
register_kl_estimator = registrar(KL_ESTIMATORS, "KL estimator")


def kl_estimate(name: str, logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL estimate `name` for tokens sampled from the policy whose log-probs are `logp`."""
    return lookup(KL_ESTIMATORS, name, "KL estimator")(logp, ref_logp)


@register_kl_estimator("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = x = log pi - log pi_ref. Unbiased, high variance, can be negative per token.

    This is the per-token penalty of Ziegler et al. (2019) and InstructGPT (Ouyang et al. 2022).
    """
    return logp - ref_logp


@register_kl_estimator("abs")
def kl_abs(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """|x| = |log pi - log pi_ref|: a non-negative but biased penalty (verl's "abs")."""
    return (logp - ref_logp).abs()


@register_kl_estimator("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = x^2 / 2. Non-negative, biased, low variance; its expectation is KL to second order."""
    return 0.5 * (logp - ref_logp) ** 2


@register_kl_estimator("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = (r - 1) - log r with r = pi_ref / pi = exp(-x), i.e. exp(-x) - 1 + x.

    Unbiased (E_pi[r] = 1) and non-negative (log r <= r - 1). GRPO's KL loss (Shao et al. 2024).
    expm1 keeps precision when x is near 0, where the two terms nearly cancel.
    """
    x = logp - ref_logp
    return torch.expm1(-x) + x


@register_kl_estimator("low_var_kl")
def kl_low_var(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 with verl's clamps: x to [-20, 20] so exp cannot overflow, and the result to at most 10.

    Matches verl's "low_var_kl". The clamps bound the gradient of tokens the policy has moved far from
    the reference; inside them it equals k3.
    """
    x = (logp - ref_logp).clamp(-20.0, 20.0)
    return (torch.expm1(-x) + x).clamp(-10.0, 10.0)


# KL controllers (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", sec. 2.2).


def adaptive_kl_coef(coef: float, current_kl: float, target: float, horizon: float, n_steps: int) -> float:
    """One step of the adaptive KL controller:

    e = clip(KL / KL_target - 1, -0.2, 0.2),    beta <- beta * (1 + e * n_steps / horizon).

    KL above target raises beta (more penalty), below lowers it; the clip bounds each step's change.
    `n_steps` is the number of samples (TRL, verl: the batch size) since the last update.
    """
    error = min(max(current_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, coef: float):
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; present so trainers treat both controllers alike."""


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller steering the measured KL towards `target`.

    The state is one number, `.value`; `adaptive_kl_coef` is the update rule.
    """

    def __init__(self, init_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        self.value = adaptive_kl_coef(self.value, float(current_kl), self.target, self.horizon, n_steps)


KL_CONTROLLERS: dict[str, type] = {"fixed": FixedKLController, "adaptive": AdaptiveKLController}
