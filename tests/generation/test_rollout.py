"""The rollout engine: sampled log-probs match a training forward pass; stops; several samples per prompt."""

import torch

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs
from tandem.generation.rollout import SamplingConfig, rollout
from tandem.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["Review: The film", "Review: I watched this movie with my sister and", "Review: It"]


def test_sampled_log_probs_match_the_training_forward(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    batch = rollout(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=12, samples_per_prompt=2))
    assert batch.input_ids.shape[0] == 6 and batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.input_ids.masked_fill(batch.completion_mask == 0, IGNORE_INDEX)
    recomputed, mask = token_log_probs(logits, labels)
    assert mask.sum() > 0
    assert torch.allclose(recomputed, batch.sampled_log_probs[:, 1:] * mask, atol=1e-4)


def test_prompts_are_kept_whole_and_completions_masked(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    batch = rollout(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=5))
    for row, prompt in enumerate(PROMPTS):
        length = int(batch.attention_mask[row].sum())
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        assert batch.input_ids[row, : len(prompt_ids)].tolist() == prompt_ids
        assert batch.completion_mask[row, : len(prompt_ids)].sum() == 0
        assert 1 <= batch.completion_mask[row].sum() <= 5
        assert batch.completion_mask[row, length:].sum() == 0


def test_stop_strings_end_completions(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    torch.manual_seed(1)
    batch = rollout(model, tokenizer, PROMPTS * 4, SamplingConfig(max_new_tokens=20, stop_strings=["e"]))
    stopped = [text for text in batch.completions if "e" in text]
    assert len(stopped) >= 3  # the stop string was actually met, so the rule below is exercised
    for text, ended, length in zip(batch.completions, batch.ended.tolist(), batch.completion_mask.sum(1).tolist()):
        if "e" in text:
            assert ended and text.endswith("e") and text.count("e") == 1
        else:  # no stop string: an end-of-sequence token, or the length limit
            assert ended or length == 20


def test_sampled_log_probs_are_those_of_the_tempered_top_k_distribution(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    model.generation_config.top_k, model.generation_config.temperature = 3, 5.0  # a checkpoint's defaults stay out
    torch.manual_seed(2)
    batch = rollout(model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=0.6, top_k=5))
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / 0.6
    kth = logits.topk(5, dim=-1).values[..., -1:]
    truncated = logits.masked_fill(logits < kth, float("-inf")).log_softmax(-1)
    targets = batch.input_ids[:, 1:]
    expected = truncated.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = batch.completion_mask[:, 1:].bool()
    assert mask.sum() > 10
    assert torch.isfinite(expected[mask]).all()  # every drawn token is among the top 5
    assert torch.allclose(expected[mask], batch.sampled_log_probs[:, 1:][mask], atol=1e-4)


def test_keyed_draws_sample_the_distribution():
    from tandem.generation.rollout import keyed_draw, keyed_uniform

    log_probs = torch.tensor([0.5, 0.3, 0.0, 0.15, 0.05]).log().expand(20_000, 5)  # token 2: probability 0
    keys = torch.arange(20_000)
    draws = keyed_draw(log_probs, keys, position=7)
    frequencies = torch.bincount(draws, minlength=5).float() / len(keys)
    assert frequencies[2] == 0
    assert torch.allclose(frequencies, log_probs[0].exp(), atol=0.012)  # ~4 standard errors
    u = keyed_uniform(keys, 7)
    assert 0 < u.min() and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.01
    # the inverse CDF, checked against a loop: the first token whose cumulative probability exceeds u
    probabilities = log_probs[0].double().exp()
    for row in range(50):
        expected = next(i for i in range(5) if float(probabilities[: i + 1].sum()) > float(u[row]))
        assert int(draws[row]) == expected
    # a pure function of (key, position): the same draw alone as in the batch; others at another position
    assert torch.equal(keyed_draw(log_probs[:5], keys[:5], 7), draws[:5])
    assert not torch.equal(keyed_uniform(keys[:50], 7), keyed_uniform(keys[:50], 8))


def test_keyed_rollouts_depend_on_the_key_not_on_the_batch(tiny_model_dir):
    """A row's completion is the same alone, in a larger batch, or split over two calls (two processes)."""
    model, tokenizer = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    config = SamplingConfig(max_new_tokens=10, samples_per_prompt=2, temperature=1.0, top_k=20)
    keys = torch.arange(100, 106)
    torch.manual_seed(0)
    whole = rollout(model, tokenizer, PROMPTS, config, sample_keys=keys)
    torch.manual_seed(1)  # the torch RNG plays no part
    first = rollout(model, tokenizer, PROMPTS[:1], config, sample_keys=keys[:2])
    rest = rollout(model, tokenizer, PROMPTS[1:], config, sample_keys=keys[2:])
    assert whole.completions == first.completions + rest.completions
    assert len(set(whole.completions)) > 3  # sampled, not greedy: different keys, different completions
    labels = whole.input_ids.masked_fill(whole.completion_mask == 0, IGNORE_INDEX)
    with torch.no_grad():
        logits = model(input_ids=whole.input_ids, attention_mask=whole.attention_mask).logits
    top20 = logits.topk(20, dim=-1)
    warped = torch.full_like(logits, float("-inf")).scatter(-1, top20.indices, top20.values)
    recomputed, mask = token_log_probs(warped, labels)
    assert mask.sum() > 0 and torch.allclose(recomputed[mask], whole.sampled_log_probs[:, 1:][mask], atol=1e-4)
