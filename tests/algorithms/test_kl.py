import math

import pytest
import torch

from tandem.algorithms.kl import (
    KL_CONTROLLERS,
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    adaptive_kl_coef,
    kl_estimate,
)


def test_estimators_match_their_formulas():
    logp = torch.tensor([-0.5, -2.0, -1.0, -7.0], dtype=torch.float64)
    ref = torch.tensor([-1.5, -0.3, -1.0, -1.0], dtype=torch.float64)
    for i, (a, b) in enumerate(zip(logp.tolist(), ref.tolist())):
        x = a - b
        assert kl_estimate("k1", logp, ref)[i].item() == pytest.approx(x, abs=1e-12)
        assert kl_estimate("abs", logp, ref)[i].item() == pytest.approx(abs(x), abs=1e-12)
        assert kl_estimate("k2", logp, ref)[i].item() == pytest.approx(x * x / 2, abs=1e-12)
        assert kl_estimate("k3", logp, ref)[i].item() == pytest.approx(math.exp(-x) - 1 + x, abs=1e-12)
        assert kl_estimate("low_var_kl", logp, ref)[i].item() == pytest.approx(min(math.exp(-x) - 1 + x, 10), abs=1e-12)


@pytest.mark.parametrize("name", sorted(KL_ESTIMATORS))
def test_every_estimator_is_zero_when_policy_equals_reference(name):
    logp = -torch.rand(3, 5) * 4
    assert torch.equal(kl_estimate(name, logp, logp.clone()), torch.zeros(3, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k2_k3_are_non_negative(dtype):
    generator = torch.Generator().manual_seed(0)
    logp = torch.randn(10_000, generator=generator, dtype=dtype) * torch.logspace(-8, 1, 10_000, dtype=dtype)
    ref = torch.zeros_like(logp)
    for name in ("k2", "k3", "low_var_kl", "abs"):
        assert (kl_estimate(name, logp, ref) >= 0).all(), name


def test_monte_carlo_means_of_k1_and_k3_match_exact_categorical_kl():
    pi = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64)
    exact = float((pi * (pi.log() - ref.log())).sum())
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = pi.log()[tokens], ref.log()[tokens]
    for name in ("k1", "k3"):
        assert kl_estimate(name, logp, ref_logp).mean().item() == pytest.approx(exact, abs=1e-2), name
    # k3's lower variance is why GRPO uses it.
    assert kl_estimate("k3", logp, ref_logp).var() < kl_estimate("k1", logp, ref_logp).var()


def test_unknown_estimator_names_the_known_ones():
    with pytest.raises(ValueError, match="k3"):
        kl_estimate("k4", torch.zeros(1), torch.zeros(1))


def test_adaptive_update_rule():
    # Ziegler et al.: e = clip(KL/target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon.
    assert adaptive_kl_coef(0.1, current_kl=7.0, target=6.0, horizon=10_000, n_steps=256) == pytest.approx(
        0.1 * (1 + (7 / 6 - 1) * 256 / 10_000)
    )
    assert adaptive_kl_coef(0.1, 60.0, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    assert adaptive_kl_coef(0.1, 0.0, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 - 0.2 * 256 / 10_000))
    assert adaptive_kl_coef(0.1, 6.0, 6.0, 10_000, 256) == 0.1


def test_adaptive_controller_moves_towards_target_and_fixed_stays():
    controller = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=1000)
    controller.update(current_kl=12.0, n_steps=64)
    raised = controller.value
    assert raised > 0.2
    controller.update(current_kl=1.0, n_steps=64)
    assert controller.value < raised
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05
    assert KL_CONTROLLERS["adaptive"] is AdaptiveKLController and KL_CONTROLLERS["fixed"] is FixedKLController
