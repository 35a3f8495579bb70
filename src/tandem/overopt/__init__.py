"""Reward hacking, argmax_pi E_pi[r_proxy] != argmax_pi E_pi[r_gold]: over-optimisation scaling laws (Gao et al.
2022), a monitor for RL runs, mitigations.

    from tandem.overopt import RewardHackingMonitor, EnsembleReward, ClippedReward, fit_gao, kl_best_of_n

- `fits`: Gao et al. (2022) curves R_bon(d) = d(alpha - beta d), R_rl(d) = d(alpha - beta log d), their
  least-squares fits and peaks, best-of-n's analytic KL and unbiased estimator;
- `ensemble`: reward-model ensembles (mean, worst case, mean - lambda var; Coste et al. 2023) and
  clipping, as reward sources;
- `monitor`: `RewardHackingMonitor`, fed per RL step, flags gold falling while the proxy rises;
- `study` / `commands`: `tandem overopt`, the whole measurement.
"""

from tandem.rewards.ensemble import COMBINERS, ClippedReward, EnsembleReward, clip_rewards, combine_scores
from tandem.overopt.fits import (
    GaoFit,
    best_of_n_estimate,
    bon_curve,
    bon_peak,
    fit_gao,
    kl_best_of_n,
    rl_curve,
    rl_peak,
)
from tandem.diagnostics.monitor import RewardHackingMonitor

__all__ = [
    "COMBINERS",
    "ClippedReward",
    "EnsembleReward",
    "GaoFit",
    "RewardHackingMonitor",
    "best_of_n_estimate",
    "bon_curve",
    "bon_peak",
    "clip_rewards",
    "combine_scores",
    "fit_gao",
    "kl_best_of_n",
    "rl_curve",
    "rl_peak",
]
