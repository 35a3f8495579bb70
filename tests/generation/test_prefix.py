"""The shared-prefix forward gives the plain forward's logits and gradients, computing shared tokens once."""

import pytest
import torch

from tandem.algorithms.losses import IGNORE_INDEX, scored_logits, token_log_probs
from tandem.generation.prefix import plan_prefix, shared_prefix_logits
from tandem.generation.scoring import completion_logits
from tandem.models.loading import load_causal_lm


def _rows(rows: list[tuple[list[int], list[int]]], left: bool = False):
    """(prompt, completion) rows as a padded batch with labels on the completions."""
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for k, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        start = width - n if left else 0
        ids[k, start:start + n] = torch.tensor(prompt + completion)
        mask[k, start:start + n] = 1
        labels[k, start + len(prompt):start + n] = torch.tensor(completion)
    return ids, mask, labels


SYSTEM = [7, 8, 9, 10, 11, 12]
BATCH = [  # a GRPO group (same prompt twice), a second prompt, a third prompt of another length
    (SYSTEM + [20, 21, 22], [30, 31, 32, 2]),
    (SYSTEM + [20, 21, 22], [33, 2]),
    (SYSTEM + [40, 41], [34, 35, 36, 37, 38]),
    (SYSTEM + [50, 51, 52, 53, 54], [39]),
]
# an agent's turns: two states (heads 20-25 and 40-45), each with the echoes of different last replies after it
STATE_A, STATE_B = [20, 21, 22, 23, 24, 25], [40, 41, 42, 43, 44, 45]
TREE = [(SYSTEM + state + echo + [90, 91], reply) for state in (STATE_A, STATE_B)
        for echo, reply in (([60], [30, 2]), ([61, 62], [31, 32, 2]), ([63, 64, 65], [33, 2]))]


def test_plan_finds_the_common_tokens_and_the_distinct_prompts():
    ids, mask, labels = _rows(BATCH)
    plan = plan_prefix(ids, mask, labels)
    assert plan.common == SYSTEM
    # the last prompt token goes with the suffix: its logits score the first label
    assert plan.middles == [[20, 21], [40], [50, 51, 52, 53]]
    assert plan.which == [0, 0, 1, 2]
    assert plan.suffixes[0] == [22, 30, 31, 32, 2] and plan.suffix_start == [8, 8, 7, 10]
    assert plan.cost() < ids.numel()


def _read(labels, keep):
    """(N, keep) positions whose logits score a label."""
    return torch.cat([labels[:, -keep + 1:] != IGNORE_INDEX, torch.zeros(len(labels), 1, dtype=torch.bool)], 1)


def test_rests_that_begin_alike_share_their_head_in_a_level_of_their_own():
    from tandem.generation.prefix import stack_levels

    ids, mask, labels = _rows(TREE)
    plan = plan_prefix(ids, mask, labels)
    assert plan.common == SYSTEM and len(plan.middles) == 6
    heads, tails = plan.levels
    assert heads.segments == [STATE_A, STATE_B] and heads.parent == [0, 0]
    assert tails.segments[:3] == [[60, 90], [61, 62, 90], [63, 64, 65, 90]] and tails.parent == [0, 0, 0, 1, 1, 1]
    assert plan.row_leaf() == [0, 1, 2, 3, 4, 5]
    assert plan.cost() == len(SYSTEM) + 2 * 6 + 6 * 4 + 6 * 4  # not 6 x 10 for the middles whole
    # prompts that differ from their first token on (a GRPO batch): one level, as before
    levels, leaf = stack_levels([[1, 2, 3], [4, 5, 6, 7], [8, 9]])
    assert len(levels) == 1 and leaf == [0, 1, 2] and levels[0].parent == [0, 0, 0]
    # each row's path through the levels spells its prompt rest
    for row, middle in enumerate(plan.middles):
        tail = plan.leaf[row]
        assert heads.segments[tails.parent[tail]] + tails.segments[tail] == middle


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("rows", [BATCH, TREE], ids=["two-levels", "tree"])
def test_shared_forward_gives_the_plain_logits_and_gradients(tiny_model_dir, left, rows):
    model = load_causal_lm(tiny_model_dir).float().train()
    ids, mask, labels = _rows(rows, left=left)
    keep = ids.shape[1] - int((labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()[0])
    read = _read(labels, keep)

    def loss_and_grads(logits):
        logp, token_mask = token_log_probs(logits, labels)
        model.zero_grad()
        # the log-probs and a term of the raw logits (as the entropy bonus reads them), where labels are read
        loss = -(logp * token_mask).sum() + scored_logits(logits, token_mask).float().pow(2).mean()
        loss.backward()
        return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    assert torch.equal(scored_logits(plain, labels[:, 1:] != IGNORE_INDEX), plain[read])
    plain_logp, plain_grads = loss_and_grads(plain)
    # the suffixes' logits as they are (what the loss reads), and placed in the batch's last `keep` columns
    for shared in (shared_prefix_logits(model, plan_prefix(ids, mask, labels)),
                   shared_prefix_logits(model, plan_prefix(ids, mask, labels)).dense(keep)):
        if torch.is_tensor(shared):
            assert shared.shape[:2] == (len(rows), keep)
        shared_logp, shared_grads = loss_and_grads(shared)
        assert torch.allclose(shared_logp, plain_logp, atol=1e-5)
        for name, grad in plain_grads.items():
            assert torch.allclose(shared_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_the_training_forward_looks_its_tokens_up_once(tiny_model_dir):
    """Three segments, one embedding call: one dense gradient of the embedding table in the backward."""
    model = load_causal_lm(tiny_model_dir).float().train()
    ids, mask, labels = _rows(BATCH)
    calls = []
    model.get_input_embeddings().register_forward_hook(lambda module, args, out: calls.append(args[0].numel()))
    plan = plan_prefix(ids, mask, labels)
    logp, token_mask = token_log_probs(shared_prefix_logits(model, plan), labels)
    logp.sum().backward()
    assert len(calls) == 1 and calls[0] == len(plan.common) + 3 * 4 + len(BATCH) * max(map(len, plan.suffixes))
    with torch.no_grad():  # scoring without a backward: nothing to gain, each segment its own lookup
        shared_prefix_logits(model, plan)
    assert len(calls) == 4


def test_suffix_logits_refuse_a_position_no_suffix_scores(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).float().eval()
    ids, mask, labels = _rows(BATCH)
    with torch.no_grad():
        shared = shared_prefix_logits(model, plan_prefix(ids, mask, labels))
    asked = labels[:, 1:] != IGNORE_INDEX
    asked[0, 0] = True  # a prompt position: the forward computed no logits there
    with pytest.raises(ValueError, match="score"):
        shared.scored(asked)


def test_no_shared_tokens_and_no_common_tokens_still_match(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).float().eval()
    ids, mask, labels = _rows([([3, 4, 5], [6, 7]), ([8, 9], [10, 11, 12]), ([8, 9], [13])])
    plan = plan_prefix(ids, mask, labels)
    assert plan.common == [] and plan.which == [0, 1, 1]
    with torch.no_grad():
        shared = shared_prefix_logits(model, plan).dense()
        plain = model(input_ids=ids, attention_mask=mask).logits
    read = _read(labels, ids.shape[1])
    assert torch.isfinite(shared).all()
    assert torch.allclose(shared[read], plain[read], atol=1e-5)


def test_completion_logits_takes_the_shared_forward_when_it_saves_work(tiny_model_dir, monkeypatch):
    import tandem.generation.scoring as scoring

    model = load_causal_lm(tiny_model_dir).float().eval()
    ids, mask, labels = _rows(BATCH * 4)
    calls = []
    original = scoring.shared_prefix_logits
    monkeypatch.setattr(scoring, "shared_prefix_logits", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        logits = completion_logits(model, labels, input_ids=ids, attention_mask=mask)
        plain = model(input_ids=ids, attention_mask=mask).logits
    assert calls
    logp, _ = token_log_probs(logits, labels)
    expected, _ = token_log_probs(plain, labels)
    assert torch.allclose(logp, expected, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("batch", [BATCH, TREE], ids=["two-levels", "tree"])
def test_generation_over_the_shared_cache_samples_what_plain_generation_samples(tiny_model_dir, temperature, batch):
    from tandem.generation.prefix import _left_padded, prompts_over_cache
    from tandem.generation.rollout import SamplingConfig, sample_ids, sample_rows
    from tandem.models.loading import load_tokenizer

    model = load_causal_lm(tiny_model_dir).float().eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    prompts = [prompt for prompt, _ in batch] * 3
    encoded, cache = prompts_over_cache(model, prompts, tokenizer.pad_token_id, "cpu")
    # the common tokens, the longest rest (tree: a state's head, then its longest tail) and the last prompt token
    assert cache is not None and encoded["input_ids"].shape[1] == len(SYSTEM) + (4 if batch is BATCH else 6 + 4) + 1
    config = SamplingConfig(max_new_tokens=6, temperature=temperature)
    keys = torch.arange(len(prompts)) * 7 + 1
    shared = sample_ids(model, tokenizer, prompts, config, keys)
    plain = sample_rows(model, tokenizer, _left_padded(prompts, tokenizer.pad_token_id, "cpu"), config, keys)
    assert [r.tokens for r in shared] == [r.tokens for r in plain]
    for a, b in zip(shared, plain):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)


def test_a_kept_prefix_serves_later_calls_and_samples_what_a_fresh_prefill_samples(tiny_model_dir):
    """An agent's turns, one `generate` call each: the instructions are computed at the first call only, and every
    call samples what it samples without the kept cache (same keyed draws, log-probs to 1e-4)."""
    from tandem.generation.prefix import KeptPrefix
    from tandem.generation.rollout import SamplingConfig, sample_ids
    from tandem.models.loading import load_tokenizer

    model = load_causal_lm(tiny_model_dir).float().eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    config = SamplingConfig(max_new_tokens=5, temperature=1.0)
    kept = KeptPrefix()
    calls = [[p for p, _ in BATCH], [p for p, _ in BATCH[2:]], [SYSTEM + [60, 61], SYSTEM + [60, 62, 63]],
             [BATCH[0][0]] * 2, [[7, 8, 70], [7, 8, 71]]]
    for turn, prompts in enumerate(calls):
        keys = torch.arange(len(prompts)) + 10 * turn
        with_kept = sample_ids(model, tokenizer, prompts, config, keys, kept=kept)
        fresh = sample_ids(model, tokenizer, prompts, config, keys)
        assert [r.tokens for r in with_kept] == [r.tokens for r in fresh]
        for a, b in zip(with_kept, fresh):
            assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)
    # the instructions once; each later call only what its common tokens add (one prompt twice: all of it but its
    # last token, 2 past the instructions); [7, 8, ...] does not start with the kept tokens: computed afresh
    assert kept.computed_tokens == len(SYSTEM) + 0 + 1 + 2 + 2


@pytest.mark.parametrize("left", [False, True])
def test_prompt_order_puts_equal_prompts_side_by_side(left):
    """An agent's turns: the start state's prompt in episodes 0 and 1 is far apart in row order. Ordered by prompt,
    micro-batches of two hold equal prompts together and the shared-prefix forward computes fewer tokens."""
    from tandem.generation.prefix import prompt_order

    a, b, c = SYSTEM + [20, 21], SYSTEM + [40, 41, 42], SYSTEM + [25, 22]
    rows = [(a, [30, 2]), (b, [31, 2]), (c, [32, 2]), (a, [33, 2]), (b, [34, 2]), (c, [35, 2])]
    ids, mask, labels = _rows(rows, left=left)
    place = prompt_order(ids, mask, labels)
    order = place.argsort()
    assert sorted(place.tolist()) == list(range(6))
    prompts = [rows[k][0] for k in order.tolist()]
    assert prompts == sorted(prompts) and order.tolist() == [0, 3, 2, 5, 1, 4]  # ties in row order

    def cost(sequence):
        return sum(plan_prefix(ids[chunk], mask[chunk], labels[chunk]).cost() for chunk in torch.tensor(sequence).split(2))
    assert cost(order.tolist()) < cost(list(range(6)))
