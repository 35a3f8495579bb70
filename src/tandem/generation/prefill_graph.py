"""The rollout's prompt forward, kept for the update: one forward of each prompt per RL step, not two.

An on-policy step samples with the weights it then trains, once (one optimizer step per rollout, no pass for
log pi_old: the trainer's single pass). The update's forward of each prompt then computes exactly what the
rollout's prefill computed before sampling. With `PrefillGraph`, the prefill runs with autograd on and keeps
each prompt's keys and values with their graph; the update runs only each row's suffix (the last prompt token and
the reply) over them, and one backward through the kept prefill after the last micro-batch:

- the kept keys and values enter each micro-batch's forward as leaves (detached copies that require grad), so
  their gradients add up over the micro-batches in `.grad`;
- `backward()` then sends those sums through the prefill's graph into the weights, once.

The weight gradient equals the recomputing update's (the chain rule through the keys and values, summed over
rows; to floating-point rounding), and the prompts' forward (about a third of their forward and backward, most of
an agent's update: its turns are long prompts and short replies) is gone. It holds the prefill's activations from
the rollout to the update (agent-rl's `--prefill-memory` caps the tokens kept; past it the update recomputes them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tandem.generation.prefix import (
    cache_layers,
    can_keep,
    dynamic_cache,
    innermost,
    padded_rows,
    plan_prefix,
    row_spans,
    suffix_logits,
)
from tandem.generation.scoring import _takes_logits_to_keep


class PrefillGraph:
    """Each prompt's keys and values as a rollout's prefill computed them, with their autograd graph (module
    docstring). Make one per rollout; `record` during sampling, `cache_for` in the update's forwards, `backward`
    after its last micro-batch. `most_tokens`: how many prompt tokens it may keep (None: no limit); a prompt past
    that, or one a cache of another kind holds, is not kept, and `covers` then answers False for it."""

    def __init__(self, most_tokens: int | None = None):
        self.most_tokens = most_tokens
        self.tokens = 0
        self.calls: list[tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]] = []  # (layers, mask) per call
        self.prompts: dict[tuple[int, ...], tuple[int, int]] = {}  # prompt -> (call, row)
        self.leaves: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.missed = 0  # prompts not kept (over the limit, or a cache of another kind)

    def room_for(self, tokens: int) -> bool:
        return self.most_tokens is None or self.tokens + tokens <= self.most_tokens

    def record(self, prompts: list[list[int]], cache, past_mask: torch.Tensor, computed: int) -> None:
        """Keep the cache of one prefill (a row per prompt, left-padded with `past_mask`; a prompt here is all of
        it but its last token) and where each prompt not kept yet sits in it. `computed`: the tokens the prefill
        computed (what its graph holds activations of; the caller checked `room_for` them)."""
        layers = cache_layers(cache)
        if layers is None:
            self.missed += len(prompts)
            return
        self.tokens += computed
        call = len(self.calls)
        self.calls.append((layers, past_mask))
        for row, prompt in enumerate(prompts):
            if int(past_mask[row].sum()) != len(prompt):
                raise ValueError(f"a cache row holds {int(past_mask[row].sum())} tokens for a prompt of {len(prompt)}")
            self.prompts.setdefault(tuple(prompt), (call, row))

    def covers(self, prompts) -> bool:
        return all(tuple(p) in self.prompts for p in prompts)

    def _leaves(self, call: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if call not in self.leaves:
            self.leaves[call] = [(k.detach().requires_grad_(), v.detach().requires_grad_()) for k, v in self.calls[call][0]]
        return self.leaves[call]

    def cache_for(self, prompts: list[tuple[int, ...]]):
        """(a DynamicCache with each row's prompt, left-padded, its attention mask) from the kept keys and values,
        as leaves: a forward over it sends its gradient into their `.grad` (summed over forwards)."""
        places = [self.prompts[tuple(p)] for p in prompts]
        calls = sorted({call for call, _ in places})
        width = max(self.calls[call][1].shape[1] for call in calls)
        # rows grouped by the call that holds them, then put back in the rows' order
        grouped = [k for call in calls for k, place in enumerate(places) if place[0] == call]
        back = torch.empty(len(places), dtype=torch.long)
        back[torch.tensor(grouped)] = torch.arange(len(places))
        pieces = []
        for call in calls:
            rows = torch.tensor([row for c, row in places if c == call])
            pieces.append((call, rows, width - self.calls[call][1].shape[1]))

        def gathered(tensors):  # one (call, rows, left padding) piece each
            return torch.cat([F.pad(t.index_select(0, rows.to(t.device)), (0, 0, pad, 0) if t.dim() == 4 else (pad, 0))
                              for t, (_, rows, pad) in zip(tensors, pieces)])[back.to(tensors[0].device)]

        layers = []
        for layer in range(len(self.calls[calls[0]][0])):
            layers.append(tuple(gathered([self._leaves(call)[layer][part] for call, _, _ in pieces]) for part in (0, 1)))
        mask = gathered([self.calls[call][1] for call, _, _ in pieces])
        return dynamic_cache(layers), mask

    def backward(self) -> None:
        """The gradients the update's forwards left on the leaves, through the prefill's graph into the weights;
        then everything kept is let go."""
        roots, grads = [], []
        for call, leaves in self.leaves.items():
            for (keys, values), (leaf_keys, leaf_values) in zip(self.calls[call][0], leaves):
                for root, leaf in ((keys, leaf_keys), (values, leaf_values)):
                    if leaf.grad is not None:
                        roots.append(root)
                        grads.append(leaf.grad)
        if roots:
            torch.autograd.backward(roots, grads)
        self.release()

    def release(self) -> None:
        self.calls.clear()
        self.prompts.clear()
        self.leaves.clear()
        self.tokens = 0


def row_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> list[tuple] | None:
    """Each row's prompt as the rollout's prefill held it (its tokens before the one that scores its first label);
    None when a row has no label or its tokens are not contiguous."""
    prompts = []
    for span in row_spans(input_ids, attention_mask, labels):
        if span is None or span[2] < span[1]:
            return None
        prompts.append(tuple(span[0][span[1]:span[2]]))
    return prompts


def prefill_logits(model, graph: PrefillGraph, labels: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, pad_token_id: int = 0):
    """`completion_logits` of a batch whose prompts `graph` holds: only the rows' suffixes are computed, over the
    kept keys and values (`SuffixLogits`)."""
    plan = plan_prefix(input_ids, attention_mask, labels)
    if plan is None:
        raise ValueError("a row without a label or with a gap in its tokens has no kept prompt")
    cache, past_mask = graph.cache_for([tuple(plan.common + plan.middles[w]) for w in plan.which])
    suffixes = padded_rows(plan.suffixes, pad_token_id, False, input_ids.device)
    return suffix_logits(model, plan, suffixes, cache, past_mask, _takes_logits_to_keep(type(innermost(model))))


def can_keep_prefill(model) -> bool:
    """Whether the update's forward of `model` can run over a kept prefill: the shared-prefix forward applies (a KV
    cache argument, not compiled, sharded or checkpointed) and no dropout acts (the rollout samples in eval mode,
    the update trains in train mode: with dropout the two forwards differ)."""
    inner = innermost(model)
    if not can_keep(model) or getattr(inner, "is_gradient_checkpointing", False):
        return False
    config = getattr(inner, "config", None)
    rates = [getattr(config, name, 0) for name in dir(config) if name.endswith("dropout")] if config is not None else []
    if any(isinstance(rate, (int, float)) and rate > 0 for rate in rates):
        return False
    return not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())

