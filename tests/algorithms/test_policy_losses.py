import inspect
import math

import pytest
import torch

from tandem.algorithms.kl import kl_estimate
from tandem.algorithms.policy_losses import (
    POLICY_LOSS_FACTS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    aggregate_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    global_normaliser,
    policy_loss,
)


def token_gradient(name, ratio, advantage, **options):
    """d loss / d logp for one token with pi_old fixed."""
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    logp = (old + math.log(ratio)).requires_grad_()
    out = policy_loss(name, logp, old, torch.tensor([[advantage]], dtype=torch.float64), torch.ones(1, 1), **options)
    (grad,) = torch.autograd.grad(out.loss.sum(), logp)
    return out.loss.item(), grad.item()


@pytest.mark.parametrize("clip_low, clip_high", [(0.2, 0.2), (0.2, 0.28)])
def test_ppo_clip_gradient_facts(clip_low, clip_high):
    options = {"clip_low": clip_low, "clip_high": clip_high}
    # A > 0 and ratio above 1 + eps_high: clipped, no gradient.
    assert token_gradient("ppo_clip", 1 + clip_high + 0.05, 1.5, **options)[1] == 0
    # A < 0 and ratio below 1 - eps_low: clipped, no gradient.
    assert token_gradient("ppo_clip", 1 - clip_low - 0.05, -1.5, **options)[1] == 0
    # The pessimistic side is never clipped: A > 0 with a small ratio, A < 0 with a large one.
    for ratio, advantage in [(0.5, 1.5), (1.6, -1.5)]:
        loss, grad = token_gradient("ppo_clip", ratio, advantage, **options)
        assert loss == pytest.approx(-ratio * advantage) and grad == pytest.approx(-ratio * advantage)
    # Inside the clip range the loss is -ratio * A and d/dlogp = -ratio * A.
    for ratio in (1 - clip_low + 0.01, 1.0, 1 + clip_high - 0.01):
        for advantage in (2.0, -0.7):
            loss, grad = token_gradient("ppo_clip", ratio, advantage, **options)
            assert loss == pytest.approx(-ratio * advantage, rel=1e-12)
            assert grad == pytest.approx(-ratio * advantage, rel=1e-12)


def test_clip_higher_lets_positive_tokens_grow_further():
    assert token_gradient("ppo_clip", 1.25, 1.0, clip_low=0.2)[1] == 0
    assert token_gradient("ppo_clip", 1.25, 1.0, clip_low=0.2, clip_high=0.28)[1] != 0


def test_dual_clip_bounds_negative_advantage_losses():
    loss, grad = token_gradient("ppo_clip", 5.0, -2.0, dual_clip=3.0)
    assert loss == pytest.approx(3.0 * 2.0) and grad == 0
    loss, grad = token_gradient("ppo_clip", 2.0, -2.0, dual_clip=3.0)  # below c: ordinary PPO
    assert loss == pytest.approx(4.0) and grad == pytest.approx(4.0)
    assert token_gradient("ppo_clip", 5.0, 2.0, dual_clip=3.0)[1] == 0  # A > 0 untouched (clipped as usual)
    with pytest.raises(ValueError):
        token_gradient("ppo_clip", 1.0, 1.0, dual_clip=1.0)


def test_ppo_stats_clip_fraction_and_k3_approx_kl():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.5, 0.7, 0.2, 0.55]]))  # ratios 1, 1.4, 0.4, 1.1
    advantages = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = policy_loss("ppo_clip", logp, old, advantages, mask, clip_low=0.2, dual_clip=3.0)
    assert out.stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert out.stats["dual_clip_fraction"].item() == 0
    expected_kl = kl_estimate("k3", old, logp)[:, :3].mean()
    assert out.stats["approx_kl"].item() == pytest.approx(expected_kl.item())
    assert out.stats["approx_kl"].item() > 0


def test_reinforce_equals_unclipped_ppo():
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 4, generator=generator)
    logp, advantages = old + 0.3 * torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    mask = torch.ones(3, 4)
    unclipped = policy_loss("ppo_clip", logp, old, advantages, mask, clip_low=1.0, clip_high=1e9).loss
    assert torch.allclose(policy_loss("reinforce", logp, old, advantages, mask).loss, unclipped)
    assert set(POLICY_LOSSES) >= {"ppo_clip", "reinforce"}


def test_declared_options_are_keyword_arguments_the_rl_configs_set():
    from tandem.trainers.online import OnlineRLConfig

    for name, loss in POLICY_LOSSES.items():
        declared = POLICY_LOSS_FACTS[name]["options"]
        assert sorted(declared) == sorted(list(inspect.signature(loss).parameters)[4:]), name
        assert set(declared) <= set(OnlineRLConfig.model_fields), name


def test_clipped_value_loss_matches_formula():
    values = torch.tensor([[1.0, 2.0, 0.0, 0.5]])
    old = torch.tensor([[0.0, 2.1, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 0.0, 3.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 1]])
    loss, fraction = clipped_value_loss(values, old, returns, mask, clip=0.2)
    for t in range(4):
        v, o, r = values[0, t].item(), old[0, t].item(), returns[0, t].item()
        expected = 0.5 * max((v - r) ** 2, (min(max(v, o - 0.2), o + 0.2) - r) ** 2)
        assert loss[0, t].item() == pytest.approx(expected, rel=1e-6)
    assert fraction.item() == pytest.approx(0.25)  # only t = 0 prefers the clipped value
    plain, _ = clipped_value_loss(values, old, returns, mask, clip=None)
    assert torch.allclose(plain, 0.5 * (values - returns) ** 2)


def test_entropy_from_logits_brute_force():
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    entropy = entropy_from_logits(logits)
    probs = torch.softmax(logits, -1)
    assert torch.allclose(entropy, -(probs * probs.log()).sum(-1), atol=1e-12)
    assert torch.allclose(entropy_from_logits(torch.zeros(1, 1, 7)), torch.tensor([[math.log(7)]]))
    assert entropy_from_logits(logits.to(torch.bfloat16)).dtype == torch.float32


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns.clone(), returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask).item() == pytest.approx(0.0)


# Loss aggregation.


def random_ragged(seed=0, batch=7, width=9):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 9, 4, 2, 7, 5, 3])[:batch]
    mask = torch.arange(width).expand(batch, width) < lengths.unsqueeze(-1)
    weights = torch.randn(batch, width, generator=generator, dtype=torch.float64)
    return mask, weights


def per_token_loss(theta, weights):
    """A non-linear per-token loss of a shared parameter, so gradients from all tokens mix."""
    return torch.sin(theta * weights) + (theta * weights) ** 2


def brute_force_aggregate(loss, mask, mode, constant):
    rows = [[loss[b, t].item() for t in range(mask.shape[1]) if mask[b, t]] for b in range(mask.shape[0])]
    if mode == "token-mean":
        return sum(map(sum, rows)) / sum(map(len, rows))
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-sum":
        return sum(map(sum, rows)) / len(rows)
    return sum(map(sum, rows)) / (len(rows) * constant)


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_full_batch_aggregation_matches_its_definition(mode):
    mask, weights = random_ragged()
    loss = per_token_loss(torch.tensor(0.3, dtype=torch.float64), weights)
    loss[~mask] = float("nan")  # padding never enters
    constant = 12.0 if mode == "seq-mean-token-sum-norm" else None
    expected = brute_force_aggregate(loss, mask, mode, constant)
    assert aggregate_loss(loss, mask, mode, constant=constant).item() == pytest.approx(expected, rel=1e-12)


def test_dr_grpo_constant_defaults_to_the_mask_width():
    mask, weights = random_ragged()
    loss = per_token_loss(torch.tensor(0.3, dtype=torch.float64), weights)
    default = aggregate_loss(loss, mask, "seq-mean-token-sum-norm")
    assert default.item() == pytest.approx(brute_force_aggregate(loss, mask, "dr", mask.shape[1]), rel=1e-12)


def micro_batches(mask, weights, bounds):
    """Split rows at `bounds`, trimming each part's padding to its own longest response (unequal widths)."""
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        width = int(mask[start:stop].sum(-1).max())
        parts.append((mask[start:stop, :width], weights[start:stop, :width]))
    return parts


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_accumulated_micro_batches_give_the_full_batch_gradient(mode):
    mask, weights = random_ragged(seed=1)
    constant = float(mask.shape[1])  # fixed for the run (e.g. max_new_tokens), not per micro-batch
    theta = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    full = aggregate_loss(per_token_loss(theta, weights), mask, mode, constant=constant)
    (full_grad,) = torch.autograd.grad(full, theta)

    parts = micro_batches(mask, weights, [0, 1, 4, 7])  # 1, 24 and 15 response tokens
    normaliser = global_normaliser(mode, mask, constant)
    accumulated = sum(aggregate_loss(per_token_loss(theta, w), m, mode, normaliser) for m, w in parts)
    (accumulated_grad,) = torch.autograd.grad(accumulated, theta)
    assert accumulated.item() == pytest.approx(full.item(), rel=1e-12)
    assert accumulated_grad.item() == pytest.approx(full_grad.item(), abs=1e-6, rel=1e-9)


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_data_parallel_shards_with_accumulation_give_the_full_batch_gradient(mode):
    mask, weights = random_ragged(seed=2)
    constant = float(mask.shape[1])
    theta = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
    full = aggregate_loss(per_token_loss(theta, weights), mask, mode, constant=constant)
    (full_grad,) = torch.autograd.grad(full, theta)

    shard_bounds = [[0, 3], [3, 4, 7]]  # rank 0: one micro-batch; rank 1: two
    shards = [micro_batches(mask, weights, bounds) for bounds in shard_bounds]
    # Each process knows only its shard; the normaliser is additive, so all-reduce(SUM) of local counts.
    normaliser = sum(global_normaliser(mode, mask[b[0] : b[-1]], constant) for b in shard_bounds)
    assert normaliser == global_normaliser(mode, mask, constant)
    shard_grads = []
    for shard in shards:
        shard_loss = sum(aggregate_loss(per_token_loss(theta, w), m, mode, normaliser) for m, w in shard)
        shard_grads.append(torch.autograd.grad(shard_loss, theta)[0])
    world_size = len(shards)
    # The global loss is the SUM over shards; DDP's all-reduce averages, hence the factor world_size.
    assert sum(shard_grads).item() == pytest.approx(full_grad.item(), abs=1e-6, rel=1e-9)
    ddp_average = sum(world_size * g for g in shard_grads) / world_size
    assert ddp_average.item() == pytest.approx(full_grad.item(), abs=1e-6, rel=1e-9)


def test_normaliser_is_additive_over_parts():
    mask, _ = random_ragged(seed=3)
    for mode in LOSS_AGGREGATIONS:
        parts = [mask[:2], mask[2:3], mask[3:]]
        total = sum(global_normaliser(mode, part, constant=9.0) for part in parts)
        assert total.item() == global_normaliser(mode, mask, constant=9.0).item(), mode


def test_local_normalisation_is_what_breaks_accumulation():
    mask, weights = random_ragged(seed=1)
    theta = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    full = aggregate_loss(per_token_loss(theta, weights), mask, "token-mean")
    parts = micro_batches(mask, weights, [0, 1, 4, 7])
    naive = sum(aggregate_loss(per_token_loss(theta, w), m, "token-mean") for m, w in parts) / len(parts)
    assert abs(naive.item() - full.item()) > 1e-3


def test_empty_batch_aggregates_to_zero_and_unknown_mode_is_named():
    loss = torch.randn(2, 3)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for mode in LOSS_AGGREGATIONS:
        assert aggregate_loss(loss, mask, mode).item() == 0.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss(loss, mask, "sum")


def test_token_entropy_at_scored_positions_only():
    from tandem.algorithms.policy_losses import token_entropy

    torch.manual_seed(3)
    logits = torch.randn(2, 6, 9)
    mask = torch.tensor([[False, False, True, True, True], [False, False, False, True, False]])
    full = entropy_from_logits(logits[:, :-1])
    for kept in (logits, logits[:, -4:]):  # every position, or the last 4 (a logits_to_keep forward)
        entropy = token_entropy(kept, mask)
        assert entropy.shape == mask.shape
        assert torch.allclose(entropy[mask], full[mask]) and (entropy[~mask] == 0).all()
