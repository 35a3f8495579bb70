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
