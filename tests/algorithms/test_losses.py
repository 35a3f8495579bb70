import math

import torch

from tandem.algorithms.losses import IGNORE_INDEX, bradley_terry_loss, sft_nll_sum, token_log_probs


def test_sft_nll_matches_brute_force_loop():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = IGNORE_INDEX  # prompt tokens
    labels[1, 4:] = IGNORE_INDEX  # padding
    total, count = sft_nll_sum(logits, labels)
    expected, n = 0.0, 0
    for b in range(2):
        for t in range(1, 6):
            if labels[b, t] == IGNORE_INDEX:
                continue
            log_p = torch.log_softmax(logits[b, t - 1], dim=-1)[labels[b, t]]
            expected -= float(log_p)
            n += 1
    assert count == n == 6
    assert math.isclose(float(total), expected, rel_tol=1e-6)


def test_token_log_probs_zero_on_masked_positions():
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[1, IGNORE_INDEX, 2, IGNORE_INDEX]])
    log_probs, mask = token_log_probs(logits, labels)
    assert mask.tolist() == [[False, True, False]]
    assert log_probs[0, 0] == 0 and log_probs[0, 2] == 0 and log_probs[0, 1] < 0


def test_bradley_terry_is_negative_log_of_eq2_probability():
    chosen = torch.tensor([1.5, -0.2, 0.0])
    rejected = torch.tensor([0.5, 0.3, 0.0])
    loss = bradley_terry_loss(chosen, rejected)
    for c, r, value in zip(chosen.tolist(), rejected.tolist(), loss.tolist()):
        probability = math.exp(c) / (math.exp(c) + math.exp(r))  # seed eq. (2)
        assert math.isclose(value, -math.log(probability), rel_tol=1e-6)
    assert math.isclose(float(loss[2]), math.log(2), rel_tol=1e-6)


def test_bradley_terry_margin_and_centering():
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0]))
    assert math.isclose(float(with_margin), math.log(2), rel_tol=1e-6)  # difference - margin = 0
    centred = bradley_terry_loss(chosen, rejected, center_coefficient=0.01)
    plain = bradley_terry_loss(chosen, rejected)
    assert math.isclose(float(centred - plain), 0.01 * 9.0, rel_tol=1e-6)


def test_bradley_terry_gradient_pushes_rewards_apart():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    assert chosen.grad.item() == -0.5 and rejected.grad.item() == 0.5


def test_selective_log_softmax_is_the_gathered_log_softmax_in_chunks():
    from tandem.algorithms.losses import selective_log_softmax

    torch.manual_seed(1)
    logits = torch.randn(150, 37, dtype=torch.float64)
    targets = torch.randint(0, 37, (150,))
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    for rows in (1, 7, 64, 1000):
        assert torch.allclose(selective_log_softmax(logits, targets, rows=rows).double(), expected, atol=1e-6)
    weights = torch.randn(150)
    x = logits.clone().requires_grad_()
    (selective_log_softmax(x, targets, rows=7) * weights).sum().backward()
    y = logits.clone().requires_grad_()
    (torch.log_softmax(y, -1).gather(-1, targets[:, None]).squeeze(-1) * weights.double()).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)  # its own backward, block by block
    bf16 = logits.to(torch.bfloat16).requires_grad_()
    picked = selective_log_softmax(bf16, targets)
    assert picked.dtype == torch.float32
    picked.sum().backward()  # differentiable: d/dz_v = [v = y] - softmax(z)_v
    softmax = torch.softmax(bf16.detach().float(), -1)
    expected_grad = torch.nn.functional.one_hot(targets, 37).float() - softmax
    assert torch.allclose(bf16.grad.float(), expected_grad, atol=1e-2)


def test_token_log_probs_from_the_last_positions_equals_the_full_forward():
    """A `logits_to_keep=K` forward returns the last K positions; scoring from them gives the same (B, T-1)."""
    from tandem.algorithms.losses import scored_positions

    torch.manual_seed(2)
    logits = torch.randn(3, 9, 13)
    labels = torch.randint(0, 13, (3, 9))
    labels[:, :4] = IGNORE_INDEX  # prompts of 4, 5 and 6 tokens
    labels[1, 4] = IGNORE_INDEX
    labels[2, 4:6] = IGNORE_INDEX
    labels[0, 8] = IGNORE_INDEX  # padding
    keep = scored_positions(labels)
    assert keep == 9 - 4 + 1  # the logits at position 3 score the first label (position 4)
    full, mask = token_log_probs(logits, labels)
    kept, kept_mask = token_log_probs(logits[:, -keep:], labels)
    assert torch.equal(mask, kept_mask) and torch.allclose(full, kept)
    try:
        token_log_probs(logits[:, -(keep - 1):], labels)
    except ValueError as error:
        assert "cannot score" in str(error)
    else:
        raise AssertionError("too few positions must be refused")
    assert scored_positions(torch.full((2, 5), IGNORE_INDEX)) == 1
