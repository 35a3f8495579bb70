"""Token-by-token generation for the server: continuous batching, KV cache, sampling, log-probs, stop strings.

A `Job` is one prompt's `n` choices. A `DecodeBatch` holds the rows of many jobs over one KV cache:
a job joins between two decoding steps (its prompt is encoded once, its cache copied to `n` rows and
left-padded to the batch's length; every row carries its own position ids), each step decodes one
token for every running row in a single forward, and a finished or cancelled row leaves the cache at
once. This is iteration-level ("continuous") batching as in Orca (Yu et al., 2022) and vLLM, on a
Hugging Face `DynamicCache`; a model whose cache cannot be merged that way (sliding-window or static
layers, no `position_ids`) decodes one job at a time.

Each step yields, per row still running, the text that became safe to show (text that might be the
start of a stop string, or an incomplete UTF-8 character, is held back until it is resolved) and the
token's log-probability. Log-probs are those of the model's own distribution (before temperature and
top-p), as OpenAI-compatible servers report them; sampling uses transformers' temperature, top-k and top-p
warpers with a per-job seeded `torch.Generator`, so a seeded job draws the same tokens whatever else
shares its batch (up to float rounding of the batched forward).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tandem.generation.sampling import _stop_ids, end_of_turn_ids


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ChoiceEvent:
    """What one step produced for one row: new visible text, token log-probs, and the finish reason once done."""

    index: int
    text: str
    logprobs: list[TokenLogprob]
    finish_reason: str | None = None
    tokens: int = 1  # generated tokens this event stands for (a stop token is counted, not shown)


@dataclass
class Choice:
    """A whole choice, gathered from its events."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0


@dataclass(eq=False)
class Job:
    """One prompt to continue `n` times, with its sampling options (see `Engine.stream`)."""

    prompt_ids: list[int]
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: every token
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: int | None = None
    chat: bool = False
    ignore_eos: bool = False


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` to hold back: an unfinished UTF-8 character, or a possible stop-string start."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                longest = max(longest, k)
                break
    return max(keep, longest)


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index in `text` where the earliest stop string begins, or None."""
    found = [text.find(stop) for stop in stops]
    found = [i for i in found if i >= 0]
    return min(found) if found else None


@dataclass(eq=False)
class _Row:
    job: Job
    index: int
    ids: list[int] = field(default_factory=list)
    sent: str = ""
    position: int = 0  # position id of the token this row feeds next


class _JobState:
    """A job's sampler: its generator, warpers, stop strings and stop ids."""

    def __init__(self, job: Job, engine: Engine) -> None:
        self.stops = [s for s in (job.stop or []) if s]
        self.stop_ids = set() if job.ignore_eos else engine.eos_ids | (engine.end_of_turn_ids if job.chat else set())
        self.generator = torch.Generator(device=engine.device).manual_seed(
            job.seed if job.seed is not None else secrets.randbits(63))
        self.warpers = LogitsProcessorList()
        if job.temperature > 0:
            self.warpers.append(TemperatureLogitsWarper(job.temperature))
            if job.top_k > 0:
                self.warpers.append(TopKLogitsWarper(job.top_k))
            if job.top_p < 1:
                self.warpers.append(TopPLogitsWarper(job.top_p))
        self.steps = 0


class DecodeBatch:
    """The rows of several jobs decoding together over one KV cache (see the module docstring)."""

    def __init__(self, engine: Engine, max_rows: int) -> None:
        self.engine, self.max_rows = engine, max_rows
        self.rows: list[_Row] = []
        self.states: dict[Job, _JobState] = {}
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cache length]: 1 on real tokens, 0 on left padding
        self.last: torch.Tensor | None = None  # [rows]: the token each row feeds next

    @property
    def jobs(self) -> list[Job]:
        return list(self.states)

    @torch.no_grad()
    def add(self, job: Job) -> dict[Job, list[ChoiceEvent]]:
        """Encode `job`'s prompt, draw its first tokens, and let its running rows join the batch."""
        state = self.states[job] = _JobState(job, self.engine)
        prompt = torch.tensor([job.prompt_ids], device=self.engine.device)
        output = self.engine.model(input_ids=prompt, use_cache=True)
        cache = _cache_of(output)
        if job.n > 1:
            cache.batch_repeat_interleave(job.n)
        rows = [_Row(job, i, position=len(job.prompt_ids)) for i in range(job.n)]
        logits = output.logits[:, -1].float().expand(job.n, -1)
        events, chosen, running = self._advance(job, state, rows, logits)
        if running:
            keep = torch.tensor([rows.index(r) for r in running], device=self.engine.device)
            if len(running) < job.n:
                cache.batch_select_indices(keep)
            self._merge(cache, running, chosen[keep])
        if not any(r.job is job for r in self.rows):
            del self.states[job]
        return {job: events}

    @torch.no_grad()
    def step(self) -> dict[Job, list[ChoiceEvent]]:
        """Decode one token for every running row."""
        if not self.rows:
            return {}
        ones = torch.ones(len(self.rows), 1, dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        positions = torch.tensor([[r.position] for r in self.rows], device=self.engine.device)
        for row in self.rows:
            row.position += 1
        output = self.engine.model(input_ids=self.last[:, None], attention_mask=self.mask, position_ids=positions,
                                   use_cache=True, **{self.engine.cache_argument: self.cache})
        self.cache = _cache_of(output)
        logits = output.logits[:, -1].float()
        events: dict[Job, list[ChoiceEvent]] = {}
        next_token: dict[_Row, int] = {}  # the rows still running, and the token each feeds next
        for job, state in list(self.states.items()):
            index = [i for i, r in enumerate(self.rows) if r.job is job]
            rows = [self.rows[i] for i in index]
            events[job], chosen, running = self._advance(job, state, rows, logits[index])
            next_token.update((row, token) for row, token in zip(rows, chosen.tolist()) if row in running)
        keep = [i for i, row in enumerate(self.rows) if row in next_token]
        last = [next_token[self.rows[i]] for i in keep]
        self._select(keep)
        self.last = torch.tensor(last, device=self.engine.device, dtype=torch.long)
        return events

    def remove(self, job: Job) -> None:
        """Drop a job's rows (cancelled, or its client gone)."""
        self.states.pop(job, None)
        self._select([i for i, r in enumerate(self.rows) if r.job is not job])

    def _advance(self, job: Job, state: _JobState, rows: list[_Row], logits: torch.Tensor):
        """Sample the next token of `rows` (all of `job`) and turn it into events; returns (events, tokens, running rows)."""
        if job.temperature > 0:
            probabilities = state.warpers(torch.zeros(len(rows), 0, dtype=torch.long), logits.clone()).softmax(-1)
            chosen = torch.multinomial(probabilities, 1, generator=state.generator).squeeze(-1)
        else:
            chosen = logits.argmax(-1)
        log_probs = logits.log_softmax(-1) if job.logprobs is not None else None
        last_step = state.steps == job.max_tokens - 1
        state.steps += 1
        events, running = [], []
        tokenizer = self.engine.tokenizer
        for k, row in enumerate(rows):
            token = int(chosen[k])
            if token in state.stop_ids:
                events.append(ChoiceEvent(row.index, _show(row, tokenizer.decode(row.ids, skip_special_tokens=True)),
                                          [], "stop"))
                continue
            row.ids.append(token)
            entries = [self.engine.logprob_entry(token, log_probs[k], job.logprobs)] if log_probs is not None else []
            text = tokenizer.decode(row.ids, skip_special_tokens=True)
            cut = first_stop(text, state.stops)
            if cut is not None:
                events.append(ChoiceEvent(row.index, _show(row, text[:cut]), entries, "stop"))
            elif last_step:
                events.append(ChoiceEvent(row.index, _show(row, text), entries, "length"))
            else:
                events.append(ChoiceEvent(row.index, _show(row, text[: len(text) - held_back(text, state.stops)]),
                                          entries))
                running.append(row)
        return events, chosen, running

    def _merge(self, cache: DynamicCache, rows: list[_Row], tokens: torch.Tensor) -> None:
        """Append `rows` (their prompt cache `cache`, next tokens `tokens`) to the batch, left-padding the shorter side."""
        mask = torch.ones(len(rows), cache.get_seq_length(), dtype=torch.long, device=self.engine.device)
        if self.cache is None:
            self.cache, self.mask, self.last, self.rows = cache, mask, tokens, list(rows)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self.cache.layers, cache.layers):
            ours.keys = torch.cat([_pad_left(ours.keys, width), _pad_left(theirs.keys, width)])
            ours.values = torch.cat([_pad_left(ours.values, width), _pad_left(theirs.values, width)])
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.last = torch.cat([self.last, tokens])
        self.rows += rows

    def _select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (in order), and cut cache columns that are padding for every row left."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.last = None
            self.states.clear()
            return
        index = torch.tensor(keep, device=self.engine.device)
        self.cache.batch_select_indices(index)
        self.mask, self.last = self.mask[index], self.last[index]
        if self.engine.mergeable:
            start = int(self.mask.any(0).nonzero()[0])
            if start:
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
                self.mask = self.mask[:, start:]
        for job in [j for j in self.states if not any(r.job is j for r in self.rows)]:
            del self.states[job]


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _show(row: _Row, visible: str) -> str:
    """The part of `visible` not sent yet (text already shown is never taken back)."""
    delta = visible[len(row.sent):] if visible.startswith(row.sent) else ""
    row.sent += delta
    return delta


class Engine:
    """A causal LM and its tokenizer, ready to stream completions, alone or batched with others."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.eos_ids = _stop_ids(model, tokenizer, end_of_turn=False)  # raw completions run past a turn's end
        self.end_of_turn_ids = end_of_turn_ids(tokenizer)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.mergeable = _mergeable(model)
        # transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this model's forward takes
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered with the tokenizer's chat template, ending at the assistant's turn."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def batch(self, max_rows: int) -> DecodeBatch:
        """An empty batch that jobs can join (up to `max_rows` rows decoding at once)."""
        return DecodeBatch(self, max_rows)

    def stream(self, prompt_ids: list[int], **options) -> Iterator[list[ChoiceEvent]]:
        """Yield, step by step, the events of the `n` rows continuing `prompt_ids`, decoded on their own.

        Options are `Job`'s fields: n, max_tokens, temperature, top_p, top_k, seed, stop, chat, and `logprobs`
        (None for no log-probs, else how many top alternatives to report per token; 0: only the token's).
        Finish reasons: "stop" (EOS, an end-of-turn token in chat, or a stop string, which is cut off) or "length".
        """
        job = Job(list(prompt_ids), **options)
        batch = self.batch(max_rows=job.n)
        yield batch.add(job)[job]
        while batch.rows:
            yield batch.step()[job]

    def complete(self, prompt_ids: list[int], **options) -> list[Choice]:
        """Run `stream` to the end and gather each row's text, log-probs, finish reason and token count."""
        return gather(self.stream(prompt_ids, **options), options.get("n", 1))

    def logprob_entry(self, token: int, log_probs: torch.Tensor, top: int) -> TokenLogprob:
        entry = TokenLogprob(token, self._token_texts([token])[0], float(log_probs[token]))
        if top:
            values, ids = log_probs.topk(top)
            entry.top = list(zip(self._token_texts(ids.tolist()), values.tolist()))
        return entry

    def _token_texts(self, ids: list[int]) -> list[str]:
        return self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)


def gather(steps, n: int) -> list[Choice]:
    """Each row's whole choice from a stream of per-step events."""
    choices = [Choice() for _ in range(n)]
    for events in steps:
        add_events(choices, events)
    return choices


def add_events(choices: list[Choice], events: list[ChoiceEvent]) -> None:
    for event in events:
        choice = choices[event.index]
        choice.text += event.text
        choice.logprobs.extend(event.logprobs)
        choice.tokens += event.tokens
        choice.finish_reason = event.finish_reason or choice.finish_reason


def _mergeable(model) -> bool:
    """Whether jobs can join a running batch: a plain DynamicCache of full-attention layers, and position ids."""
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None) and any(
            kind != "full_attention" for kind in config.layer_types):
        return False
    cache = DynamicCache(config=config)
    return all(type(layer) is DynamicLayer for layer in cache.layers) if cache.layers else True
