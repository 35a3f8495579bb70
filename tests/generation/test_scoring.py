"""Scoring forwards that compute the LM head only where the labels are (`logits_to_keep`)."""

import torch

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs
from tandem.generation.scoring import completion_log_probs, completion_logits, logits_to_keep
from tandem.models.loading import load_causal_lm


def _batch():
    torch.manual_seed(0)
    input_ids = torch.randint(5, 500, (3, 12))
    completion = torch.zeros(3, 12, dtype=torch.long)
    completion[0, 5:11] = 1
    completion[1, 7:12] = 1
    completion[2, 9:10] = 1
    attention = torch.ones(3, 12, dtype=torch.long)
    attention[0, 11] = 0
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def test_completion_forward_keeps_only_the_scored_positions_and_scores_the_same(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).eval()
    batch = _batch()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    assert logits_to_keep(model, labels) == {"logits_to_keep": 12 - 5 + 1}
    with torch.no_grad():
        kept = completion_logits(model, labels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert kept.shape[1] == 8 and full.shape[1] == 12
        expected, mask = token_log_probs(full, labels)
        totals, counts = completion_log_probs(model, batch)
    assert torch.allclose(totals, expected.sum(-1), atol=1e-5)
    assert counts.tolist() == [6.0, 5.0, 1.0]


def test_value_head_policy_keeps_values_everywhere(tiny_model_dir):
    from tandem.trainers.ppo import PolicyWithValueHead

    wrapped = PolicyWithValueHead(load_causal_lm(tiny_model_dir)).eval()
    batch = _batch()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    keep = logits_to_keep(wrapped, labels)
    assert keep == {"logits_to_keep": 8}
    with torch.no_grad():
        output = wrapped(batch["input_ids"], batch["attention_mask"], **keep)
    assert output.logits.shape[1] == 8 and output.values.shape == (3, 12)


def test_compiled_or_unknown_models_keep_the_whole_forward(tiny_model_dir):
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, use_cache=False):
            return None

    labels = torch.full((1, 6), IGNORE_INDEX)
    labels[0, 4:] = 1
    assert logits_to_keep(Plain(), labels) == {}
    compiled = torch.compile(load_causal_lm(tiny_model_dir))
    assert logits_to_keep(compiled, labels) == {}


def test_rows_within_memory_is_the_budget_over_the_estimated_bytes_of_a_row(tiny_model_dir):
    from tandem.generation.scoring import ACTIVATION_BYTES_PER_LAYER_UNIT, activation_bytes_per_token, rows_within_memory
    from tandem.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    per_token = activation_bytes_per_token(model)
    config = model.config
    assert per_token == ACTIVATION_BYTES_PER_LAYER_UNIT * config.num_hidden_layers * config.hidden_size + 2 * config.vocab_size
    for width, most, gigabytes in [(320, 32, 0.01), (64, 8, 0.001), (1000, 4, 1e-6), (10, 16, 100.0)]:
        expected = max(1, min(most, int(gigabytes * 2**30 // (per_token * width))))
        assert rows_within_memory(model, width, most, gigabytes) == expected
    assert rows_within_memory(model, 10_000, 16, 1e-6) == 1  # a row too long for the budget still trains
    assert rows_within_memory(model, 320, 16, None) == 16
    assert rows_within_memory(torch.nn.Linear(2, 2), 320, 16, 1e-6) == 16  # no decoder config: no estimate


def test_on_a_gpu_the_budget_is_the_free_memory_and_the_vocabulary_counts():
    """Qwen2.5-0.5B (24 layers, hidden 896, vocabulary 151936) in 512-token rows: 4 GB hold 3 rows; 60 GB free on the
    device hold 0.8 x 60 GB / (106 x 24 x 896 + 2 x 151936 = 2,583,296 bytes per token x 512) = 38."""
    from types import SimpleNamespace

    from tandem.generation.scoring import activation_bytes_per_token, rows_within_memory

    qwen = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=24, hidden_size=896, vocab_size=151936))
    assert activation_bytes_per_token(qwen) == 2_583_296
    assert rows_within_memory(qwen, 512, 128, 4.0) == 3
    assert rows_within_memory(qwen, 512, 128, 4.0, free_bytes=60 * 2**30) == 38
    assert rows_within_memory(qwen, 64, 128, 4.0, free_bytes=60 * 2**30) == 128  # at most --micro-batch-size
    assert rows_within_memory(qwen, 512, 128, None, free_bytes=60 * 2**30) == 128  # none: no budget at all


def test_the_shared_tokens_count_once_and_fp32_keeps_more():
    """SmolLM2-135M (30 layers, hidden 576, vocabulary 49152: 1,929,984 bytes a token under bf16 autocast, x1.3 in
    fp32) on agent turns: 60 distinct tokens a row over 97 instructions every row shares. 4 GB less the 97 shared
    tokens: 35 rows under autocast, 26 in fp32; counting the instructions in every row gave 14."""
    from types import SimpleNamespace

    from tandem.generation.scoring import activation_bytes_per_token, rows_within_memory

    smollm2 = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=30, hidden_size=576, vocab_size=49152))
    per_token = activation_bytes_per_token(smollm2)
    assert per_token == 1_929_984 and activation_bytes_per_token(smollm2, full_precision=True) == int(per_token * 1.3)
    assert rows_within_memory(smollm2, 60 + 97, 64, 4.0) == 14
    assert rows_within_memory(smollm2, 60, 64, 4.0, shared=97) == int((4 * 2**30 - 97 * per_token) // (60 * per_token)) == 35
    assert rows_within_memory(smollm2, 60, 64, 4.0, shared=97, full_precision=True) == 26
    assert rows_within_memory(smollm2, 60, 64, 1e-3, shared=97) == 1  # the shared tokens alone pass the budget
