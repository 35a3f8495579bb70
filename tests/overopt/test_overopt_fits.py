import itertools
import math

import numpy as np
import pytest

from tandem.overopt.fits import (
    best_of_n_estimate,
    best_of_n_weights,
    bon_curve,
    bon_peak,
    fit_gao,
    kl_best_of_n,
    rl_curve,
    rl_peak,
)


def test_curves_match_their_formulas():
    d = np.array([0.0, 0.5, 1.0, 2.0, 3.7])
    assert np.allclose(bon_curve(d, 0.8, 0.15), [x * (0.8 - 0.15 * x) for x in d])
    expected = [0.0] + [x * (0.6 - 0.2 * math.log(x)) for x in d[1:]]
    assert np.allclose(rl_curve(d, 0.6, 0.2), expected)
    with pytest.raises(ValueError, match="non-negative"):
        rl_curve([-1.0], 1.0, 1.0)


@pytest.mark.parametrize("form,curve", [("bon", bon_curve), ("rl", rl_curve)])
def test_fit_recovers_known_coefficients_from_noisy_data(form, curve):
    rng = np.random.default_rng(0)
    d = np.linspace(0, 6, 60)
    alpha, beta = 0.7, 0.12 if form == "bon" else 0.3
    reward = curve(d, alpha, beta) + rng.normal(0, 0.01, d.size)
    fit = fit_gao(d, reward, form)
    assert fit.alpha == pytest.approx(alpha, abs=0.02) and fit.beta == pytest.approx(beta, abs=0.02)
    assert fit.r2 > 0.98 and fit.n_points == 60
    noiseless = fit_gao(d, curve(d, alpha, beta), form)
    assert noiseless.alpha == pytest.approx(alpha, rel=1e-9) and noiseless.r2 == pytest.approx(1.0)
    assert np.allclose(noiseless.predict(d), curve(d, alpha, beta))


@pytest.mark.parametrize("form,curve,peak", [("bon", bon_curve, bon_peak), ("rl", rl_curve, rl_peak)])
@pytest.mark.parametrize("alpha,beta", [(0.6, 0.3), (1.0, 0.4), (0.2, 0.05)])
def test_peak_formulas_match_grid_search(form, curve, peak, alpha, beta):
    grid = np.linspace(0, 40, 400_001)
    values = curve(grid, alpha, beta)
    d_star, r_star = peak(alpha, beta)
    assert d_star == pytest.approx(grid[np.argmax(values)], abs=2e-4)
    assert r_star == pytest.approx(values.max(), rel=1e-6)


def test_no_peak_when_beta_is_not_positive():
    assert bon_peak(1.0, 0.0) == (math.inf, math.inf)
    assert rl_peak(1.0, -0.1) == (math.inf, math.inf)
    fit = fit_gao([0.5, 1.0, 2.0], [0.5, 1.0, 2.0], "bon")  # a straight line: beta = 0, no peak
    assert fit.to_dict()["peak_d"] is None


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="two distinct"):
        fit_gao([0.0, 1.0, 1.0], [0.0, 0.3, 0.3], "rl")
    with pytest.raises(ValueError, match="unknown"):
        fit_gao([1.0, 2.0], [0.1, 0.2], "linear")
    with pytest.raises(ValueError, match="equally long"):
        fit_gao([1.0, 2.0], [0.1], "rl")


def test_kl_of_best_of_n():
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(2) == pytest.approx(math.log(2) - 0.5)
    assert np.allclose(kl_best_of_n(np.array([4, 64])), [math.log(4) - 0.75, math.log(64) - 63 / 64])
    with pytest.raises(ValueError):
        kl_best_of_n(0)


def test_kl_of_best_of_n_matches_exact_kl_on_a_continuous_base():
    # best-of-n of a continuous distribution has density n F^(n-1) f: KL = E[log(n F^(n-1))], F ~ U(0, 1)
    u = (np.arange(1_000_000) + 0.5) / 1_000_000
    for n in (2, 8, 32):
        density = n * u ** (n - 1)
        assert np.mean(density * np.log(density)) == pytest.approx(kl_best_of_n(n), abs=1e-3)


def test_best_of_n_estimate_matches_brute_force_over_all_subsets():
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=9), rng.normal(size=9)
    for n in (1, 2, 4, 9):
        subsets = list(itertools.combinations(range(9), n))
        brute = np.mean([gold[max(s, key=lambda i: proxy[i])] for s in subsets])
        assert best_of_n_estimate(proxy, gold, n) == pytest.approx(brute, abs=1e-12)
    assert best_of_n_estimate(proxy, gold, 1) == pytest.approx(gold.mean())
    assert best_of_n_estimate(proxy, gold, 9) == pytest.approx(gold[np.argmax(proxy)])
    assert best_of_n_weights(64, 8).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pool"):
        best_of_n_estimate(proxy, gold, 10)
