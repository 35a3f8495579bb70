"""The rollout engine: batched sampling with a KV cache, returning what RL needs to train on.

Prompts are left-padded for generation (Hugging Face `generate` derives position ids from the
attention mask, so left padding does not shift positions); several samples per prompt come from
repeating each prompt. Returned tensors are right-padded prompt+completion rows, exactly the layout
the training forward pass uses, with the log-probabilities of the sampled tokens under the sampling
distribution (temperature, top-k, top-p applied), recorded at sampling time.

Given `sample_keys` (one integer per row), draws are keyed: token t of a row inverts the row's CDF at a
uniform computed from (key, t) by a counter-based hash (inverse-transform sampling: an exact sample of the
same distribution). A row's completion then depends on its key alone, not on the torch RNG, on the other
rows in the batch or on how many processes share the batch: a 2-process RL step samples what a 1-process
step with the same global batch samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import (
    LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TemperatureLogitsWarper,
    TopKLogitsWarper, TopPLogitsWarper,
)

from tandem.data import pad_prompt_response_batch
from tandem.generation.prefix import KeptPrefix, cache_argument, prompts_over_cache
from tandem.generation.turn_cache import TurnCache
from tandem.generation.sampling import _stop_ids


@dataclass
class SamplingConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    samples_per_prompt: int = 1
    stop_strings: list[str] = field(default_factory=list)


@dataclass
class RolloutBatch:
    """One batch of sampled completions. Row i answers prompt i // samples_per_prompt."""

    prompts: list[str]                 # one entry per row
    completions: list[str]             # decoded text (special tokens dropped, cut at a stop string)
    input_ids: torch.Tensor            # (N, L) right-padded prompt + completion
    attention_mask: torch.Tensor       # (N, L)
    completion_mask: torch.Tensor      # (N, L) 1 on completion tokens
    sampled_log_probs: torch.Tensor    # (N, L) log-prob of each completion token when sampled; 0 elsewhere
    ended: torch.Tensor                # (N,) bool: the completion ended with a stop token / string
    group_ids: torch.Tensor            # (N,) index of the prompt each row answers
    columns: dict[str, list] = field(default_factory=dict)  # extra dataset columns, one entry per row
    # multi-turn rows (`tandem.lm_as_agent`): rewards where each turn earned them (N, L), their row sum the row's
    # score; the sample (episode) each row belongs to (N,) when an episode spans several rows; and the row of
    # the episode's next turn (N,), -1 after the last, for bootstrapping a critic across rows
    step_rewards: torch.Tensor | None = None
    sample_ids: torch.Tensor | None = None
    next_row: torch.Tensor | None = None

    def to(self, device) -> RolloutBatch:
        for name in ("input_ids", "attention_mask", "completion_mask", "sampled_log_probs", "ended", "group_ids",
                     "step_rewards", "sample_ids", "next_row"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


def select_rows(batch: RolloutBatch, rows: list[int]) -> RolloutBatch:
    """The rollout restricted to `rows` (group ids kept as they are)."""
    index = torch.tensor(rows, dtype=torch.long, device=batch.input_ids.device)
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    return RolloutBatch(
        prompts=pick(batch.prompts), completions=pick(batch.completions), input_ids=batch.input_ids[index],
        attention_mask=batch.attention_mask[index], completion_mask=batch.completion_mask[index],
        sampled_log_probs=batch.sampled_log_probs[index], ended=batch.ended[index], group_ids=batch.group_ids[index],
        columns={key: pick(values) for key, values in batch.columns.items()},
    )


def concat_rollouts(batches: list[RolloutBatch], pad_token_id: int) -> RolloutBatch:
    """Rows of several rollouts in one batch: right-padded to the widest, groups renumbered 0, 1, ... in order."""
    batches = [b for b in batches if b.input_ids.shape[0]]
    width = max(b.input_ids.shape[1] for b in batches)
    padded = lambda t, value: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)  # noqa: E731
    groups, offset = [], 0
    for b in batches:
        # number groups by first appearance so the order of rows is the order of groups
        first_seen: dict[int, int] = {}
        renumbered = [first_seen.setdefault(g, len(first_seen)) for g in b.group_ids.tolist()]
        groups.append(torch.tensor(renumbered, device=b.group_ids.device) + offset)
        offset += len(first_seen)
    columns = {key: [v for b in batches for v in b.columns[key]] for key in batches[0].columns}
    return RolloutBatch(
        prompts=[p for b in batches for p in b.prompts], completions=[c for b in batches for c in b.completions],
        input_ids=torch.cat([padded(b.input_ids, pad_token_id) for b in batches]),
        attention_mask=torch.cat([padded(b.attention_mask, 0) for b in batches]),
        completion_mask=torch.cat([padded(b.completion_mask, 0) for b in batches]),
        sampled_log_probs=torch.cat([padded(b.sampled_log_probs, 0.0) for b in batches]),
        ended=torch.cat([b.ended for b in batches]), group_ids=torch.cat(groups), columns=columns,
    )


class _StopOnStrings(StoppingCriteria):
    """Stop a row once its new text contains any stop string (EOS is handled by generate itself).

    Each call decodes only the last few tokens of each row still running: a stop string of c characters lies
    within the last c + 1 tokens once it is complete (a token holds at least one character; one more covers a
    byte-level token that decodes to nothing alone), and a row that stopped stays stopped. Decoding every row's
    whole completion at every token cost O(T^2).
    """

    def __init__(self, tokenizer, stop_strings: list[str], prompt_width: int):
        self.tokenizer, self.stop_strings, self.prompt_width = tokenizer, stop_strings, prompt_width
        self.window = max(len(s) for s in stop_strings) + 1
        self.stopped: torch.Tensor | None = None

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        if self.stopped is None:
            self.stopped = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        running = (~self.stopped).nonzero().flatten().tolist()
        if running:
            texts = self.tokenizer.batch_decode(input_ids[running, start:].tolist(), skip_special_tokens=True)
            for row, text in zip(running, texts):
                self.stopped[row] = any(s in text for s in self.stop_strings)
        return self.stopped.to(input_ids.device)


def _stop_string_cut(tokenizer, tokens: list[int], stop_strings: list[str]) -> int | None:
    """Length of the shortest token prefix whose text contains a stop string, or None.

    Containing a stop string is monotone in the prefix length, so a binary search over prefixes finds it in
    O(log T) decodes."""
    def contains(length: int) -> bool:
        text = tokenizer.decode(tokens[:length], skip_special_tokens=True)
        return any(s in text for s in stop_strings)

    if not tokens or not contains(len(tokens)):
        return None
    low, high = 1, len(tokens)
    while low < high:
        middle = (low + high) // 2
        if contains(middle):
            high = middle
        else:
            low = middle + 1
    return low


_MASK32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding values in [0, 2^32) (products wrap; the low 32
    bits, kept by the mask, are exact on CPU and GPU alike)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def keyed_uniform(keys: torch.Tensor, position: int) -> torch.Tensor:
    """(rows,) float64 uniforms in (0, 1), a pure function of (key, position): the counter-based hash of
    each row's key and the token's index in its completion."""
    h = _mix32(_mix32((keys.long() * 0x9E3779B1 + position * 0x7FEB352D + 0x165667B1) & _MASK32) ^ 0x61C88647)
    return (h.double() + 0.5) / 2.0**32


def keyed_draw(log_probs: torch.Tensor, keys: torch.Tensor, position: int) -> torch.Tensor:
    """(rows,) token ids drawn from each row's distribution (`log_probs`, rows x vocab) by inverting its CDF
    at the row's keyed uniform: token i is drawn when F(i-1) <= u < F(i), so with probability p_i exactly,
    and never a token of probability 0. One hashed number per row and step (a (rows, vocab) Gumbel noise
    tensor, hashed per token, cost 1.3 s a step at 256 rows of a 49k vocabulary on 2 CPU cores)."""
    cdf = log_probs.double().exp().cumsum(-1)
    target = keyed_uniform(keys, position).to(cdf.device).unsqueeze(-1) * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=log_probs.shape[-1] - 1)


class SampledLogProbs(LogitsProcessor):
    """Temperature, top-k and top-p applied here, last, so what this sees is the distribution tokens are drawn
    from; the log-prob of each drawn token is read one step later from the previous step's scores.

    Only one (rows, vocabulary) tensor is held at a time: keeping every step's scores (`output_scores`)
    cost 3 full-vocabulary fp32 copies, about 10 GB for 64 rows x 256 tokens of a 49k-token vocabulary.
    """

    def __init__(self, config: SamplingConfig, keys: torch.Tensor | None = None, prompt_width: int = 0):
        # keyed draws (see the module docstring): scores become log-probs + Gumbel noise keyed by the new
        # token's index in the completion (not in the padded row, whose width depends on the batch)
        self.keys, self.prompt_width = keys, prompt_width
        warpers = []
        if config.temperature > 0 and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.temperature > 0 and config.top_k:
            warpers.append(TopKLogitsWarper(config.top_k))
        if config.temperature > 0 and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(config.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.previous: torch.Tensor | None = None
        self.values: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._read(input_ids)
        scores = self.warpers(input_ids, scores)
        self.previous = scores.float().log_softmax(-1)
        if self.keys is not None:  # greedy decoding picks the keyed draw from p, the only finite score left
            drawn = keyed_draw(self.previous, self.keys, input_ids.shape[1] - self.prompt_width)
            return torch.full_like(self.previous, float("-inf")).scatter_(-1, drawn.unsqueeze(-1), 0.0)
        return scores

    def _read(self, sequences: torch.Tensor) -> None:
        if self.previous is not None:
            self.values.append(self.previous.gather(-1, sequences[:, -1:]).squeeze(-1))
            self.previous = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, new tokens) log-probs of the drawn tokens, once `generate` has returned `sequences`."""
        self._read(sequences)
        return torch.stack(self.values, dim=1) if self.values else sequences.new_zeros((sequences.shape[0], 0), dtype=torch.float)


@dataclass
class SampledRow:
    """One sampled continuation: its token ids (up to and including a stop token), their sampling log-probs,
    whether it ended (a stop token or string, not the length limit) and its decoded text."""

    tokens: list[int]
    log_probs: list[float]
    ended: bool
    text: str


@torch.no_grad()
def sample_rows(model, tokenizer, encoded: dict[str, torch.Tensor], config: SamplingConfig,
                sample_keys: torch.Tensor | None = None, cache=None, turns: TurnCache | None = None,
                owners: list[int] | None = None) -> list[SampledRow]:
    """One continuation of each row of a left-padded batch, in one `generate` call, with sampling log-probs.
    `cache`: the KV cache of all but the last column (`tandem.generation.prefix.prompts_over_cache`: shared prompt tokens computed once).

    Rows stop at EOS, the chat template's end-of-turn token or a stop string; the token ids are exactly those
    sampled (a multi-turn rollout appends them as they are, never re-tokenising the decoded text).
    `sample_keys` (one per row): keyed draws, independent of the batch (module docstring). `turns` keeps the KV
    cache `generate` leaves, for the next turn of the conversations `owners`.
    """
    was_training = model.training
    model.eval()
    width = encoded["input_ids"].shape[1]
    keyed = sample_keys is not None and config.temperature > 0
    if keyed and len(sample_keys) != encoded["input_ids"].shape[0]:
        raise ValueError(f"{len(sample_keys)} sample keys for {encoded['input_ids'].shape[0]} rows")
    recorder = SampledLogProbs(config, sample_keys.to(encoded["input_ids"].device) if keyed else None, width)
    # the warping is the recorder's alone: neutral values here keep a checkpoint's own sampling defaults out
    sampling = {"do_sample": config.temperature > 0 and not keyed}
    if sampling["do_sample"]:
        sampling.update(temperature=1.0, top_p=1.0, top_k=0)
    criteria = StoppingCriteriaList([_StopOnStrings(tokenizer, config.stop_strings, width)]) if config.stop_strings else None
    stops = _stop_ids(model, tokenizer)
    try:
        out = model.generate(
            **encoded, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=criteria, eos_token_id=sorted(stops), logits_processor=LogitsProcessorList([recorder]),
            return_dict_in_generate=True, **sampling, **({cache_argument(model): cache} if cache is not None else {}),
        )
    finally:
        model.train(was_training)
    sequences = out.sequences
    generated = sequences[:, width:]
    token_log_probs = recorder.finish(sequences)
    rows = []
    for row in range(generated.shape[0]):
        tokens = generated[row].tolist()
        cut = next((i + 1 for i, token in enumerate(tokens) if token in stops), None)
        if cut is None and config.stop_strings:
            cut = _stop_string_cut(tokenizer, tokens, config.stop_strings)
        text = tokenizer.decode(tokens[: cut or len(tokens)], skip_special_tokens=True)
        if config.stop_strings:
            ends = [text.index(s) + len(s) for s in config.stop_strings if s in text]
            text = text[: min(ends)] if ends else text
        ended = cut is not None
        cut = cut or len(tokens)
        rows.append(SampledRow(tokens[:cut], token_log_probs[row, :cut].tolist(), ended, text))
    if turns is not None:
        turns.keep(owners, encoded, sequences, getattr(out, cache_argument(model), None), [len(r.tokens) for r in rows])
    return rows


@torch.no_grad()
def sample_ids(model, tokenizer, prompt_ids: list[list[int]], config: SamplingConfig,
               sample_keys: torch.Tensor | None = None, turns: TurnCache | None = None,
               owners: list[int] | None = None, kept: KeptPrefix | None = None, graph=None) -> list[SampledRow]:
    """One continuation of each token-id prompt in one `generate` call, the tokens prompts share (a group's prompt,
    an agent's instructions) computed once (`tandem.generation.prefix.prompts_over_cache`). With `turns` (a
    multi-turn rollout's `TurnCache`) and the conversation of each prompt (`owners`), a prompt that continues its
    conversation computes only its new tokens over the cache the last turn left. `kept` (one per rollout): the
    shared tokens start from the cache an earlier call of the rollout kept (an agent's instructions, once). `graph`
    (a `tandem.generation.prefill_graph.PrefillGraph`): the prompts' prefill keeps its autograd graph there, for
    the update that follows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        # the KV cache is built on the module `generate` runs on (a value-head wrapper generates with its policy)
        generating = getattr(model, "generation_model", model)
        prepared = turns.encode(prompt_ids, owners, device) if turns is not None else None
        encoded, cache = prepared or prompts_over_cache(generating, prompt_ids, tokenizer.pad_token_id, device, kept, graph)
    finally:
        model.train(was_training)
    return sample_rows(model, tokenizer, encoded, config, sample_keys, cache=cache, turns=turns, owners=owners)


@torch.no_grad()
def rollout(model, tokenizer, prompts: list[str], config: SamplingConfig, columns: dict[str, list] | None = None,
            sample_keys: torch.Tensor | None = None) -> RolloutBatch:
    """Sample `config.samples_per_prompt` completions for each prompt in one batched `generate` call.

    `sample_keys` (one per row, rows = prompts x samples): keyed draws, independent of the batch (module docstring).
    """
    device = next(model.parameters()).device
    repeated = [p for p in prompts for _ in range(config.samples_per_prompt)]
    prompt_rows = tokenizer(repeated, add_special_tokens=False)["input_ids"]
    sampled_rows = sample_ids(model, tokenizer, prompt_rows, config, sample_keys)
    batch = pad_prompt_response_batch(prompt_rows, [r.tokens for r in sampled_rows], tokenizer.pad_token_id)
    sampled = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
    for row, (prompt, sampled_row) in enumerate(zip(prompt_rows, sampled_rows)):
        sampled[row, len(prompt) : len(prompt) + len(sampled_row.log_probs)] = torch.tensor(sampled_row.log_probs)
    groups = torch.arange(len(prompts)).repeat_interleave(config.samples_per_prompt)
    row_columns = {k: [v for v in values for _ in range(config.samples_per_prompt)] for k, values in (columns or {}).items()}
    return RolloutBatch(
        prompts=repeated, completions=[r.text for r in sampled_rows], input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"], completion_mask=batch["completion_mask"], sampled_log_probs=sampled,
        ended=torch.tensor([r.ended for r in sampled_rows]), group_ids=groups, columns=row_columns,
    ).to(device)
