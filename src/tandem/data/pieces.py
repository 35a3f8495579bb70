"""Prompts and responses ("pieces"): plain text or chat messages, checked, and rendered with a chat template.

A conversational prompt renders as ``template(prompt_messages, add_generation_prompt=True)``; its
response is the rest of ``template(prompt_messages + response_messages)``, which must start with the
prompt. This rule works for any template, including ones that change earlier turns' rendering.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PreTrainedTokenizerBase

from tandem.data.errors import type_name
from tandem.data.io import Record

ALLOWED_ROLES = ("system", "user", "assistant", "tool")

Messages = list[dict[str, Any]]
Piece = str | Messages  # a prompt or a response: plain text or chat messages


def read_piece(record: Record, field: str, allow_empty: bool = True) -> Piece:
    """The value of `field`, checked to be a string or a well-formed list of chat messages."""
    if field not in record.data:
        raise record.error(f"missing field '{field}'", field)
    value = record.data[field]
    if isinstance(value, str):
        pass
    elif isinstance(value, list):
        for index, message in enumerate(value):
            check_message(record, f"{field}[{index}]", message)
    else:
        raise record.error(f"expected a string or a list of messages, got {type_name(value)}", field)
    if not allow_empty and len(value) == 0:
        raise record.error("must not be empty", field)
    return value


def check_message(record: Record, field: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise record.error(f"expected a message object with 'role' and 'content', got {type_name(message)}", field)
    role = message.get("role")
    if role not in ALLOWED_ROLES:
        allowed = ", ".join(ALLOWED_ROLES)
        raise record.error(f"unknown role {role!r}; allowed roles: {allowed}", f"{field}.role")
    if message.get("content") is None:
        raise record.error("message without content", f"{field}.content")
    if not isinstance(message["content"], str):
        raise record.error(f"expected string content, got {type_name(message['content'])}", f"{field}.content")


def render_chat(record: Record, tokenizer: PreTrainedTokenizerBase | None, messages: Messages, field: str, **kwargs) -> str:
    if tokenizer is None:
        raise ValueError("conversational data needs a tokenizer (with a chat template) to render it")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as error:  # templates raise their own errors (e.g. roles that do not alternate)
        raise record.error(f"could not apply the chat template: {error}", field) from None


def split_conversation(
    record: Record, tokenizer: PreTrainedTokenizerBase | None, prompt: Messages, response: Messages, field: str
) -> tuple[str, str]:
    """Render prompt and prompt+response with the chat template; the response text is what the prompt leaves."""
    prompt_text = render_chat(record, tokenizer, prompt, field, add_generation_prompt=True)
    full_text = render_chat(record, tokenizer, prompt + response, field)
    if not full_text.startswith(prompt_text):
        raise record.error("the chat template does not render the prompt as the start of the full conversation", field)
    response_text = full_text[len(prompt_text) :]
    if not response_text:
        raise record.error("renders to empty text with the chat template", field)
    return prompt_text, response_text


def prompt_and_responses(
    record: Record, tokenizer: PreTrainedTokenizerBase | None, prompt: Piece, responses: dict[str, Piece]
) -> dict[str, str]:
    """Reduce a prompt and its responses (all plain text, or all messages) to {"prompt": ..., field: text, ...}."""
    if isinstance(prompt, list) and not prompt:
        raise record.error("a conversational prompt needs at least one message", "prompt")
    normalised: dict[str, str] = {}
    for field, response in responses.items():
        if len(response) == 0:
            raise record.error("must not be empty", field)
        if isinstance(response, str) != isinstance(prompt, str):
            kind = "a string" if isinstance(prompt, str) else "a list of messages"
            raise record.error(f"expected {kind} like the prompt, got {type_name(response)}", field)
        if isinstance(prompt, str):
            normalised["prompt"], normalised[field] = prompt, response
        else:
            normalised["prompt"], normalised[field] = split_conversation(record, tokenizer, prompt, response, field)
    return normalised


def shared_text_prefix(first: str, second: str) -> str:
    """The longest common prefix of two strings, cut back to before its last whitespace (so responses start a word)."""
    common = os.path.commonprefix([first, second])
    cut = max((index for index, char in enumerate(common) if char.isspace()), default=0)
    return common[:cut]


def shared_leading_messages(first: Messages, second: Messages) -> Messages:
    """The messages two conversations start with in common."""
    count = 0
    while count < min(len(first), len(second)) and first[count] == second[count]:
        count += 1
    return first[:count]
