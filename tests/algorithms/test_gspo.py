"""GSPO (Zheng et al. 2025): the sequence-level clipped surrogate, checked against a loop over sequences."""

import math

import pytest
import torch

from tandem.algorithms.policy_losses import aggregate_loss, policy_loss


def batch(seed=0, B=5, T=6, spread=0.05):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=generator, dtype=torch.float64) * 3
    logp = old + spread * torch.randn(B, T, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 5, 2])[:B]
    mask = torch.arange(T) < lengths[:, None]
    advantages = torch.randn(B, 1, generator=generator, dtype=torch.float64).expand(B, T).clone()  # GRPO's: one per sequence
    return logp, old, advantages, mask


def paper_objective_and_gradient(logp, old, advantages, mask, eps_low, eps_high):
    """Per sequence: s_i = exp(mean_t log ratio), J = 1/G sum_i min(s_i A_i, clip(s_i) A_i), and the paper's gradient
    d(-J)/d logp_i,t = -1/G s_i A_i / |y_i| where s_i is not clipped, else 0."""
    G = logp.shape[0]
    objective, gradient = 0.0, torch.zeros_like(logp)
    for i in range(G):
        n = int(mask[i].sum())
        s = math.exp(sum(float(logp[i, t] - old[i, t]) for t in range(n)) / n)
        a = float(advantages[i, 0])
        clipped = min(max(s, 1 - eps_low), 1 + eps_high)
        objective += min(s * a, clipped * a) / G
        if s * a <= clipped * a:  # the unclipped term is the minimum: gradient flows
            for t in range(n):
                gradient[i, t] = -s * a / n / G
    return -objective, gradient


@pytest.mark.parametrize("spread, all_flow", [(1e-4, True), (0.05, False)])  # inside the clip range; some clipped
def test_gspo_loss_and_gradient_equal_the_papers_formula(spread, all_flow):
    logp, old, advantages, mask = batch(spread=spread)
    logp.requires_grad_()
    out = policy_loss("gspo", logp, old, advantages, mask, clip_low=3e-4, clip_high=4e-4)
    loss = aggregate_loss(out.loss, mask, "seq-mean-token-mean")
    (grad,) = torch.autograd.grad(loss, logp)
    expected_loss, expected_grad = paper_objective_and_gradient(logp.detach(), old, advantages, mask, 3e-4, 4e-4)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad)
    flowing = (grad.abs().sum(-1) > 0).tolist()
    assert any(flowing) and all(flowing) == all_flow


def test_gspo_token_gradient_equals_the_sequence_level_objectives():
    """With one advantage per sequence, GSPO-token's gradient is GSPO's (the ratio differentiated as a whole)."""
    logp, old, advantages, mask = batch(seed=3, spread=2e-4)
    logp.requires_grad_()
    out = policy_loss("gspo", logp, old, advantages, mask)
    (token_grad,) = torch.autograd.grad(aggregate_loss(out.loss, mask, "seq-mean-token-mean"), logp)
    log_ratio = torch.where(mask, logp - old, 0).sum(-1) / mask.sum(-1)
    s, a = torch.exp(log_ratio), advantages[:, 0]
    sequence_loss = torch.maximum(-a * s, -a * s.clamp(1 - 3e-4, 1 + 4e-4)).mean()
    (sequence_grad,) = torch.autograd.grad(sequence_loss, logp)
    torch.testing.assert_close(token_grad, sequence_grad)


def test_one_token_per_sequence_is_ppo_clip():
    generator = torch.Generator().manual_seed(1)
    old = -torch.rand(8, 1, generator=generator, dtype=torch.float64)
    logp = (old + 0.3 * torch.randn(8, 1, generator=generator, dtype=torch.float64)).requires_grad_()
    advantages = torch.randn(8, 1, generator=generator, dtype=torch.float64)
    mask = torch.ones(8, 1, dtype=torch.bool)
    gspo = policy_loss("gspo", logp, old, advantages, mask, clip_low=0.2, clip_high=0.28)
    ppo = policy_loss("ppo_clip", logp, old, advantages, mask, clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(gspo.loss, ppo.loss)
    torch.testing.assert_close(torch.autograd.grad(gspo.loss.sum(), logp)[0], torch.autograd.grad(ppo.loss.sum(), logp)[0])
    assert gspo.stats["clip_fraction"] == ppo.stats["clip_fraction"] > 0


def test_gspo_ignores_padding_and_reports_clipping():
    logp, old, advantages, mask = batch(spread=0.05)
    garbage = torch.where(mask, logp, torch.tensor(1e6, dtype=logp.dtype))
    clean = policy_loss("gspo", logp, old, advantages, mask)
    padded = policy_loss("gspo", garbage, old, advantages, mask)
    torch.testing.assert_close(torch.where(mask, padded.loss, 0), torch.where(mask, clean.loss, 0))
    assert 0 < float(clean.stats["clip_fraction"]) <= 1 and "approx_kl" in clean.stats
