"""Shared-prefix forward: the tokens rows have in common are computed once, not once per row.

RL batches repeat their prompts: GRPO samples G completions of each prompt, DPO scores a chosen and a rejected
answer to one prompt, and every turn of an agent's episodes starts with the same instructions (with
``--history none`` the group's first turns, and the retries after an invalid reply, repeat the whole prompt).
A plain forward computes each row's prompt again. Here a batch of rows is cut in three:

- the *common* tokens every row starts with (the system message and whatever else all rows share), computed
  once, as a batch of one;
- each *distinct* rest of a prompt (the tokens before a row's first scored label), computed once per distinct
  prompt over the common tokens' cached keys and values; rests that begin alike (an agent's turns in one state
  differ only after the state, in the echo of the last reply) compute their shared head once too, a tree of levels
  (`stack_levels`), as SGLang's radix cache shares a prompt tree for generation;
- each row's *suffix* (from the token whose logits score its first label to its end), over its prompt's cache.

The caches are expanded to the rows that share them by an index (`index_select`), so gradients flow back into
the shared tokens' activations summed over the rows, exactly as the plain forward's gradient sums them: the
logits, and any loss of them, equal the plain forward's (to floating-point rounding; positions are each row's
own, 0, 1, ... over its real tokens). This is the "shared-prefix forward" of prefix-grouped GRPO (Liu et al. 2025,
"Prefix Grouper") and what vLLM's prefix caching does for generation, applied to the training forward.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import itertools
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tandem.algorithms.losses import IGNORE_INDEX

# the distinct prompt rests of a batch are computed in at most this many levels (heads the rests share, then their
# tails over them); a level is one more forward and one more expansion of the cache
MAX_LEVELS = 3
# a cut into head and tail levels is taken when it computes at most this share of the tokens of one level
LEVEL_CUT_MOST = 0.9


@dataclass
class Level:
    """One level of a prompt tree: its token segments (left-padded when computed) and each one's parent, a segment
    of the level above (0 for the first level: the common tokens, or nothing)."""

    segments: list[list[int]]
    parent: list[int]

    def cost(self) -> int:
        """Tokens its forward computes (padding included)."""
        return len(self.segments) * max((len(s) for s in self.segments), default=0)


def _best_cut(segments: list[tuple], parent: list[int]) -> int | None:
    """The depth t at which cutting every segment into its first t tokens (one per distinct (parent, head)) and the
    rest computes fewest tokens, when that is at most LEVEL_CUT_MOST of computing the segments whole; else None.

    In sorted order, equal heads of depth t are contiguous, so their count is 1 + the adjacent pairs whose common
    beginning is shorter than t (pairs under different parents share nothing)."""
    longest = max((len(s) for s in segments), default=0)
    if len(segments) < 2 or longest < 2:
        return None
    order = sorted(range(len(segments)), key=lambda k: (parent[k], segments[k]))
    shared = []
    for a, b in itertools.pairwise(order):
        x, y, n = segments[a], segments[b], 0
        if parent[a] == parent[b]:
            while n < min(len(x), len(y)) and x[n] == y[n]:
                n += 1
        shared.append(n if parent[a] == parent[b] else -1)
    whole, best = len(segments) * longest, None
    for t in range(1, longest):
        heads = 1 + sum(n < t for n in shared)
        cost = heads * t + len(segments) * (longest - t)
        if cost <= LEVEL_CUT_MOST * whole and (best is None or cost < best[0]):
            best = (cost, t)
    return None if best is None else best[1]


def stack_levels(rests: list[list[int]], most: int = MAX_LEVELS) -> tuple[list[Level], list[int]]:
    """The levels that compute the distinct prompt `rests` (what follows the common tokens), and each rest's
    segment in the last level. Rests that begin alike share their head: cut at the depth that computes fewest
    tokens (`_best_cut`), a level of distinct heads and a level of the tails over them; the tails are cut again, up
    to `most` levels. One level (the rests whole) when no cut saves work: a GRPO batch's distinct prompts."""
    current, parent, leaf = [tuple(r) for r in rests], [0] * len(rests), list(range(len(rests)))
    levels = []
    while len(levels) < most - 1:
        cut = _best_cut(current, parent)
        if cut is None:
            break
        heads: dict[tuple, int] = {}
        head_of = [heads.setdefault((parent[k], seg[:cut]), len(heads)) for k, seg in enumerate(current)]
        levels.append(Level([list(h) for _, h in heads], [p for p, _ in heads]))
        tails: dict[tuple, int] = {}
        tail_of = [tails.setdefault((head_of[k], seg[cut:]), len(tails)) for k, seg in enumerate(current)]
        leaf = [tail_of[k] for k in leaf]
        current, parent = [t for _, t in tails], [h for h, _ in tails]
    levels.append(Level([list(s) for s in current], parent))
    return levels, leaf


@dataclass
class PrefixPlan:
    """How a right- or left-padded batch splits into common tokens, distinct prompt rests and row suffixes."""

    common: list[int]            # tokens every row starts with
    middles: list[list[int]]     # each distinct rest of a prompt (after `common`, before the row's suffix)
    which: list[int]             # row -> its middle
    suffixes: list[list[int]]    # row -> its tokens from the one that scores its first label to its last
    suffix_start: list[int]      # row -> the column of its suffix's first token in the batch's layout
    width: int                   # the batch's width (columns)
    levels: list[Level] = field(default_factory=list)  # how the middles are computed (`stack_levels`)
    leaf: list[int] = field(default_factory=list)      # middle -> its segment in the last level

    def __post_init__(self):
        if not self.levels:
            self.levels, self.leaf = stack_levels(self.middles)

    def cost(self) -> int:
        """Tokens the shared forward computes (padding included)."""
        suffix = max(len(s) for s in self.suffixes)
        return len(self.common) + sum(level.cost() for level in self.levels) + len(self.suffixes) * suffix

    def row_leaf(self) -> list[int]:
        """Row -> its segment in the last level (the cache row its suffix runs over)."""
        return [self.leaf[w] for w in self.which]


def row_spans(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> list[tuple | None]:
    """Per row, (its ids, the column of its first real token, the column of the token whose logits score its first
    label, one past its last real token); None for a row with no real token or no label (read on the host)."""
    ids, mask, scored = input_ids.tolist(), attention_mask.tolist(), (labels[:, 1:] != IGNORE_INDEX).tolist()
    spans = []
    for row_ids, row_mask, row_scored in zip(ids, mask, scored):
        real = [c for c, m in enumerate(row_mask) if m]
        split = next((c for c, s in enumerate(row_scored) if s), None)  # label split + 1 is scored by token split
        spans.append(None if not real or split is None else (row_ids, real[0], split, real[-1] + 1))
    return spans


def plan_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> PrefixPlan | None:
    """The split of a batch whose real tokens are contiguous in each row; None when a row has no label."""
    prompts, suffixes, starts = [], [], []
    for span in row_spans(input_ids, attention_mask, labels):
        if span is None:
            return None
        row_ids, begin, split, end = span
        if split < begin:  # a label scored by padding: the tokens are not contiguous
            return None
        prompts.append(tuple(row_ids[begin:split]))
        suffixes.append(row_ids[split:end])
        starts.append(split)
    common, middles, which = split_prompts(prompts)
    return PrefixPlan(common, middles, which, suffixes, starts, input_ids.shape[1])


def prompt_order(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's place when rows are sorted by their prompt (the tokens before the one that scores the first label),
    ties kept in row order. Micro-batches cut from rows in this order hold equal prompts together, and prompts that
    share a beginning side by side: the shared-prefix forward computes each distinct prompt once per micro-batch, so
    it computes fewer tokens than over micro-batches cut in row order (an agent's turns from one start state sit
    in different episodes, hence far apart in row order)."""
    keys = [() if span is None else tuple(span[0][span[1]:span[2]]) for span in row_spans(input_ids, attention_mask, labels)]
    order = sorted(range(len(keys)), key=lambda k: (keys[k], k))
    place = torch.empty(len(keys), dtype=torch.long)
    place[order] = torch.arange(len(keys))
    return place


def split_prompts(prompts: list) -> tuple[list[int], list[list[int]], list[int]]:
    """The tokens every prompt starts with, each distinct rest, and which rest each prompt has."""
    prompts = [tuple(p) for p in prompts]
    common, shortest = 0, min(len(p) for p in prompts)
    while common < shortest and all(p[common] == prompts[0][common] for p in prompts):
        common += 1
    distinct: dict[tuple, int] = {}
    which = [distinct.setdefault(p[common:], len(distinct)) for p in prompts]
    return list(prompts[0][:common]), [list(m) for m in distinct], which


def padded_rows(rows: list[list[int]], pad: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        if r:
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            ids[k, cols], mask[k, cols] = torch.tensor(r), 1
    return ids.to(device), mask.to(device)


def innermost(model):
    """The model under the wrappers that pass keyword arguments through (DDP's `.module`, PEFT, the value head)."""
    while True:
        inner = next((getattr(model, a) for a in ("module", "policy") if isinstance(getattr(model, a, None), torch.nn.Module)), None)
        if inner is None and hasattr(model, "get_base_model"):
            inner = model.get_base_model()
        if inner is None or inner is model:
            return model
        model = inner


@functools.cache
def _cache_argument(model_class: type) -> str | None:
    """The forward's name for the KV cache: `cache` (transformers >= 5.20) or `past_key_values` (None: neither, or
    no `position_ids`)."""
    parameters = inspect.signature(model_class.forward).parameters
    if "position_ids" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def sharded(model) -> bool:
    """Whether any part of `model` is sharded by FSDP (whose parameters are freed after each forward: the shared
    tokens' forward would be gone before the backward that needs it)."""
    return any(type(m).__name__.startswith(("FSDP", "FullyShardedDataParallel")) for m in model.modules())


def takes_cache(model_class: type) -> bool:
    """Whether a model of this class can run the shared-prefix forward (a KV cache and position ids as arguments)."""
    return _cache_argument(model_class) is not None


def can_keep(model) -> bool:
    """Whether `model`'s forward takes a KV cache and position ids (and is neither compiled nor sharded): what the
    shared-prefix forward, a kept cache and a kept prefill need."""
    return not hasattr(model, "_orig_mod") and takes_cache(type(innermost(model))) and not sharded(model)


# the shared-prefix forward runs three forwards instead of one: worth it when it computes at most this share of the
# batch's tokens
SHARED_PREFIX_MOST = 0.75


def segment_forward(model, ids, segment_mask, past_mask, cache, keep, embeds=None):
    """One segment's forward over `cache` (None: the first segment); positions continue each row's real tokens.
    `embeds`: the ids' input embeddings, already looked up (`embedded`). Returns the output, the cache after the
    segment and the attention mask so far."""
    full = torch.cat([past_mask, segment_mask], dim=1) if past_mask is not None else segment_mask
    positions = (full.cumsum(-1) - 1).clamp(min=0)[:, full.shape[1] - ids.shape[1]:]
    name = _cache_argument(type(innermost(model)))
    tokens = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
    out = model(**tokens, attention_mask=full, position_ids=positions, use_cache=True, **{name: cache}, **keep)
    cache = getattr(out, name, None)
    return out, cache if cache is not None else out.past_key_values, full


def expand_cache(cache, index: torch.Tensor):
    cache.reorder_cache(index)  # index_select of every layer's keys and values: differentiable
    return cache


class KeptPrefix:
    """The KV cache of the tokens a rollout's prompts all start with, kept from one `generate` call to the next.

    An agent's turns (``--history none``) are one call each, and every call's prompts start with the same
    instructions: `prefill` computes them at the first call and starts later calls from a copy of their keys and
    values, computing only what a call's common tokens add. Valid while the weights stay as they are: make one
    per rollout (the update changes the weights between rollouts).
    """

    def __init__(self):
        self.tokens: list[int] = []
        self.cache = None
        self.computed_tokens = 0  # common tokens computed (what keeping saved shows here)

    def covers(self, common: list[int]) -> int:
        """How many of `common`'s tokens the kept cache holds: all it keeps when they begin `common`, else 0."""
        n = len(self.tokens)
        return 0 if self.cache is None or n > len(common) or common[:n] != self.tokens else n

    def start(self, common: list[int]):
        """(a copy of the kept cache, its length) when the kept tokens begin `common`, else (None, 0)."""
        n = self.covers(common)
        return (copied(self.cache), n) if n else (None, 0)  # `expand_cache` and `generate` change a cache in place

    def keep(self, common: list[int], cache) -> None:
        self.tokens, self.cache = list(common), copied(cache)


def copied(cache):
    """A copy of `cache` that `expand_cache` and `generate` may change without changing `cache`. A cache whose
    keys carry an autograd graph (`tandem.generation.prefill_graph`) cannot be deep-copied: a DynamicCache's
    layers replace their tensors, never write into them, so a new cache over the same tensors is a copy."""
    layers = cache_layers(cache)
    if layers is not None and layers[0][0].requires_grad:
        return dynamic_cache(layers)
    return copy.deepcopy(cache)


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(keys, values) of each layer of a transformers DynamicCache of full-attention layers; None for any other
    cache (sliding windows, static or quantised caches keep something else than every position's keys)."""
    layers = getattr(cache, "layers", None)
    if layers is None or type(cache).__name__ != "DynamicCache":
        return None
    if any(type(layer).__name__ != "DynamicLayer" or not getattr(layer, "is_initialized", True) for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def dynamic_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """A transformers DynamicCache holding these (keys, values) per layer."""
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def embedded(model, segments: list[torch.Tensor | None]) -> list[torch.Tensor | None] | None:
    """The input embeddings of a forward's token segments (None where a segment is None; at least one is given),
    looked up in one call (None: the model has no embedding module to call). With a segment a forward, each lookup's backward is a dense gradient of the whole
    embedding table (49k x 576 for SmolLM2: zeroed, filled, added to the others); one lookup makes one."""
    try:
        table = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(table, torch.nn.Embedding):  # not a lookup table: each forward looks its tokens up
        return None
    given = [ids for ids in segments if ids is not None]
    vectors = iter(table(torch.cat([ids.flatten() for ids in given])).split([ids.numel() for ids in given]))
    return [None if ids is None else next(vectors).view(*ids.shape, -1) for ids in segments]


def level_ids(levels: list[Level], pad_token_id: int, device) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Each level's segments left-padded (ids, mask); None for a level of empty segments."""
    return [padded_rows(level.segments, pad_token_id, True, device) if any(level.segments) else None for level in levels]


def prefill_ids(common: list[int], padded: list, device) -> list[torch.Tensor | None]:
    """The ids `prefill` computes, segment by segment: the common tokens (None: none), then each level's padded
    segments (`padded`: `level_ids`); what `embedded` looks up in one call."""
    return [torch.tensor([common], device=device) if common else None,
            *[None if segments is None else segments[0] for segments in padded]]


def prefill(model, common: list[int], levels: list[Level], device, pad_token_id: int = 0, cut_logits: bool = True,
            kept: KeptPrefix | None = None, embeds: list | None = None, padded: list | None = None):
    """The KV cache of the `common` tokens (computed once) followed by each level's segments (left-padded, each over
    its parent's cache: `stack_levels`), one cache row per segment of the last level, and its attention mask;
    (None, None) when nothing is to compute. `kept` (generation only: no gradient flows into a kept cache): the
    common tokens start from the cache an earlier call kept. `embeds`: the input embeddings of the common tokens
    and of each level's padded segments, already looked up (`embedded`); `padded`: those segments (`level_ids`)."""
    embeds = embeds or [None] * (1 + len(levels))
    one = {"logits_to_keep": 1} if cut_logits else {}
    cache, past_mask = None, None
    if common:
        cache, done = kept.start(common) if kept is not None else (None, 0)
        past_mask = torch.ones(1, done, dtype=torch.long, device=device) if done else None
        if done < len(common):
            ids = torch.tensor([common[done:]], device=device)
            _, cache, past_mask = segment_forward(model, ids, torch.ones_like(ids), past_mask, cache, one,
                                                  embeds[0] if not done else None)
            if kept is not None:
                kept.computed_tokens += len(common) - done
                if not done:
                    kept.keep(common, cache)
    padded = padded if padded is not None else level_ids(levels, pad_token_id, device)
    for level, segments, embeds_of_level in zip(levels, padded, embeds[1:]):
        if cache is not None:
            parent = torch.tensor(level.parent, device=device)
            cache, past_mask = expand_cache(cache, parent), past_mask[parent]
        if segments is not None:
            _, cache, past_mask = segment_forward(model, *segments, past_mask, cache, one, embeds_of_level)
    return cache, past_mask


def tree_ids(common: list[int], levels: list[Level], padded: list, device) -> torch.Tensor:
    """(segments of the last level, columns) the token ids `prefill` lays out: the common tokens, then each level's
    padded segment (`padded`: `level_ids`) of the row's ancestors."""
    ids = torch.tensor([common], dtype=torch.long, device=device)
    for level, segments in zip(levels, padded):
        ids = ids[torch.tensor(level.parent, device=device)]
        if segments is not None:
            ids = torch.cat([ids, segments[0]], dim=1)
    return ids


@dataclass
class SuffixLogits:
    """Logits of each row's suffix as the shared-prefix forward computes them, before any batch layout:
    `values` (rows, length, vocabulary), and `columns` (rows, length), the batch column each position's logits
    belong to (-1 past a row's suffix), in a batch `width` columns wide.

    Rows' prompts differ in length, so the batch's last K columns that hold every row's suffix outnumber a row's
    suffix several times (an agent's turn: 39 columns for a 9-token reply); the loss reads the scored positions
    straight from `values` (`scored`), never from zeros the width of the batch times the vocabulary."""

    values: torch.Tensor
    columns: torch.Tensor
    width: int

    def __truediv__(self, divisor: float) -> SuffixLogits:
        return SuffixLogits(self.values / divisor, self.columns, self.width)

    def scored(self, mask: torch.Tensor) -> torch.Tensor:
        """(N, vocabulary): the logits at the positions `mask` (rows, width - 1) marks, in its row-major order, as
        `logits[:, :-1][mask]` reads them from the placed logits."""
        rows = torch.arange(len(self.columns), device=self.columns.device).unsqueeze(1).expand_as(self.columns)
        inside = (self.columns >= 0) & (self.columns < mask.shape[1])
        hit = torch.zeros_like(inside)
        hit[inside] = mask[rows[inside], self.columns[inside]]
        if bool(hit.sum() != mask.sum()):  # one host sync
            raise ValueError(f"the rows' suffixes score {int(hit.sum())} of the {int(mask.sum())} positions asked for")
        return self.values[hit]  # row by row, each row's positions in column order: `mask`'s order

    def dense(self, keep: int | None = None) -> torch.Tensor:
        """The logits of the batch's last `keep` columns (all by default), as `model(input_ids, attention_mask,
        logits_to_keep=keep).logits` gives them, zeros outside each row's suffix."""
        keep = keep or self.width
        rows, length = self.columns.shape
        columns = self.columns - (self.width - keep)
        inside = (self.columns >= 0) & (columns >= 0)
        row_index = torch.arange(rows, device=columns.device).unsqueeze(1).expand(-1, length)
        placed = self.values.new_zeros(rows, keep, self.values.shape[-1])
        return placed.index_put((row_index[inside], columns[inside]), self.values[inside])


def shared_prefix_logits(model, plan: PrefixPlan, pad_token_id: int = 0, device=None,
                         cut_logits: bool = True) -> SuffixLogits:
    """The logits of each row's suffix (`SuffixLogits`: `.dense(keep)` places them as `model(input_ids,
    attention_mask, logits_to_keep=keep).logits` gives them), computed by the shared-prefix forward of `plan`.
    `cut_logits`: the model takes `logits_to_keep` (its head runs at the suffix positions only)."""
    device = device or next(model.parameters()).device
    ids, segment_mask = padded_rows(plan.suffixes, pad_token_id, False, device)
    padded = level_ids(plan.levels, pad_token_id, device)
    # one embedding lookup for every segment: one dense gradient of the embedding table, not one per segment
    embeds = embedded(model, [*prefill_ids(plan.common, padded, device), ids]) if torch.is_grad_enabled() else None
    embeds = embeds or [None] * (len(padded) + 2)
    cache, past_mask = prefill(model, plan.common, plan.levels, device, pad_token_id, cut_logits, embeds=embeds[:-1],
                               padded=padded)
    if cache is not None:
        which = torch.tensor(plan.row_leaf(), device=device)
        cache, past_mask = expand_cache(cache, which), past_mask[which]
    return suffix_logits(model, plan, (ids, segment_mask), cache, past_mask, cut_logits, embeds[-1])


def suffix_logits(model, plan: PrefixPlan, suffixes: tuple[torch.Tensor, torch.Tensor], cache, past_mask,
                  cut_logits: bool = True, embeds: torch.Tensor | None = None) -> SuffixLogits:
    """The forward of each row's suffix (`suffixes`: the right-padded ids and mask of `plan.suffixes`) over the
    cache of its prompt (one row per row, `past_mask` its attention mask; None: no prompt tokens)."""
    ids, segment_mask = suffixes
    out, _, _ = segment_forward(model, ids, segment_mask, past_mask, cache,
                                {"logits_to_keep": ids.shape[1]} if cut_logits else {}, embeds)
    # suffix token s of a row is the batch's column start + s; padding past a row's suffix belongs nowhere
    columns = torch.tensor(plan.suffix_start, device=ids.device).unsqueeze(1) + torch.arange(ids.shape[1], device=ids.device)
    return SuffixLogits(out.logits[:, -ids.shape[1]:], columns.masked_fill(segment_mask == 0, -1), plan.width)


def prompts_over_cache(model, prompt_ids: list[list[int]], pad_token_id: int, device, kept: KeptPrefix | None = None,
                       graph=None):
    """Prompts for `generate` with the tokens they share already computed: ({input_ids, attention_mask}, cache).

    The layout is [common tokens | each prompt's rest but its last token, left-padded | its last token]; the cache
    covers all columns but the last, built by `prefill` (the common tokens once, each distinct rest once). `generate`
    derives position ids from the attention mask, so the padding inside a row shifts nothing. (left-padded
    prompts, None) when nothing is shared enough to pay (or the model takes no cache argument). `graph` (a
    `tandem.generation.prefill_graph.PrefillGraph`): the prefill runs with autograd on and the graph keeps each
    prompt's keys and values for the update (always over the cache then, while it has room for them).
    """
    width = max(len(p) for p in prompt_ids)
    if not can_keep(model) or min(len(p) for p in prompt_ids) < 2:
        return _left_padded(prompt_ids, pad_token_id, device), None
    common, middles, which = split_prompts([p[:-1] for p in prompt_ids])
    levels, leaf = stack_levels(middles)
    level_tokens = sum(level.cost() for level in levels)
    cost = len(common) + level_tokens + len(prompt_ids)
    computed = level_tokens + len(common) - (kept.covers(common) if kept is not None else 0)
    record = graph is not None and graph.room_for(computed)
    if graph is not None and not record:
        graph.missed += len(middles)
    if not record and cost > SHARED_PREFIX_MOST * len(prompt_ids) * width:
        return _left_padded(prompt_ids, pad_token_id, device), None
    with torch.enable_grad() if record else contextlib.nullcontext():
        padded = level_ids(levels, pad_token_id, device)
        # recording: one lookup of the embedding table (one dense gradient of it in the backward)
        embeds = embedded(model, prefill_ids(common, padded, device)) if record else None
        cache, past_mask = prefill(model, common, levels, device, pad_token_id, kept=kept, embeds=embeds, padded=padded)
        index = torch.tensor([leaf[w] for w in which], device=device)
        cache, past_mask = expand_cache(cache, index), past_mask[index]
        if record:  # each prompt's keys and values cut from the cache, in the graph
            graph.record([p[:-1] for p in prompt_ids], cache, past_mask, computed)
    past_ids = tree_ids(common, levels, padded, device)[index]
    input_ids = torch.cat([past_ids, torch.tensor([[p[-1]] for p in prompt_ids], device=device)], dim=1)
    attention_mask = torch.cat([past_mask, torch.ones(len(prompt_ids), 1, dtype=past_mask.dtype, device=device)], dim=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask}, cache


def _left_padded(prompt_ids, pad_token_id, device) -> dict[str, torch.Tensor]:
    ids, mask = padded_rows(prompt_ids, pad_token_id, True, device)
    return {"input_ids": ids, "attention_mask": mask}


def cache_argument(model) -> str:
    """The keyword `model`'s forward and `generate` take a KV cache by."""
    return _cache_argument(type(innermost(model)))
