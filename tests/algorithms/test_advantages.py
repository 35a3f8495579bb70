import statistics
import threading

import pytest
import torch

from tandem.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    NEEDS_VALUES,
    AdvantageInputs,
    compute_advantages,
    masked_mean,
    discounted_returns,
    gae_advantages,
    grpo_advantages,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rloo_advantages,
    sequence_to_token_advantages,
    token_rewards_from_scores,
    whiten,
)


def ragged_batch(seed=0, lengths=(5, 1, 7, 3), width=8):
    """Right-padded responses of varying length; row 2 also has a masked gap (tool output) at t = 2."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(lengths), width)
    mask = torch.arange(width).expand(shape) < torch.tensor(lengths).unsqueeze(-1)
    mask[2, 2] = False
    rewards = torch.randn(shape, generator=generator, dtype=torch.float64)
    values = torch.randn(shape, generator=generator, dtype=torch.float64)
    return rewards, values, mask


def brute_force_gae(rewards, values, mask, gamma, lam):
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = mask[b].nonzero().flatten().tolist()
        following_advantage, following_value = 0.0, 0.0  # nothing after the last response token
        for t in reversed(steps):
            delta = rewards[b, t].item() + gamma * following_value - values[b, t].item()
            following_advantage = delta + gamma * lam * following_advantage
            following_value = values[b, t].item()
            advantages[b, t] = following_advantage
            returns[b, t] = following_advantage + values[b, t].item()
    return advantages, returns


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (1.0, 0.5)])
def test_gae_matches_brute_force_loop_with_varying_lengths(gamma, lam):
    rewards, values, mask = ragged_batch()
    rewards[~mask] = float("nan")  # padding must never leak into the result
    values[~mask] = 1e6
    advantages, returns = gae_advantages(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = brute_force_gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(advantages, expected_advantages, atol=1e-12)
    assert torch.allclose(returns, expected_returns, atol=1e-12)


def test_gae_with_gamma_lambda_one_and_zero_values_is_reward_to_go():
    rewards, _, mask = ragged_batch(seed=1)
    rewards = torch.where(mask, rewards, 0)
    advantages, returns = gae_advantages(rewards, torch.zeros_like(rewards), mask.float(), gamma=1.0, lam=1.0)
    reward_to_go = torch.where(mask, rewards.flip(-1).cumsum(-1).flip(-1), 0)
    assert torch.allclose(advantages, reward_to_go, atol=1e-12)
    assert torch.allclose(returns, reward_to_go, atol=1e-12)


def grouped_scores():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.7, 0.7, 0.3, 2.0, -1.0, 0.5], dtype=torch.float64)
    return scores, 4  # three contiguous groups of four; the middle one is constant


def test_grpo_matches_the_formula_per_group():
    scores, size = grouped_scores()
    advantages = grpo_advantages(scores, group_size=size, eps=1e-6)
    for start in range(0, len(scores), size):
        group = scores[start : start + size].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)
        for i, r in enumerate(group):
            expected = 0.0 if std == 0 else (r - mean) / (std + 1e-6)
            assert advantages[start + i].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.7, 0.1, 1 / 3, 123.456])
def test_all_equal_group_gives_exactly_zero(dtype, value):
    scores = torch.full((8,), value, dtype=dtype)
    for norm in (True, False):
        assert torch.equal(grpo_advantages(scores, group_size=8, norm_by_std=norm), torch.zeros(8, dtype=dtype))
    assert torch.equal(rloo_advantages(scores, group_size=8), torch.zeros(8, dtype=dtype))


def test_dr_grpo_advantage_is_reward_minus_group_mean():
    scores, size = grouped_scores()
    expected = scores - scores.view(-1, size).mean(-1).repeat_interleave(size)
    assert torch.allclose(grpo_advantages(scores, group_size=size, norm_by_std=False), expected, atol=1e-12)


def test_group_ids_need_not_be_contiguous():
    scores, size = grouped_scores()
    permutation = torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))
    ids = (torch.arange(len(scores)) // size)[permutation] * 10 + 3  # arbitrary labels
    shuffled = grpo_advantages(scores[permutation], group_ids=ids)
    assert torch.allclose(shuffled, grpo_advantages(scores, group_size=size)[permutation], atol=1e-12)
    with pytest.raises(ValueError):
        grpo_advantages(scores, group_ids=ids, group_size=size)
    with pytest.raises(ValueError):
        grpo_advantages(scores, group_size=5)


def test_rloo_is_leave_one_out_and_equals_scaled_centering():
    scores, size = grouped_scores()
    advantages = rloo_advantages(scores, group_size=size)
    for start in range(0, len(scores), size):
        group = scores[start : start + size].tolist()
        n, mean = len(group), statistics.mean(group)
        for i, r in enumerate(group):
            others = group[:i] + group[i + 1 :]
            assert advantages[start + i].item() == pytest.approx(r - sum(others) / len(others), abs=1e-12)
            assert advantages[start + i].item() == pytest.approx(n / (n - 1) * (r - mean), abs=1e-12)


def test_a_group_of_one_has_no_baseline_and_zero_advantage():
    scores = torch.tensor([3.0, 1.0, 2.0])
    ids = torch.tensor([0, 1, 1])
    assert grpo_advantages(scores, group_ids=ids)[0] == 0 and rloo_advantages(scores, group_ids=ids)[0] == 0


def test_whiten_brute_force_and_shift_mean():
    _, values, mask = ragged_batch(seed=2)
    selected = values[mask].tolist()
    mean, std = statistics.mean(selected), statistics.stdev(selected)  # unbiased, as TRL and verl
    whitened = whiten(values, mask)
    assert torch.allclose(whitened[mask], (values[mask] - mean) / (std**2 + 1e-8) ** 0.5, atol=1e-12)
    assert torch.equal(whitened[~mask], torch.zeros(int((~mask).sum()), dtype=values.dtype))
    assert torch.allclose(whiten(values, mask, shift_mean=False)[mask], whitened[mask] + mean, atol=1e-12)


def test_sequence_broadcast_and_last_token_placement():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]]).float()
    assert sequence_to_token_advantages(torch.tensor([2.0, -1.0, 5.0]), mask).tolist() == [
        [2.0, 2.0, 0.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]
    ]
    assert token_rewards_from_scores(torch.tensor([2.0, -1.0, 5.0]), mask).tolist() == [
        [0.0, 2.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0]
    ]


def test_reinforce_plus_plus_folds_kl_into_rewards_then_whitens():
    rewards, _, mask = ragged_batch(seed=3)
    kl = torch.rand_like(rewards)
    advantages, returns = reinforce_plus_plus_advantages(rewards, mask, gamma=0.9, kl=kl, kl_coef=0.1)
    expected_returns, _ = gae_advantages(rewards - 0.1 * kl, torch.zeros_like(rewards), mask, gamma=0.9, lam=1.0)
    assert torch.allclose(returns, expected_returns, atol=1e-12)
    assert torch.allclose(advantages, whiten(expected_returns, mask), atol=1e-12)
    assert torch.allclose(discounted_returns(rewards, mask, 0.9), gae_advantages(
        rewards, torch.zeros_like(rewards), mask, 0.9, 1.0)[0], atol=1e-12)


def test_reinforce_plus_plus_baseline_subtracts_group_mean_then_whitens_over_batch():
    scores, size = grouped_scores()
    mask = torch.arange(6).expand(len(scores), 6) < torch.arange(1, len(scores) + 1).clamp(max=6).unsqueeze(-1)
    centered = scores - scores.view(-1, size).mean(-1).repeat_interleave(size)
    expected = whiten(centered.unsqueeze(-1).expand(-1, 6), mask)
    advantages = reinforce_plus_plus_baseline_advantages(scores, mask, group_size=size)
    assert torch.allclose(advantages, expected, atol=1e-12)


def test_registry_runs_every_estimator_on_a_rollout_batch():
    assert set(ADVANTAGE_ESTIMATORS) >= {"gae", "grpo", "dr_grpo", "rloo", "reinforce_plus_plus",
                                          "reinforce_plus_plus_baseline"}
    rewards, values, mask = ragged_batch(seed=4, lengths=(3, 5, 2, 4))
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float64)
    inputs = AdvantageInputs(token_rewards_from_scores(scores, mask), mask, values=values, group_size=2)
    for name in ADVANTAGE_ESTIMATORS:
        advantages, returns = compute_advantages(name, inputs)
        assert advantages.shape == mask.shape and torch.isfinite(advantages).all(), name
        assert torch.equal(advantages[~mask], torch.zeros(int((~mask).sum()), dtype=advantages.dtype)), name
    grpo, _ = compute_advantages("grpo", inputs)
    assert torch.allclose(grpo, sequence_to_token_advantages(grpo_advantages(scores, group_size=2), mask))
    assert NEEDS_VALUES["gae"] and not NEEDS_VALUES["grpo"]
    with pytest.raises(ValueError, match="critic values"):
        compute_advantages("gae", AdvantageInputs(inputs.rewards, mask))
    with pytest.raises(ValueError, match="grpo"):
        compute_advantages("ppo2", inputs)


def test_gae_estimator_folds_the_kl_penalty_into_rewards():
    rewards, values, mask = ragged_batch(seed=5)
    kl = torch.rand_like(rewards)
    inputs = AdvantageInputs(rewards, mask, values=values, kl=kl)
    advantages, returns = compute_advantages("gae", inputs, gamma=1.0, lam=0.9, kl_coef=0.05, whiten_advantages=False)
    expected = gae_advantages(rewards - 0.05 * kl, values, mask, gamma=1.0, lam=0.9)
    assert torch.allclose(advantages, expected[0]) and torch.allclose(returns, expected[1])
    whitened, _ = compute_advantages("gae", inputs, lam=0.9, kl_coef=0.05)
    assert torch.allclose(whitened, whiten(expected[0], mask))
    with pytest.raises(ValueError, match="kl"):
        compute_advantages("gae", AdvantageInputs(rewards, mask, values=values), kl_coef=0.1)


def test_informative_groups_drops_groups_with_one_reward_for_all():
    from tandem.algorithms.advantages import informative_groups

    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.7])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert informative_groups(scores, groups).tolist() == [False, False, True, True, False, False, True, True]
    # an invalid sample does not count: group 3 has one valid reward left, so nothing to compare
    valid = torch.tensor([True] * 7 + [False])
    assert informative_groups(scores, groups, valid).tolist()[6:] == [False, False]



def _shards_with_a_summing_reduce(tensors, world):
    """Rows dealt to `world` shards (round-robin), as processes would hold them."""
    return [tuple(t[rank::world] for t in tensors) for rank in range(world)]


def _run_sharded(fn, shards):
    """Run `fn(*shard, reduce)` for every shard in its own thread; `reduce` is an all-reduce (sum) across the
    threads, as torch.distributed's would be across processes. Returns each shard's output."""
    world = len(shards)
    barrier = threading.Barrier(world)
    slots: list = [None] * world
    outputs: list = [None] * world

    def all_reduce(rank):
        def reduce(value):
            slots[rank] = value
            barrier.wait()
            total = torch.stack(list(slots)).sum(0)
            barrier.wait()  # every shard has read the slots before any overwrites them
            return total
        return reduce

    def work(rank):
        outputs[rank] = fn(*shards[rank], all_reduce(rank))

    threads = [threading.Thread(target=work, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outputs

def test_whiten_with_a_reduce_over_shards_equals_whitening_the_whole_batch():
    torch.manual_seed(3)
    values = torch.randn(6, 5, dtype=torch.float64) * 3 + 1
    mask = torch.rand(6, 5) > 0.3
    whole = whiten(values, mask)
    world = 3
    shards = _shards_with_a_summing_reduce((values, mask), world)
    outputs = _run_sharded(lambda v, m, reduce: whiten(v, m, reduce=reduce), shards)
    for rank, out in enumerate(outputs):
        assert torch.allclose(out, whole[rank::world], atol=1e-12)
    # without the reduce each shard is whitened on its own: different numbers, so the test can fail
    assert not torch.allclose(whiten(values[0::world], mask[0::world]), whole[0::world], atol=1e-3)


def test_masked_mean_with_a_reduce_is_the_global_mean():
    values = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    shards = _shards_with_a_summing_reduce((values, mask), 2)
    outputs = _run_sharded(lambda v, m, reduce: masked_mean(v, m, reduce=reduce), shards)
    expected = values[mask].mean()
    assert all(torch.allclose(out, expected) for out in outputs)


@pytest.mark.parametrize("name", ["gae", "reinforce_plus_plus", "reinforce_plus_plus_baseline"])
def test_whitening_estimators_with_a_reduce_equal_the_single_process_batch(name):
    torch.manual_seed(5)
    batch, width = 8, 6
    mask = torch.ones(batch, width, dtype=torch.bool)
    mask[:, 4:] = torch.rand(batch, 2) > 0.5
    scores = torch.randn(batch, dtype=torch.float64)
    rewards = token_rewards_from_scores(scores, mask)
    values = torch.randn(batch, width, dtype=torch.float64)
    groups = torch.arange(batch) // 2  # groups of two, kept together on a shard

    def run(r, m, v, g, reduce=None):
        inputs = AdvantageInputs(rewards=r, mask=m, values=v, group_ids=g, reduce=reduce)
        return compute_advantages(name, inputs)[0]

    whole = run(rewards, mask, values, groups)
    shards = [tuple(t[rank * 4:(rank + 1) * 4] for t in (rewards, mask, values, groups)) for rank in range(2)]
    outputs = _run_sharded(run, shards)
    assert torch.allclose(torch.cat(outputs), whole, atol=1e-10)
    assert not torch.allclose(torch.cat([run(*shard) for shard in shards]), whole, atol=1e-4)
