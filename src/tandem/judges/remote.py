"""A judge behind any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp, hosted APIs, `tandem serve`).

Questions are sent concurrently with one `httpx.AsyncClient` (at most `max_concurrency` in flight);
each request has a timeout and is retried with exponential backoff (honouring `Retry-After`) on
timeouts, connection errors, 429 and 5xx replies. Other 4xx replies are not retried: they are
reported as "client_error" (except a server that rejects `logprobs`, which is then asked without).

The verdict is read from `top_logprobs` at the token holding the answer label when the server returns
them (method "logprobs"), else parsed from the text (method "text"); a reply without a label is
"unparsable", one that is not a chat completion is "bad_response". The API key comes from the
environment variable `api_key_env` (default `OPENAI_API_KEY`) unless given.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from typing import Any

import httpx

from tandem.judges.base import Question, TemplateJudge, Verdict, unusable
from tandem.judges.reading import (
    expected_label_value,
    find_verdict,
    label_probabilities_from_top_logprobs,
    normalise_token,
    token_at_offset,
)

RETRY_STATUS = {429, 500, 502, 503, 504}


def run_coroutine(coroutine):
    """Run `coroutine` to completion from synchronous code, even when an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class OpenAIJudge(TemplateJudge):
    """A template judge asking a chat model over HTTP.

    Args:
        base_url: the API root, e.g. "http://127.0.0.1:8000/v1" (requests go to `{base_url}/chat/completions`).
        model: the model name the server expects.
        api_key: the key; None reads `api_key_env` (no key sent when that is unset too).
        timeout: seconds allowed per request attempt.
        max_retries: further attempts after a retryable failure.
        backoff: first retry delay in seconds, doubled each attempt (with up to 10% jitter), at most `max_backoff`.
        max_concurrency: requests in flight at once.
        temperature: sampling temperature of the judge (0: greedy).
        top_logprobs: alternatives per token to ask for; 0 never asks for log-probs.
        answer_max_tokens, cot_max_tokens: reply length without / with chain-of-thought.
        extra_body: more fields sent with every request (e.g. {"seed": 0}).
        **options: `TemplateJudge` / `Judge` options (templates, cot, cache, examples, on_unusable, both_orders, calibration, name).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_concurrency: int = 8,
        temperature: float = 0.0,
        top_logprobs: int = 20,
        answer_max_tokens: int = 16,
        cot_max_tokens: int = 512,
        extra_body: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("max_concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.identity = f"openai:{self.base_url}:{model}:t={temperature}"
        options.setdefault("name", f"openai:{model}@{self.base_url}")
        super().__init__(**options)
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.max_concurrency = max_concurrency
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.answer_max_tokens, self.cot_max_tokens = answer_max_tokens, cot_max_tokens
        self.extra_body = dict(extra_body or {})
        self.logprobs_supported = top_logprobs > 0
        self._random = random.Random(0)  # jitter only; seeded so runs repeat

    def _ask(self, questions: list[Question]) -> list[Verdict]:
        return run_coroutine(self.ask_async(questions))

    async def ask_async(self, questions: list[Question]) -> list[Verdict]:
        """Ask all questions concurrently (at most `max_concurrency` at once); one verdict each, in order."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limit = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, headers=headers, limits=limits) as client:

            async def one(question: Question) -> Verdict:
                async with limit:
                    return await self._ask_one(client, question)

            return list(await asyncio.gather(*(one(q) for q in questions)))

    def payload(self, question: Question) -> dict[str, Any]:
        """The JSON body of the request for one question."""
        body = {
            "model": self.model, "messages": question.messages, "temperature": self.temperature,
            "max_tokens": self.cot_max_tokens if question.cot else self.answer_max_tokens, **self.extra_body,
        }
        if self.logprobs_supported:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        return body

    async def _ask_one(self, client: httpx.AsyncClient, question: Question) -> Verdict:
        url = f"{self.base_url}/chat/completions"
        failure, attempt = unusable("exception"), 0
        while attempt <= self.max_retries:
            asked_logprobs = self.logprobs_supported
            wait = None
            try:
                response = await client.post(url, json=self.payload(question))
            except httpx.TimeoutException as error:
                failure = unusable("timeout", detail=f"no reply within {self.timeout}s ({type(error).__name__})")
            except httpx.TransportError as error:
                failure = unusable("connection_error", detail=f"{type(error).__name__}: {error}")
            else:
                if response.status_code == 200:
                    return read_chat_completion(response.text, question)
                detail = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code in RETRY_STATUS:
                    reason = "rate_limited" if response.status_code == 429 else "server_error"
                    failure = unusable(reason, detail=detail)
                    wait = _retry_after(response)
                elif asked_logprobs and response.status_code in (400, 422) and "logprob" in response.text.lower():
                    self.logprobs_supported = False  # this server does not do log-probs: parse text from now on
                    continue  # asked again at once, not counted as an attempt
                else:
                    return unusable("client_error", response.text[:2000], detail)
            attempt += 1
            if attempt <= self.max_retries:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 + 0.1 * self._random.random())
                await asyncio.sleep(min(self.max_backoff, wait) if wait is not None else delay)
        return Verdict(None, failure.reason, failure.raw, failure.method,
                       f"{failure.detail} (after {self.max_retries + 1} attempts)")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def read_chat_completion(body: str, question: Question) -> Verdict:
    """The verdict in a chat-completion reply body: from `top_logprobs` at the label token when present, else the text."""
    try:
        choice = json.loads(body)["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message content is not text")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
        return unusable("bad_response", body[:2000], f"not a chat completion ({type(error).__name__}: {error})")
    found = find_verdict(text, question.labels, question.verdict_prefix)
    if found is None:
        return unusable("unparsable", text, f"no answer label {question.labels} after {question.verdict_prefix!r}", "text")
    label, offset = found
    probabilities = _label_probabilities(choice.get("logprobs"), text, offset, label, question.labels)
    if probabilities is not None:
        value, mass = expected_label_value(probabilities, question.values)
        if value is not None:
            return Verdict(value, raw=text, method="logprobs", detail=f"label mass {mass:.4g} among top log-probs")
    return Verdict(question.values[question.labels.index(label)], raw=text, method="text")


def _label_probabilities(logprobs: Any, text: str, offset: int, label: str, labels: list[str]) -> list[float] | None:
    """Label probabilities at the token where the written label starts, or None when they cannot be trusted."""
    try:
        content = logprobs["content"]
        tokens = [entry["token"] for entry in content]
    except (TypeError, KeyError):
        return None
    if "".join(tokens) != text:  # the tokens do not spell the text: offsets would be wrong
        return None
    index = token_at_offset(tokens, offset)
    if index is None or normalise_token(tokens[index]) != label:  # a label spread over tokens ("1", "0"): use text
        return None
    entry = content[index]
    top = [(alt.get("token", ""), alt.get("logprob")) for alt in entry.get("top_logprobs") or []]
    if not any(normalise_token(token) == label for token, _ in top):
        top.append((entry["token"], entry.get("logprob")))
    return label_probabilities_from_top_logprobs(top, labels)
