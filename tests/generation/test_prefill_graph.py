"""The rollout's prompt forward, kept for the update: the gradient equals the recomputing update's."""

import pytest
import torch

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs
from tandem.generation.prefill_graph import PrefillGraph, can_keep_prefill, prefill_logits, row_prompts
from tandem.generation.prefix import KeptPrefix
from tandem.generation.rollout import SamplingConfig, pad_prompt_response_batch, sample_ids
from tandem.generation.scoring import completion_logits
from tandem.models.loading import load_causal_lm, load_tokenizer

SYSTEM = [7, 8, 9, 10, 11, 12]
# an agent's turns, one generate call each: the instructions, then states that begin alike
TURNS = [
    [SYSTEM + [20, 21, 22, 23], SYSTEM + [20, 21, 22, 23], SYSTEM + [40, 41, 42]],
    [SYSTEM + [20, 21, 22, 24, 25], SYSTEM + [20, 21, 26], SYSTEM + [40, 41, 42, 43, 44, 45]],
]


def _rollout(model, tokenizer, graph):
    """Each turn's prompts sampled as a rollout samples them (no grad, one kept prefix per rollout); the rows."""
    kept = KeptPrefix()
    config = SamplingConfig(max_new_tokens=4, temperature=1.0)
    prompts, replies = [], []
    with torch.no_grad():
        for turn, turn_prompts in enumerate(TURNS):
            keys = torch.arange(len(turn_prompts)) + 10 * turn
            rows = sample_ids(model, tokenizer, turn_prompts, config, keys, kept=kept, graph=graph)
            prompts += turn_prompts
            replies += [row.tokens or [5] for row in rows]
    batch = pad_prompt_response_batch(prompts, replies, tokenizer.pad_token_id)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    return batch["input_ids"], batch["attention_mask"], labels


def _gradients(model, loss_of, micro_batches):
    model.zero_grad()
    for rows in micro_batches:
        loss_of(rows).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("split", [[slice(0, 6)], [slice(0, 2), slice(2, 4), slice(4, 6)]], ids=["one", "three"])
def test_the_kept_prefill_gives_the_recomputed_update_gradient(tiny_model_dir, split):
    model = load_causal_lm(tiny_model_dir).float()
    tokenizer = load_tokenizer(tiny_model_dir)
    graph = PrefillGraph()
    ids, mask, labels = _rollout(model, tokenizer, graph)
    assert graph.covers(row_prompts(ids, mask, labels)) and graph.missed == 0
    # the tokens its graph holds: the instructions once, then each call's distinct rests (as the levels pad them)
    assert len(SYSTEM) < graph.tokens < sum(len(p) - 1 for turn in TURNS for p in turn)
    model.train()
    weights = torch.linspace(0.5, 2.0, ids.shape[1] - 1)  # a loss that weighs each position differently

    def loss(logits, rows):
        logp, token_mask = token_log_probs(logits, labels[rows])
        return -(logp * token_mask * weights).sum()

    recomputed = _gradients(model, lambda rows: loss(completion_logits(
        model, labels[rows], input_ids=ids[rows], attention_mask=mask[rows]), rows), split)
    model.zero_grad()
    for rows in split:
        loss(prefill_logits(model, graph, labels[rows], ids[rows], mask[rows]), rows).backward()
    # before the kept prefill's backward only the replies' share reached the weights
    partial = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    graph.backward()
    kept = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert set(kept) == set(recomputed)
    for name, grad in recomputed.items():
        assert torch.allclose(kept[name], grad, atol=1e-5, rtol=1e-4), name
    assert any(not torch.allclose(partial[name], recomputed[name], atol=1e-4) for name in partial)
    assert not graph.prompts and graph.tokens == 0  # let go after the backward


def test_a_graph_without_room_keeps_nothing_and_the_update_sees_it(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).float()
    tokenizer = load_tokenizer(tiny_model_dir)
    graph = PrefillGraph(most_tokens=3)
    ids, mask, labels = _rollout(model, tokenizer, graph)
    assert graph.missed > 0 and not graph.covers(row_prompts(ids, mask, labels))


def test_dropout_rules_the_kept_prefill_out(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).float()
    assert can_keep_prefill(model)
    model.config.attention_dropout = 0.1
    assert not can_keep_prefill(model)
