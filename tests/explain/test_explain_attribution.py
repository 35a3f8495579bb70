"""Integrated gradients, occlusion and per-token KL against their formulas and brute-force loops."""

import math

import pytest
import torch
from transformers import set_seed

from tandem.data import tokenize_sft
from tandem.policy_eval import sequence_kl
from tandem.explain.attribution import (
    baseline_embeddings,
    explain_policy_shift,
    explain_reward,
    integrated_gradients,
    integration_points,
    next_token_kl,
    occlusion,
    reward_score_fn,
)
from tandem.models.factory import ModelSize, build_model
from tandem.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from tandem.rewards.model import RewardModelScorer

PROMPT, RESPONSE = "Review: The film", " was wonderful and the music was dull."


@pytest.mark.parametrize("method", ["trapezoid", "trapezoid_quadratic", "riemann_left", "riemann_right", "riemann_middle"])
def test_integration_points_integrate_polynomials(method):
    points, weights = integration_points(200, method)
    assert float(weights.sum()) == pytest.approx(1.0)
    assert float((weights * points).sum()) == pytest.approx(0.5, abs=3e-3)
    assert float((weights * points**2).sum()) == pytest.approx(1 / 3, abs=5e-3)
    with pytest.raises(ValueError, match="steps"):
        integration_points(0, method)


def test_trapezoid_and_midpoint_are_exact_on_linear_integrands():
    for method in ("trapezoid", "trapezoid_quadratic", "riemann_middle"):
        points, weights = integration_points(3, method)
        assert float((weights * (2 * points + 1)).sum()) == pytest.approx(2.0, abs=1e-12)


def test_integrated_gradients_of_a_quadratic_match_the_closed_form():
    # F(x) = sum_td w_d x_td^2: with a zero baseline IG_t = sum_d w_d x_td^2 exactly (linear gradient along the path)
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 3, generator=generator, dtype=torch.float64), torch.randn(3, generator=generator, dtype=torch.float64)
    ig = integrated_gradients(lambda e: (e**2 * w).sum((-1, -2)), x, torch.zeros_like(x), steps=4)
    assert torch.allclose(ig, (x**2 * w).sum(-1), atol=1e-10)


def test_integrated_gradients_are_complete_for_a_nonlinear_function():
    generator = torch.Generator().manual_seed(1)
    x, baseline, v = (torch.randn(6, 4, generator=generator, dtype=torch.float64) for _ in range(3))

    def score(e):
        return torch.tanh((e * v).sum(-1)).sum(-1) + (e[:, 0, :] * e[:, -1, :]).sum(-1)

    gap = {}
    for steps in (4, 256):
        ig = integrated_gradients(score, x, baseline, steps=steps)
        gap[steps] = abs(float(ig.sum()) - float(score(x[None]) - score(baseline[None])))
    assert gap[256] < 1e-4 and gap[256] < gap[4]


def test_occlusion_matches_a_brute_force_loop():
    generator = torch.Generator().manual_seed(2)
    x, baseline, v = (torch.randn(7, 3, generator=generator) for _ in range(3))

    def score(e):
        return torch.sigmoid((e * v).sum(-1)).prod(-1)

    expected = []
    for t in range(7):
        occluded = x.clone()
        occluded[t] = baseline[t]
        expected.append(float(score(x[None]) - score(occluded[None])))
    assert torch.allclose(occlusion(score, x, baseline, batch_size=3), torch.tensor(expected), atol=1e-6)


def test_next_token_kl_matches_the_sum_over_the_vocabulary():
    generator = torch.Generator().manual_seed(3)
    p_logits, q_logits = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    for t in range(4):
        p, q = p_logits[t].softmax(-1).tolist(), q_logits[t].softmax(-1).tolist()
        assert float(next_token_kl(p_logits, q_logits)[t]) == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), abs=1e-5)
    assert torch.allclose(next_token_kl(p_logits, p_logits), torch.zeros(4), atol=1e-6)


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    set_seed(0)
    return load_reward_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


def test_the_score_function_reads_the_reward_where_tandem_rm_does(reward_model):
    model, tokenizer = reward_model
    ids = torch.tensor(tokenize_sft({"prompt": PROMPT, "completion": RESPONSE}, tokenizer)["input_ids"])
    with torch.no_grad():
        ours = float(reward_score_fn(model)(model.get_input_embeddings()(ids)[None])[0])
    assert ours == pytest.approx(RewardModelScorer(model, tokenizer)([PROMPT], [RESPONSE])[0], abs=1e-5)


@pytest.mark.parametrize("scope", ["all", "response"])
def test_reward_attributions_are_complete(reward_model, scope):
    # a fresh model's pad row is zero, so both baselines are the RMSNorm singularity the quadratic grid is for
    model, tokenizer = reward_model
    result = explain_reward(model, tokenizer, PROMPT, RESPONSE, steps=256, method="trapezoid_quadratic", scope=scope)
    difference = result.score - result.baseline_score
    assert abs(difference) > 1e-3  # the check below must be able to fail
    assert abs(result.completeness_gap) <= 0.02 * abs(difference) + 1e-4
    assert len(result.tokens) == len(result.integrated_gradients) == len(result.occlusion)
    if scope == "response":  # prompt and the final token are kept in the baseline: nothing to attribute to them
        kept = list(range(result.response_start)) + [len(result.tokens) - 1]
        assert all(result.integrated_gradients[i] == 0 and abs(result.occlusion[i]) < 1e-6 for i in kept)


def test_baseline_rows(reward_model):
    model, tokenizer = reward_model
    ids = torch.tensor([5, 6, 7])
    replaced = torch.tensor([False, True, False])
    rows = baseline_embeddings(model, ids, "zero", tokenizer.pad_token_id, replaced)
    embeddings = model.get_input_embeddings()(ids)
    assert torch.equal(rows[1], torch.zeros_like(rows[1])) and torch.equal(rows[0], embeddings[0])
    pad = baseline_embeddings(model, ids, "pad", tokenizer.pad_token_id)
    assert torch.equal(pad[2], model.get_input_embeddings().weight[tokenizer.pad_token_id])
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_embeddings(model, ids, "noise", tokenizer.pad_token_id)


def test_per_token_log_ratio_sums_to_the_sequence_kl_sample(tmp_path, tiny_model_dir, sentiment_tokenizer):
    size = ModelSize(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=512)
    build_model(size, sentiment_tokenizer, seed=1).save_pretrained(tmp_path / "other")
    policy, reference = load_causal_lm(tmp_path / "other").eval(), load_causal_lm(tiny_model_dir).eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    shift = explain_policy_shift(policy, reference, tokenizer, PROMPT, RESPONSE)
    example = tokenize_sft({"prompt": PROMPT, "completion": RESPONSE}, tokenizer)
    start = example["completion_mask"].index(1)
    ids = example["input_ids"]
    expected = sequence_kl(policy, reference, [ids[:start]], [ids[start:]], tokenizer.pad_token_id)
    assert sum(shift.log_prob_change) == pytest.approx(expected, abs=1e-4)
    assert abs(expected) > 1e-2
    assert len(shift.tokens) == len(ids) - start and shift.tokens[-1] == tokenizer.eos_token
    assert all(kl >= -1e-6 for kl in shift.next_token_kl)
    same = explain_policy_shift(reference, reference, tokenizer, PROMPT, RESPONSE)
    assert max(map(abs, same.log_prob_change)) < 1e-6 and max(same.next_token_kl) < 1e-6
