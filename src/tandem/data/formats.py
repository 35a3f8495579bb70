"""The data formats, named and shaped as in TRL so users' files just work, validated and reduced to plain text.

| format              | fields                                           | normalised to                       |
|---------------------|--------------------------------------------------|-------------------------------------|
| `text`              | text                                             | {text}                              |
| `prompt_only`       | prompt                                           | {prompt}                            |
| `prompt_completion` | prompt, completion                               | {prompt, completion}                |
| `messages`          | messages (trains on the final assistant turn)    | {prompt, completion}                |
| `preference`        | [prompt,] chosen, rejected (implicit prompt)     | {prompt, chosen, rejected}          |
| `unpaired`          | prompt, completion, label: bool (KTO)            | {prompt, completion, label}         |

Prompts and responses are strings, or lists of chat messages ``{"role", "content"}`` (conversational);
conversational records are rendered with the tokenizer's chat template:
``prompt = template(prompt_messages, add_generation_prompt=True)`` and the response is the rest of
``template(prompt_messages + response_messages)``, which must start with the prompt. Fields a format does
not use (an ``answer`` a verifier checks, say) are carried through unchanged.

Text is tokenized as written, so control tokens such as ``<|im_start|>`` inside a string are real control
tokens: this is intended (``control_tokens="allow"``), so that chat data rendered ahead of time trains as
rendered. For scraped or user-written text, ``"escape"`` breaks each such token with a zero-width space
(``<\u200b|im_start|>``: the same visible text, ordinary tokens) and ``"refuse"`` makes it a DataError
naming the record and field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tandem.data.errors import DataError, type_name
from tandem.data.io import Record, read_records, records_from_dicts
from tandem.data.pieces import (
    prompt_and_responses,
    read_piece,
    render_chat,
    shared_leading_messages,
    shared_text_prefix,
    split_conversation,
)

SFT_FORMATS = frozenset({"prompt_completion", "messages"})


@dataclass(frozen=True)
class RecordFormat:
    """A named data format: the fields that identify it, all the fields it reads, and its normaliser."""

    name: str
    required: tuple[str, ...]
    fields: tuple[str, ...]
    normalise: Callable[[Record, PreTrainedTokenizerBase | None], dict[str, Any]]


def _text(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    text = record.data.get("text")
    if not isinstance(text, str):
        raise record.error(f"expected a string, got {type_name(text)}", "text")
    if not text:
        raise record.error("must not be empty", "text")
    return {"text": text}


def _prompt_only(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    prompt = read_piece(record, "prompt", allow_empty=False)
    if isinstance(prompt, list):
        return {"prompt": render_chat(record, tokenizer, prompt, "prompt", add_generation_prompt=True)}
    return {"prompt": prompt}


def _prompt_completion(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    prompt = read_piece(record, "prompt")
    completion = read_piece(record, "completion", allow_empty=False)
    return prompt_and_responses(record, tokenizer, prompt, {"completion": completion})


def _messages(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    messages = read_piece(record, "messages", allow_empty=False)
    if isinstance(messages, str):
        raise record.error("expected a list of messages, got str", "messages")
    last = len(messages) - 1
    if last == 0:
        raise record.error("needs at least one message before the final assistant turn", "messages")
    if messages[last]["role"] != "assistant":
        message = f"the last message must be from the assistant (it is the training target), got {messages[last]['role']!r}"
        raise record.error(message, f"messages[{last}].role")
    if not messages[last]["content"].strip():
        raise record.error("the final assistant turn is empty (it is the training target)", f"messages[{last}].content")
    prompt, completion = split_conversation(record, tokenizer, messages[:last], messages[last:], "messages")
    return {"prompt": prompt, "completion": completion}


def _preference(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    chosen = read_piece(record, "chosen", allow_empty=False)
    rejected = read_piece(record, "rejected", allow_empty=False)
    if "prompt" in record.data:
        prompt = read_piece(record, "prompt")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt = shared_text_prefix(chosen, rejected)
        if not prompt:
            raise record.error("no 'prompt' and chosen/rejected share no common prefix to infer it from", "prompt")
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    elif isinstance(chosen, list) and isinstance(rejected, list):
        prompt = shared_leading_messages(chosen, rejected)
        if not prompt:
            raise record.error("no 'prompt' and chosen/rejected share no leading messages to infer it from", "prompt")
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    else:
        raise record.error(f"expected {type_name(chosen)} like 'chosen', got {type_name(rejected)}", "rejected")
    margin = record.data.get("margin")
    if isinstance(margin, str) and record.path.lower().endswith(".csv"):  # CSV cells are text: "0.5" is a number
        try:
            margin = float(margin)
        except ValueError:
            pass
    if "margin" in record.data and not _is_finite_number(margin):
        raise record.error(f"expected a finite number, got {_short_repr(margin)}", "margin")
    normalised = prompt_and_responses(record, tokenizer, prompt, {"chosen": chosen, "rejected": rejected})
    if "margin" in record.data:
        normalised["margin"] = float(margin)
    if normalised["chosen"] == normalised["rejected"]:
        raise record.error("'chosen' and 'rejected' are identical", "rejected")
    return normalised


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit] + "..."


def _type_and_text(value: Any) -> str:
    return f"str {_short_repr(value)}" if isinstance(value, str) else type_name(value)


def _unpaired(record: Record, tokenizer: PreTrainedTokenizerBase | None) -> dict[str, Any]:
    label = record.data.get("label")
    if not isinstance(label, bool):
        raise record.error(f"expected a bool (true = desirable), got {_type_and_text(label)}", "label")
    return {**_prompt_completion(record, tokenizer), "label": label}


# In detection order: a record is in the first format whose required fields it has.
FORMATS: dict[str, RecordFormat] = {
    spec.name: spec
    for spec in [
        RecordFormat("messages", ("messages",), ("messages",), _messages),
        RecordFormat("preference", ("chosen", "rejected"), ("prompt", "chosen", "rejected"), _preference),
        RecordFormat("unpaired", ("prompt", "completion", "label"), ("prompt", "completion", "label"), _unpaired),
        RecordFormat("prompt_completion", ("prompt", "completion"), ("prompt", "completion"), _prompt_completion),
        RecordFormat("prompt_only", ("prompt",), ("prompt",), _prompt_only),
        RecordFormat("text", ("text",), ("text",), _text),
    ]
}


def _first_match(data: Mapping[str, Any], names: Iterable[str]) -> str | None:
    return next((name for name in names if all(field in data for field in FORMATS[name].required)), None)


def detect_format(record: Record | Mapping[str, Any]) -> str:
    """The name of the format a record is in, judged by its fields (see `FORMATS` for the order)."""
    data = record.data if isinstance(record, Record) else record
    name = _first_match(data, FORMATS)
    if name is None:
        message = f"cannot tell the data format from the fields {sorted(data)}; known formats: {', '.join(FORMATS)}"
        raise record.error(message) if isinstance(record, Record) else DataError(message)
    return name


def _wrong_format_error(record: Record, expected: list[str]) -> DataError:
    """Say which field is missing for the closest expected format, and which format the record looks like."""
    def distance(name: str) -> tuple[int, int]:  # fewest missing fields, then most fields in common
        return sum(f not in record.data for f in FORMATS[name].required), -sum(f in record.data for f in FORMATS[name].fields)

    closest = min(expected, key=distance)
    missing = next(field for field in FORMATS[closest].required if field not in record.data)
    wanted = " or ".join(f"'{name}'" for name in expected)
    detected = _first_match(record.data, FORMATS)
    fields = ", ".join(sorted(record.data))
    if detected is None:
        return record.error(f"missing field '{missing}' (expected {wanted} data; fields found: {fields})", missing)
    message = f"expected {wanted} data, but this record is in the '{detected}' format (fields: {fields})"
    return record.error(f"{message}; missing field '{missing}'", missing)


LONG_PROMPT_POLICIES = ("error", "truncate", "skip")


class LongPrompt(Exception):
    """A record left out by the `skip` policy (counted, not an error)."""


# Pieces a conversational rendering turns into messages: the prompt is the user's turn, responses the assistant's.
_CHAT_ROLES = {"prompt": "user", "completion": "assistant", "chosen": "assistant", "rejected": "assistant"}


def as_chat(data: Mapping[str, Any]) -> dict[str, Any]:
    """A record with its string prompt and responses turned into one-message chat turns (others unchanged).

    A preference record without a prompt keeps its strings: its prompt is their shared prefix.
    """
    if "prompt" not in data or not isinstance(data.get("prompt"), str):
        return dict(data)
    return {key: [{"role": _CHAT_ROLES[key], "content": value}] if key in _CHAT_ROLES and isinstance(value, str) else value
            for key, value in data.items()}


def _fit_prompt(
    record: Record, prompt: str, tokenizer: PreTrainedTokenizerBase, max_length: int | None,
    max_prompt_length: int | None, policy: str,
) -> str:
    """The prompt if it fits (at most `max_prompt_length` tokens, default max_length - 1); else what `policy` says."""
    limit = max_prompt_length if max_prompt_length is not None else max_length - 1
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= limit:
        return prompt
    field = next((name for name in ("prompt", "messages", "chosen") if name in record.data), "prompt")
    if policy == "skip":
        raise LongPrompt(field)
    if policy == "truncate":  # keep the end, where the question and the generation prompt are (TRL's keep_end)
        for keep in range(limit, 0, -1):
            text = tokenizer.decode(ids[-keep:])
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit:
                return text
    if max_prompt_length is not None:
        message = f"the prompt is {len(ids)} tokens, longer than --max-prompt-length={max_prompt_length}"
    elif len(ids) == max_length:
        message = f"the prompt is {len(ids)} tokens and leaves no room for a response in max_length={max_length}"
    else:
        message = f"the prompt is {len(ids)} tokens, longer than max_length={max_length}"
    raise record.error(f"{message} (--on-long-prompt truncate or skip keeps going)", field)


CONTROL_TOKEN_POLICIES = ("allow", "escape", "refuse")


def control_token_texts(tokenizer: PreTrainedTokenizerBase | None) -> list[str]:
    """The texts the tokenizer turns into special (control) tokens, longest first."""
    if tokenizer is None:
        return []
    texts = set(tokenizer.all_special_tokens)
    texts |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    return sorted((t for t in texts if len(t) > 1), key=len, reverse=True)


def _guard_control_tokens(record: Record, tokens: list[str], policy: str) -> Record:
    """The record with control-token texts in its strings escaped, or a DataError for the first (policy "refuse")."""
    def visit(value, field: str):
        if isinstance(value, str):
            found = next((t for t in tokens if t in value), None)
            if found is None:
                return value
            if policy == "refuse":
                raise record.error(f"the text holds the control token {found!r} (--control-tokens escape makes it "
                                   "plain text, allow keeps it a control token)", field)
            for token in tokens:
                value = value.replace(token, token[0] + "\u200b" + token[1:])
            return value
        if isinstance(value, list):
            return [visit(item, field) for item in value]
        if isinstance(value, dict):
            return {key: visit(item, field) for key, item in value.items()}
        return value

    return Record({key: visit(value, key) for key, value in record.data.items()}, record.path, record.line, record.unit)


def normalise_record(
    record: Record, expected: Sequence[str], tokenizer: PreTrainedTokenizerBase | None, max_length: int | None = None,
    *, chat: bool = False, max_prompt_length: int | None = None, on_long_prompt: str = "error",
    control_tokens: str = "allow",
) -> dict[str, Any]:
    """Validate one record against the expected formats and reduce it to plain text (plus its unused fields).

    With `chat`, string prompts and responses are first made one-turn conversations, so they are rendered
    with the tokenizer's chat template exactly as message lists are. `control_tokens`: see the module docstring.
    """
    name = _first_match(record.data, expected)
    if name is None:
        raise _wrong_format_error(record, list(expected))
    if control_tokens != "allow":
        record = _guard_control_tokens(record, control_token_texts(tokenizer), control_tokens)
    source = Record(as_chat(record.data), record.path, record.line, record.unit) if chat else record
    normalised = FORMATS[name].normalise(source, tokenizer)
    if (max_length is not None or max_prompt_length is not None) and "prompt" in normalised:
        normalised["prompt"] = _fit_prompt(record, normalised["prompt"], tokenizer, max_length, max_prompt_length,
                                           on_long_prompt)
    extra = {key: value for key, value in record.data.items() if key not in FORMATS[name].fields}
    return {**extra, **normalised}


def _expected_names(expected: str | Iterable[str]) -> list[str]:
    wanted = {expected} if isinstance(expected, str) else set(expected)
    unknown = wanted - set(FORMATS)
    if unknown or not wanted:
        raise ValueError(f"unknown data format(s) {sorted(unknown)}; known: {', '.join(FORMATS)}")
    return [name for name in FORMATS if name in wanted]  # registry order keeps detection deterministic


def validate(
    records: Sequence[Record],
    expected: str | Iterable[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    max_length: int | None = None,
    chat: bool = False,
    max_prompt_length: int | None = None,
    on_long_prompt: str = "error",
    control_tokens: str = "allow",
) -> list[dict[str, Any]]:
    """Check every record and return them normalised to plain text; raise before any training if any is bad.

    Args:
        records: from `read_records` or `records_from_dicts`.
        expected: the format name(s) the command accepts, e.g. `SFT_FORMATS` or ``"preference"``.
        tokenizer: renders conversational records with its chat template and measures prompts; may be
            None only for plain-text data without a length limit.
        max_length: if given, a prompt must be shorter than this many tokens (room must be left for a response).
        chat: render string prompts and responses with the chat template too (see `as_chat`).
        max_prompt_length: the longest prompt in tokens (default: max_length - 1).
        on_long_prompt: what a longer prompt gets: "error", "truncate" (keep its last tokens) or "skip"
            (the record is left out; the count is printed).
        control_tokens: control-token texts inside the data: "allow" (they are control tokens), "escape"
            (made plain text) or "refuse" (a DataError).

    Raises:
        DataError: for the first bad record, saying how many records failed in total.
    """
    names = _expected_names(expected)
    if on_long_prompt not in LONG_PROMPT_POLICIES:
        raise ValueError(f"on_long_prompt must be one of {', '.join(LONG_PROMPT_POLICIES)}, got {on_long_prompt!r}")
    if control_tokens not in CONTROL_TOKEN_POLICIES:
        raise ValueError(f"control_tokens must be one of {', '.join(CONTROL_TOKEN_POLICIES)}, got {control_tokens!r}")
    if (max_length is not None or max_prompt_length is not None) and tokenizer is None:
        raise ValueError("prompt lengths are measured in tokens, so validate needs a tokenizer")
    normalised, errors, skipped = [], [], 0
    for record in records:
        try:
            normalised.append(normalise_record(record, names, tokenizer, max_length, chat=chat,
                                               max_prompt_length=max_prompt_length, on_long_prompt=on_long_prompt,
                                               control_tokens=control_tokens))
        except LongPrompt:
            skipped += 1
        except DataError as error:
            errors.append(error)
    if errors:
        raise errors[0].with_failure_count(len(errors), len(records))
    if skipped:
        where = records[0].path if records else "<rows>"
        print(f"[tandem] {where}: skipped {skipped} of {len(records)} records whose prompt is longer than "
              f"{max_prompt_length or (max_length or 0) - 1} tokens (--on-long-prompt skip)", flush=True)
        if not normalised:
            raise DataError(f"every record's prompt is too long ({skipped} skipped)", path=where)
    return normalised


def load_examples(
    source: str | os.PathLike | Sequence[dict[str, Any]],
    expected: str | Iterable[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    max_length: int | None = None,
    split: str = "train",
    rows_name: str = "<rows>",
    **options: Any,
) -> list[dict[str, Any]]:
    """Read a data file/folder (or take in-memory rows, named `rows_name` in errors) and `validate` it.

    `options`: `chat`, `max_prompt_length`, `on_long_prompt`, `control_tokens` (see `validate`).
    """
    if isinstance(source, (str, os.PathLike)):
        records = read_records(source, split=split)
    else:
        records = records_from_dicts(source, source=rows_name)
    return validate(records, expected, tokenizer, max_length=max_length, **options)
