"""Token-by-token generation for the server: KV cache, sampling, log-probs, stop strings, streamable text.

One request's `n` choices share the prompt, so they decode together as `n` rows of one batch without
padding. Each step yields, per row still running, the text that became safe to show (text that might
be the start of a stop string, or an incomplete UTF-8 character, is held back until it is resolved)
and the token's log-probability. Log-probs are those of the model's own distribution (before
temperature and top-p), as OpenAI-compatible servers report them; sampling uses transformers'
temperature and top-p warpers, with a per-request seeded `torch.Generator`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

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


@dataclass
class Choice:
    """A whole choice, gathered from its events."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0


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


class Engine:
    """A causal LM and its tokenizer, ready to stream completions."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.eos_ids = _stop_ids(model, tokenizer, end_of_turn=False)  # raw completions run past a turn's end
        self.end_of_turn_ids = end_of_turn_ids(tokenizer)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered with the tokenizer's chat template, ending at the assistant's turn."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _token_texts(self, ids: list[int]) -> list[str]:
        return self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)

    @torch.no_grad()
    def stream(
        self,
        prompt_ids: list[int],
        *,
        n: int = 1,
        max_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        logprobs: int | None = None,
        chat: bool = False,
    ) -> Iterator[list[ChoiceEvent]]:
        """Yield, step by step, the events of the `n` rows continuing `prompt_ids` (see the module docstring).

        `logprobs`: None for no log-probs, else how many top alternatives to report per token (0: only the token's).
        Finish reasons: "stop" (EOS, an end-of-turn token in chat, or a stop string, which is cut off) or "length".
        """
        stops = [s for s in (stop or []) if s]
        stop_ids = self.eos_ids | (self.end_of_turn_ids if chat else set())
        generator = torch.Generator(device=self.device).manual_seed(seed if seed is not None else secrets.randbits(63))
        warpers = LogitsProcessorList()
        if temperature > 0:
            warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1:
                warpers.append(TopPLogitsWarper(top_p))
        sequences = torch.tensor([prompt_ids] * n, device=self.device)
        rows = [{"ids": [], "sent": "", "done": False} for _ in range(n)]
        step_input, past = sequences, None
        for step in range(max_tokens):
            output = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = output.past_key_values
            logits = output.logits[:, -1].float()
            if temperature > 0:
                probabilities = warpers(sequences, logits.clone()).softmax(-1)
                chosen = torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
            else:
                chosen = logits.argmax(-1)
            log_probs = logits.log_softmax(-1) if logprobs is not None else None
            events = []
            for index, row in enumerate(rows):
                if row["done"]:
                    continue
                token = int(chosen[index])
                if token in stop_ids:
                    row["done"] = True
                    events.append(ChoiceEvent(index, self._flush(row), [], "stop"))
                    continue
                row["ids"].append(token)
                entries = [self._logprob_entry(token, log_probs[index], logprobs)] if log_probs is not None else []
                text = self.tokenizer.decode(row["ids"], skip_special_tokens=True)
                cut = first_stop(text, stops)
                if cut is not None:
                    row["done"] = True
                    events.append(ChoiceEvent(index, self._advance(row, text[:cut]), entries, "stop"))
                elif step == max_tokens - 1:
                    row["done"] = True
                    events.append(ChoiceEvent(index, self._advance(row, text), entries, "length"))
                else:
                    visible = text[: len(text) - held_back(text, stops)]
                    events.append(ChoiceEvent(index, self._advance(row, visible), entries))
            yield events
            if all(row["done"] for row in rows):
                return
            sequences = torch.cat([sequences, chosen[:, None]], dim=1)
            step_input = chosen[:, None]

    def _flush(self, row: dict) -> str:
        """The text still held back when a row ends on a stop token."""
        text = self.tokenizer.decode(row["ids"], skip_special_tokens=True)
        return self._advance(row, text)

    @staticmethod
    def _advance(row: dict, visible: str) -> str:
        delta = visible[len(row["sent"]) :] if visible.startswith(row["sent"]) else ""
        row["sent"] += delta
        return delta

    def _logprob_entry(self, token: int, log_probs: torch.Tensor, top: int) -> TokenLogprob:
        entry = TokenLogprob(token, self._token_texts([token])[0], float(log_probs[token]))
        if top:
            values, ids = log_probs.topk(top)
            entry.top = list(zip(self._token_texts(ids.tolist()), values.tolist()))
        return entry

    def complete(self, prompt_ids: list[int], **options) -> list[Choice]:
        """Run `stream` to the end and gather each row's text, log-probs, finish reason and token count."""
        choices = [Choice() for _ in range(options.get("n", 1))]
        for events in self.stream(prompt_ids, **options):
            for event in events:
                choice = choices[event.index]
                choice.text += event.text
                choice.logprobs.extend(event.logprobs)
                choice.tokens += 1
                choice.finish_reason = event.finish_reason or choice.finish_reason
        return choices
