import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from tandem.algorithms.preference import (
    NEEDS_REFERENCE,
    PREFERENCE_LOSS_FACTS,
    PREFERENCE_LOSSES,
    PairedLogps,
    UnpairedLogps,
    kto_loss,
    kto_reference_point,
    preference_loss,
)


def log_sigmoid(z):
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def random_logps(seed, batch=6, reference=True):
    generator = torch.Generator().manual_seed(seed)
    chosen_lengths = torch.randint(1, 20, (batch,), generator=generator).double()
    rejected_lengths = torch.randint(1, 20, (batch,), generator=generator).double()

    def sums(lengths):  # per-token log-probs in (-3, 0), so averages are valid log-probabilities
        return -3 * torch.rand(batch, generator=generator, dtype=torch.float64) * lengths

    return PairedLogps(
        policy_chosen=sums(chosen_lengths),
        policy_rejected=sums(rejected_lengths),
        ref_chosen=sums(chosen_lengths) if reference else None,
        ref_rejected=sums(rejected_lengths) if reference else None,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )


def at_reference(batch=4):
    """Policy equal to the reference: the state at initialisation."""
    chosen, rejected = torch.tensor([-5.0, -12.0, -0.5, -30.0]), torch.tensor([-7.0, -3.0, -1.0, -20.0])
    lengths_c, lengths_r = torch.tensor([3.0, 8.0, 1.0, 15.0]), torch.tensor([4.0, 2.0, 2.0, 9.0])
    return PairedLogps(chosen, rejected, chosen.clone(), rejected.clone(), lengths_c, lengths_r)


def per_example(logps):
    """Rows of plain floats: (pc, pr, rc, rr, |yc|, |yr|)."""
    fields = [logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected]
    fields += [logps.chosen_lengths, logps.rejected_lengths]
    return zip(*[f.tolist() if f is not None else [None] * len(logps.policy_chosen) for f in fields])


# Reference facts (SPEC.md): values at initialisation.


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 2.0])
def test_reference_facts_at_initialisation(beta):
    logps = at_reference()
    for name, options in [("sigmoid", {}), ("sigmoid", {"label_smoothing": 0.0}), ("robust", {"label_smoothing": 0.0})]:
        out = preference_loss(name, logps, beta, **options)
        assert torch.allclose(out.loss, torch.full((4,), math.log(2)), rtol=1e-6, atol=0)
    # cDPO with eps > 0 also gives ln 2 at h = 0: (1 - eps) ln 2 + eps ln 2.
    cdpo = preference_loss("sigmoid", logps, beta, label_smoothing=0.2).loss
    assert torch.allclose(cdpo, torch.full((4,), math.log(2)))
    for average in (True, False):
        ipo = preference_loss("ipo", logps, beta, ipo_average=average).loss
        assert torch.allclose(ipo, torch.full((4,), 1 / (4 * beta**2)), rtol=1e-6, atol=0)
    assert torch.equal(preference_loss("hinge", logps, beta).loss, torch.ones(4))
    for name in ("sigmoid", "robust", "ipo", "hinge"):
        out = preference_loss(name, logps, beta)
        assert torch.equal(out.chosen_rewards, torch.zeros(4)) and torch.equal(out.rejected_rewards, torch.zeros(4))


def test_kto_reference_facts_at_initialisation():
    policy = torch.tensor([-4.0, -9.0, -1.5, -20.0])
    z0 = kto_reference_point(policy.flip(0), policy.flip(0).clone())
    assert z0.item() == 0.0
    losses, rewards = kto_loss(policy, policy.clone(), torch.tensor([True, False, True, False]), z0, beta=0.1)
    assert torch.equal(losses, torch.full((4,), 0.5)) and torch.equal(rewards, torch.zeros(4))


# Each loss against its formula, one example at a time in plain Python.

SEEDS, BETAS, EPSILONS = [0, 1, 2], [0.05, 0.1, 1.0], [0.0, 0.1, 0.3]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("eps", EPSILONS)
def test_dpo_cdpo_and_robust_match_formula(seed, beta, eps):
    logps = random_logps(seed)
    sigmoid = preference_loss("sigmoid", logps, beta, label_smoothing=eps)
    robust = preference_loss("robust", logps, beta, label_smoothing=eps)
    for i, (pc, pr, rc, rr, _, _) in enumerate(per_example(logps)):
        h = (pc - rc) - (pr - rr)
        clean, flipped = -log_sigmoid(beta * h), -log_sigmoid(-beta * h)
        assert math.isclose(sigmoid.loss[i].item(), (1 - eps) * clean + eps * flipped, rel_tol=1e-9)
        assert math.isclose(robust.loss[i].item(), ((1 - eps) * clean - eps * flipped) / (1 - 2 * eps), rel_tol=1e-9)
        for out in (sigmoid, robust):
            assert math.isclose(out.chosen_rewards[i].item(), beta * (pc - rc), rel_tol=1e-12)
            assert math.isclose(out.rejected_rewards[i].item(), beta * (pr - rr), rel_tol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
def test_ipo_and_hinge_match_formula(seed, beta):
    logps = random_logps(seed)
    averaged = preference_loss("ipo", logps, beta)
    summed = preference_loss("ipo", logps, beta, ipo_average=False)
    hinge = preference_loss("hinge", logps, beta)
    for i, (pc, pr, rc, rr, lc, lr) in enumerate(per_example(logps)):
        h_avg = (pc - rc) / lc - (pr - rr) / lr
        h = (pc - rc) - (pr - rr)
        assert math.isclose(averaged.loss[i].item(), (h_avg - 1 / (2 * beta)) ** 2, rel_tol=1e-9)
        assert math.isclose(averaged.chosen_rewards[i].item(), beta * (pc - rc), rel_tol=1e-12)
        assert math.isclose(summed.loss[i].item(), (h - 1 / (2 * beta)) ** 2, rel_tol=1e-9)
        assert math.isclose(hinge.loss[i].item(), max(0.0, 1 - beta * h), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.4])
def test_simpo_matches_formula(seed, beta, gamma):
    logps = random_logps(seed, reference=False)
    out = preference_loss("simpo", logps, beta, simpo_gamma=gamma)
    for i, (pc, pr, _, _, lc, lr) in enumerate(per_example(logps)):
        assert math.isclose(out.loss[i].item(), -log_sigmoid(beta * (pc / lc - pr / lr) - gamma), rel_tol=1e-9)
        # TRL's spelling of the same number: beta * (pi_logratios - simpo_gamma / beta).
        assert math.isclose(out.loss[i].item(), -log_sigmoid(beta * ((pc / lc - pr / lr) - gamma / beta)), rel_tol=1e-9)
        assert math.isclose(out.chosen_rewards[i].item(), beta * pc / lc, rel_tol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
def test_orpo_matches_formula(seed, beta):
    logps = random_logps(seed, reference=False)
    out = preference_loss("orpo", logps, beta)
    weighted = preference_loss("orpo", logps, beta, orpo_lambda=0.7)
    for i, (pc, pr, _, _, lc, lr) in enumerate(per_example(logps)):
        p_c, p_r = math.exp(pc / lc), math.exp(pr / lr)
        log_odds_ratio = math.log(p_c / (1 - p_c)) - math.log(p_r / (1 - p_r))
        assert math.isclose(out.loss[i].item(), -pc / lc - beta * log_sigmoid(log_odds_ratio), rel_tol=1e-9)
        assert math.isclose(weighted.loss[i].item(), -pc / lc - 0.7 * log_sigmoid(log_odds_ratio), rel_tol=1e-9)
        assert math.isclose(out.rejected_rewards[i].item(), beta * pr / lr, rel_tol=1e-12)


def test_orpo_uses_given_chosen_nll_and_is_finite_near_probability_one():
    logps = random_logps(0, batch=3, reference=False)
    without = preference_loss("orpo", logps, 0.1).loss  # NLL defaults to -pc/|yc|
    logps.chosen_nll = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    with_nll = preference_loss("orpo", logps, 0.1).loss
    assert torch.allclose(with_nll - without, logps.chosen_nll + logps.policy_chosen / logps.chosen_lengths)
    tiny = PairedLogps(torch.tensor([-1e-7]), torch.tensor([-1.0]), None, None, torch.ones(1), torch.ones(1))
    assert torch.isfinite(preference_loss("orpo", tiny, 0.1).loss).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
def test_kto_matches_formula(seed, beta):
    generator = torch.Generator().manual_seed(seed)
    policy = -10 * torch.rand(8, generator=generator, dtype=torch.float64)
    ref = -10 * torch.rand(8, generator=generator, dtype=torch.float64)
    desirable = torch.rand(8, generator=generator) < 0.5
    mismatched_policy, mismatched_ref = policy.roll(1) + 0.3, ref.roll(1)
    z0 = kto_reference_point(mismatched_policy, mismatched_ref)
    expected_z0 = max(0.0, sum(p - r for p, r in zip(mismatched_policy.tolist(), mismatched_ref.tolist())) / 8)
    assert math.isclose(z0.item(), expected_z0, rel_tol=1e-12)
    losses, rewards = kto_loss(policy, ref, desirable, z0, beta, desirable_weight=1.3, undesirable_weight=0.8)
    for i, (p, r, good) in enumerate(zip(policy.tolist(), ref.tolist(), desirable.tolist())):
        sigma = 1 / (1 + math.exp(-beta * ((p - r) - expected_z0 if good else expected_z0 - (p - r))))
        assert math.isclose(losses[i].item(), (1.3 if good else 0.8) * (1 - sigma), rel_tol=1e-9)
        assert math.isclose(rewards[i].item(), beta * (p - r), rel_tol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_kto_is_the_registered_unpaired_loss(seed):
    generator = torch.Generator().manual_seed(seed)
    policy, ref = (-10 * torch.rand(6, generator=generator, dtype=torch.float64) for _ in range(2))
    desirable = torch.rand(6, generator=generator) < 0.5
    z0, beta = torch.tensor(0.4, dtype=torch.float64), 0.2
    assert PREFERENCE_LOSS_FACTS["kto"] == {"needs_reference": True, "paired": False,
                                            "options": ("desirable_weight", "undesirable_weight")}
    out = preference_loss("kto", UnpairedLogps(policy, ref, desirable, z0), beta, desirable_weight=2.0)
    for i, (p, r, good) in enumerate(zip(policy.tolist(), ref.tolist(), desirable.tolist())):
        sigma = 1 / (1 + math.exp(-beta * ((p - r) - 0.4 if good else 0.4 - (p - r))))
        assert math.isclose(out.loss[i].item(), (2.0 if good else 1.0) * (1 - sigma), rel_tol=1e-9)
    with pytest.raises(TypeError, match="UnpairedLogps"):
        preference_loss("kto", random_logps(3), beta)
    with pytest.raises(TypeError, match="PairedLogps"):
        preference_loss("sigmoid", UnpairedLogps(policy, ref, desirable, z0), beta)
    with pytest.raises(ValueError, match="reference"):
        preference_loss("kto", UnpairedLogps(policy, None, desirable, z0), beta)


def test_declared_options_are_the_losses_keyword_arguments():
    for name, loss in PREFERENCE_LOSSES.items():
        keywords = list(inspect.signature(loss).parameters)[2:]  # after (logps, beta)
        assert sorted(PREFERENCE_LOSS_FACTS[name]["options"]) == sorted(keywords), name


def test_kto_reference_point_is_clamped_and_detached():
    policy = torch.tensor([-5.0, -6.0], requires_grad=True)
    assert kto_reference_point(policy, torch.tensor([-1.0, -1.0])).item() == 0.0
    z0 = kto_reference_point(policy, torch.tensor([-9.0, -9.0]))
    assert z0.item() == 3.5 and not z0.requires_grad


# Properties.


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    logps = random_logps(3)
    logps.policy_chosen.requires_grad_(True)
    logps.policy_rejected.requires_grad_(True)
    out = preference_loss("sigmoid", logps, 0.1)
    out.loss.sum().backward()
    assert (logps.policy_chosen.grad < 0).all() and (logps.policy_rejected.grad > 0).all()  # descent raises chosen
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.4])
def test_robust_dpo_is_unbiased_over_label_flips(eps):
    logps = random_logps(4)
    flipped = PairedLogps(  # the same pairs with the preference label flipped
        logps.policy_rejected, logps.policy_chosen, logps.ref_rejected, logps.ref_chosen,
        logps.rejected_lengths, logps.chosen_lengths,
    )  # fmt: skip
    beta = 0.3
    expected = (1 - eps) * preference_loss("robust", logps, beta, label_smoothing=eps).loss
    expected += eps * preference_loss("robust", flipped, beta, label_smoothing=eps).loss
    assert torch.allclose(expected, preference_loss("sigmoid", logps, beta).loss, rtol=1e-9, atol=0)


def test_reference_requirements_and_unknown_names():
    without_reference = random_logps(5, reference=False)
    for name in ("simpo", "orpo"):
        assert not NEEDS_REFERENCE[name]
        assert torch.isfinite(preference_loss(name, without_reference, 0.1).loss).all()
    for name in ("sigmoid", "robust", "ipo", "hinge"):
        with pytest.raises(ValueError, match="reference"):
            preference_loss(name, without_reference, 0.1)
    with pytest.raises(ValueError, match="known: .*ipo.*sigmoid"):
        preference_loss("dpo-typo", without_reference, 0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss("robust", random_logps(5), 0.1, label_smoothing=0.5)
    assert set(PREFERENCE_LOSSES) >= {"sigmoid", "robust", "ipo", "hinge", "simpo", "orpo"}


# Parity with TRL (optional peer). TRL 1.x computes DPO, IPO, robust, hinge and KTO inline in each trainer's
# _compute_loss, so those are compared end to end in tests/peers/test_trl_parity.py; SimPO and ORPO's
# odds-ratio term are methods that need only a few attributes, so they are called here on a stand-in trainer.


def trl_stand_in(**attributes):
    return SimpleNamespace(accelerator=SimpleNamespace(device="cpu"), **attributes)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_simpo_matches_trl_cpo_trainer(eps):
    cpo = pytest.importorskip("trl.experimental.cpo", reason="TRL (with trl.experimental.cpo) not installed")
    logps = random_logps(7, reference=False)
    chosen, rejected = logps.policy_chosen / logps.chosen_lengths, logps.policy_rejected / logps.rejected_lengths
    trainer = trl_stand_in(beta=0.2, alpha=0.0, simpo_gamma=0.7, label_smoothing=eps, loss_type="simpo")
    losses, chosen_rewards, rejected_rewards = cpo.CPOTrainer.cpo_loss(trainer, chosen, rejected)
    ours = preference_loss("simpo", logps, 0.2, simpo_gamma=0.7, label_smoothing=eps)
    assert torch.allclose(ours.loss, losses, rtol=1e-9)
    assert torch.allclose(ours.chosen_rewards, chosen_rewards)
    assert torch.allclose(ours.rejected_rewards, rejected_rewards)


def test_orpo_matches_trl_orpo_trainer():
    orpo = pytest.importorskip("trl.experimental.orpo", reason="TRL (with trl.experimental.orpo) not installed")
    logps = random_logps(8, reference=False)
    chosen, rejected = logps.policy_chosen / logps.chosen_lengths, logps.policy_rejected / logps.rejected_lengths
    losses, chosen_rewards, _, _, _ = orpo.ORPOTrainer.odds_ratio_loss(trl_stand_in(beta=0.25), chosen, rejected)
    ours = preference_loss("orpo", logps, 0.25)
    # TRL's total is nll - mean(losses); ours per pair is nll - losses with nll = -average chosen log-prob.
    assert torch.allclose(ours.loss, -chosen - losses.double(), rtol=1e-6)
    assert torch.allclose(ours.chosen_rewards, chosen_rewards.double(), rtol=1e-6)
