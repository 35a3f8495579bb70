"""Scaling laws for reward-model over-optimisation (Gao, Schulman & Hilton 2022), as pure functions.

With d = sqrt(KL(pi || pi_init)) and R the gold reward gained over the initial policy (R(0) = 0):

    best-of-n   R_bon(d) = d (alpha - beta d)          peak at d* = alpha / (2 beta),      R(d*) = alpha^2 / (4 beta)
    RL          R_rl(d)  = d (alpha - beta log d)      peak at d* = exp(alpha / beta - 1), R(d*) = beta d*

Both are linear in (alpha, beta), so least squares has a closed form. Best-of-n's KL is analytic,
KL_bon(n) = log n - (n - 1) / n, and its expected rewards are estimated without bias from one pool of
N >= n samples per prompt (`best_of_n_estimate`). They quantify over-optimisation: the argmax of the
proxy reward is not the argmax of the gold reward, and the fitted peak says where the two part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _as_distance(d: ArrayLike) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("d = sqrt(KL) must be finite and non-negative")
    return d


def _d_log_d(d: np.ndarray) -> np.ndarray:
    """d log d with its limit 0 at d = 0."""
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * np.log(safe), 0.0)


def bon_curve(d: ArrayLike, alpha: float, beta: float) -> np.ndarray:
    """Gao et al. (2022) eq. for best-of-n: R_bon(d) = d (alpha - beta d)."""
    d = _as_distance(d)
    return alpha * d - beta * d * d


def rl_curve(d: ArrayLike, alpha: float, beta: float) -> np.ndarray:
    """Gao et al. (2022) eq. for RL: R_rl(d) = d (alpha - beta log d), with R(0) = 0."""
    d = _as_distance(d)
    return alpha * d - beta * _d_log_d(d)


def bon_peak(alpha: float, beta: float) -> tuple[float, float]:
    """(d*, R(d*)) of R_bon: d* = alpha / (2 beta), R = alpha^2 / (4 beta); (inf, inf) when beta <= 0 (no peak)."""
    if beta <= 0:
        return math.inf, math.inf
    d_star = max(alpha / (2 * beta), 0.0)
    return d_star, float(bon_curve([d_star], alpha, beta)[0])


def rl_peak(alpha: float, beta: float) -> tuple[float, float]:
    """(d*, R(d*)) of R_rl: dR/dd = alpha - beta (log d + 1) = 0 gives d* = exp(alpha / beta - 1), R = beta d*.

    With beta <= 0 the curve never turns down: (inf, inf).
    """
    if beta <= 0:
        return math.inf, math.inf
    exponent = alpha / beta - 1
    if exponent > 700:  # exp would overflow: the peak lies beyond any reachable KL
        return math.inf, math.inf
    d_star = math.exp(exponent)
    return d_star, beta * d_star


@dataclass(frozen=True)
class GaoForm:
    """One functional form: its curve, the two regressors it is linear in, and its peak."""

    curve: Callable[[ArrayLike, float, float], np.ndarray]
    features: Callable[[np.ndarray], np.ndarray]
    peak: Callable[[float, float], tuple[float, float]]


GAO_FORMS: dict[str, GaoForm] = {
    "bon": GaoForm(bon_curve, lambda d: np.stack([d, -d * d], axis=1), bon_peak),
    "rl": GaoForm(rl_curve, lambda d: np.stack([d, -_d_log_d(d)], axis=1), rl_peak),
}


@dataclass(frozen=True)
class GaoFit:
    """A fitted curve: coefficients, R^2 of the fit, and the peak (d*, R(d*)) of the fitted curve."""

    form: str
    alpha: float
    beta: float
    r2: float
    peak_d: float
    peak_reward: float
    n_points: int

    def predict(self, d: ArrayLike) -> np.ndarray:
        return GAO_FORMS[self.form].curve(d, self.alpha, self.beta)

    def to_dict(self) -> dict:
        """JSON-safe (an infinite peak, i.e. none within the fitted form, becomes None)."""
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {"form": self.form, "alpha": self.alpha, "beta": self.beta, "r2": finite(self.r2),
                "peak_d": finite(self.peak_d), "peak_reward": finite(self.peak_reward), "n_points": self.n_points}


def fit_gao(d: ArrayLike, reward: ArrayLike, form: str) -> GaoFit:
    """Least-squares (alpha, beta) of Gao et al.'s `form` ("bon" or "rl") through the origin.

    `reward` is the gain over the initial policy (subtract R at d = 0 first). R^2 = 1 - SS_res / SS_tot
    with SS_tot about the mean of `reward`.
    """
    if form not in GAO_FORMS:
        raise ValueError(f"unknown Gao et al. form {form!r}; known: {', '.join(GAO_FORMS)}")
    d = _as_distance(d)
    reward = np.asarray(reward, dtype=np.float64)
    if d.shape != reward.shape or d.ndim != 1:
        raise ValueError(f"d and reward must be 1-D and equally long, got shapes {d.shape} and {reward.shape}")
    if not np.all(np.isfinite(reward)):
        raise ValueError("rewards to fit must be finite")
    if np.unique(d[d > 0]).size < 2:
        raise ValueError(f"fitting two coefficients needs at least two distinct d > 0, got {sorted(set(d.tolist()))}")
    shape = GAO_FORMS[form]
    (alpha, beta), *_ = np.linalg.lstsq(shape.features(d), reward, rcond=None)
    residual = float(np.sum((reward - shape.curve(d, alpha, beta)) ** 2))
    total = float(np.sum((reward - reward.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else -math.inf)
    peak_d, peak_reward = shape.peak(float(alpha), float(beta))
    return GaoFit(form, float(alpha), float(beta), r2, peak_d, peak_reward, int(d.size))


def kl_best_of_n(n: int | np.ndarray) -> np.ndarray | float:
    """Analytic KL(best-of-n || base) = log n - (n - 1) / n (Stiennon et al. 2020; Gao et al. 2022)."""
    n_array = np.asarray(n, dtype=np.float64)
    if np.any(n_array < 1):
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    kl = np.log(n_array) - (n_array - 1) / n_array
    return float(kl) if np.ndim(n) == 0 else kl


def best_of_n_weights(pool_size: int, n: int) -> np.ndarray:
    """w_i = P(the i-th lowest-ranked of `pool_size` samples is the best of a random n-subset) = C(i-1, n-1) / C(N, n).

    The unbiased best-of-n estimator of Nakano et al. (2021) and Gao et al. (2022): the best of a
    uniformly drawn n-subset (without replacement) is the sample of rank i exactly when the other n-1
    members come from the i-1 samples ranked below it.
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"best-of-{n} needs a pool of at least {n} samples, got {pool_size}")
    total = math.comb(pool_size, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, pool_size + 1)], dtype=np.float64)


def best_of_n_estimate(selection: ArrayLike, values: ArrayLike, n: int) -> float:
    """E[value of the sample with the highest `selection` score among n drawn from the pool], without bias.

    `selection` and `values` are per-sample arrays for one prompt (e.g. proxy scores and gold rewards,
    or the proxy scores twice). Ties in `selection` are broken by position (a stable sort).
    """
    selection = np.asarray(selection, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if selection.shape != values.shape or selection.ndim != 1:
        raise ValueError(f"selection and values must be 1-D and equally long, got {selection.shape} and {values.shape}")
    order = np.argsort(selection, kind="stable")
    return float(np.dot(best_of_n_weights(selection.size, n), values[order]))
