"""`tandem serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for any tandem or Hugging Face model directory.

    GET  /v1/models              the one served model
    POST /v1/chat/completions    messages rendered with the tokenizer's chat template
    POST /v1/completions         raw text (or token-id) prompts
    GET  /health                 liveness (no key needed)

Both generation endpoints take max_tokens, temperature, top_p, n, seed, stop (strings, cut from the
output), logprobs (top_logprobs for chat) and stream (server-sent events `data: {...}` ending with
`data: [DONE]`). Safety limits, all from `ServeConfig`:

- binds 127.0.0.1 unless told otherwise; with an API key set, every /v1 request needs
  `Authorization: Bearer KEY` (401 otherwise);
- request bodies over `max_body_bytes` get 413; max_tokens over `max_tokens`, n over `max_n`, or a
  prompt that leaves no room in the model's context get 400;
- `max_concurrency` requests generate at once and up to `max_queue` more wait their turn (FIFO);
  beyond that a request gets 429 at once, so a flood never piles up unbounded work.

Every error is OpenAI's JSON `{"error": {"message", "type", "param", "code"}}`; a bad request never
stops the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tandem.serve.engine import Choice, Engine, TokenLogprob
from tandem.serve.protocol import ChatRequest, CompletionRequest, error_body

logger = logging.getLogger("tandem.serve")
API_KEY_ENV = "TANDEM_API_KEY"


class ServeConfig(BaseModel):
    """Options of `tandem serve` (and of `create_app`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Path = Field(description="Model to serve: any tandem output, Hugging Face causal LM folder, .gguf file or LoRA adapter folder.")
    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the server local to this machine.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    model_name: str | None = Field(None, description="Model id clients send and /v1/models lists (default: the folder name).")
    api_key: str | None = Field(
        None, min_length=1, description=f"Require 'Authorization: Bearer KEY' on /v1 requests; default from ${API_KEY_ENV} (unset: no key)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (bytes); larger get 413.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for; more get 400.")
    default_max_tokens: int = Field(64, ge=1, description="Tokens generated when a request gives no max_tokens.")
    max_n: int = Field(8, ge=1, description="Most choices (n) per request.")
    max_prompts: int = Field(16, ge=1, description="Most prompts in one /v1/completions request.")
    max_request_tokens: int = Field(
        8192, ge=1, description="Most tokens one request may ask to generate (prompts x n x max_tokens); more get 400."
    )
    max_concurrency: int = Field(1, ge=1, description="Requests generating at the same time.")
    max_queue: int = Field(16, ge=0, description="Requests allowed to wait for a free slot; beyond that: 429.")
    device: str | None = Field(None, description="Device to run on (cpu, cuda, cuda:1); default cuda when available, else cpu.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="uvicorn log level.")


class ServeError(Exception):
    """A request the server refuses: becomes an OpenAI error response with `status`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


class Admission:
    """At most `slots` requests generate at once, `queue` more wait; `enter` refuses the rest with 429."""

    def __init__(self, slots: int, queue: int) -> None:
        self.limit = slots + queue
        self.admitted = 0
        self.slots = asyncio.Semaphore(slots)

    def enter(self) -> None:
        if self.admitted >= self.limit:
            raise ServeError(429, f"server busy: {self.admitted} requests running or queued; retry later",
                             "rate_limit_error", code="rate_limit_exceeded")
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1


def load_engine(config: ServeConfig) -> Engine:
    import torch

    from tandem.models.loading import load_causal_lm, load_tokenizer

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_causal_lm(config.model, dtype=getattr(torch, config.dtype)).to(device)
    return Engine(model, load_tokenizer(config.model))


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app serving `config.model` (or an already built `engine`)."""
    engine = engine or load_engine(config)
    model_id = config.model_name or Path(config.model).name or "model"
    api_key = config.api_key if config.api_key is not None else os.environ.get(API_KEY_ENV) or None
    created = int(time.time())
    app = FastAPI(title="tandem serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.admission = None  # made on first use, inside the server's event loop

    def admission() -> Admission:
        if app.state.admission is None:
            app.state.admission = Admission(config.max_concurrency, config.max_queue)
        return app.state.admission

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, error: ServeError) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(error_body(str(error.detail), code=code), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        """The API key check, and a JSON 500 for any error inside a request (caught here, the connection stays usable)."""
        if api_key is not None and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return JSONResponse(
                    error_body("invalid or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"),
                    status_code=401,
                )
        try:
            return await call_next(request)
        except Exception as error:
            logger.exception("error while serving %s", request.url.path)
            return JSONResponse(error_body(f"internal server error: {type(error).__name__}: {error}", "server_error"), 500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "tandem"}]}

    async def read_request(request: Request, kind: type[BaseModel]):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise ServeError(413, f"request body of {declared} bytes exceeds the limit of {config.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                raise ServeError(413, f"request body exceeds the limit of {config.max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ServeError(400, f"request body is not valid JSON: {error}") from None
        except RecursionError:
            raise ServeError(400, "request body is nested too deeply") from None
        if not isinstance(data, dict):
            raise ServeError(400, f"request body must be a JSON object, got {type(data).__name__}")
        try:
            parsed = kind.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            param = ".".join(map(str, first["loc"])) or None
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            raise ServeError(400, f"invalid request: {problems}", param=param) from None
        if parsed.model not in (model_id, str(config.model)):
            raise ServeError(404, f"model {parsed.model!r} is not served here; this server serves {model_id!r}",
                             param="model", code="model_not_found")
        if parsed.n > config.max_n:
            raise ServeError(400, f"n={parsed.n} exceeds this server's limit of {config.max_n}", param="n")
        return parsed

    def generation_options(request, prompt_ids: list[int], chat: bool) -> dict[str, Any]:
        asked = request.requested_tokens
        if asked is not None and asked > config.max_tokens:
            raise ServeError(400, f"max_tokens={asked} exceeds this server's limit of {config.max_tokens}", param="max_tokens")
        room = (engine.max_positions or 10**9) - len(prompt_ids)
        if room < 1 or (asked is not None and asked > room):
            raise ServeError(400, f"the prompt has {len(prompt_ids)} tokens and the model's context is {engine.max_positions}: "
                             f"no room for {asked or 1} more", param="messages" if chat else "prompt",
                             code="context_length_exceeded")
        if not prompt_ids:
            raise ServeError(400, "the prompt is empty", param="prompt")
        max_tokens = asked if asked is not None else min(config.default_max_tokens, config.max_tokens, room)
        return dict(n=request.n, max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
                    seed=request.seed, stop=request.stop, logprobs=request.logprob_count, chat=chat)

    def check_budget(jobs) -> None:
        """One request may not hold the generation slot for unbounded work: prompts x n x max_tokens is capped."""
        asked = sum(options["n"] * options["max_tokens"] for _, options in jobs)
        if asked > config.max_request_tokens:
            raise ServeError(400, f"the request asks for up to {asked} generated tokens (prompts x n x max_tokens); "
                             f"this server's limit is {config.max_request_tokens}", param="max_tokens")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        parsed = await read_request(request, ChatRequest)
        if not getattr(engine.tokenizer, "chat_template", None):
            raise ServeError(400, f"model {model_id!r} has no chat template; use /v1/completions")
        try:
            messages = [{"role": m.role, "content": m.text()} for m in parsed.messages]
            prompt_ids = engine.chat_prompt_ids(messages)
        except Exception as error:  # bad content parts, or the template itself refusing the conversation
            raise ServeError(400, f"cannot apply the chat template: {error}", param="messages") from None
        jobs = [(prompt_ids, generation_options(parsed, prompt_ids, chat=True))]
        check_budget(jobs)
        return await respond(parsed, jobs, "chat.completion", f"chatcmpl-{uuid.uuid4().hex}")

    @app.post("/v1/completions")
    async def completions(request: Request):
        parsed = await read_request(request, CompletionRequest)
        vocabulary = len(engine.tokenizer)
        jobs = []
        if len(parsed.prompts()) > config.max_prompts:
            raise ServeError(400, f"{len(parsed.prompts())} prompts exceed this server's limit of {config.max_prompts}",
                             param="prompt")
        for prompt in parsed.prompts():
            if isinstance(prompt, list) and any(not 0 <= t < vocabulary for t in prompt):
                raise ServeError(400, f"prompt token ids must lie in [0, {vocabulary})", param="prompt")
            ids = prompt if isinstance(prompt, list) else engine.prompt_ids(prompt)
            jobs.append((ids, generation_options(parsed, ids, chat=False)))
        check_budget(jobs)
        return await respond(parsed, jobs, "text_completion", f"cmpl-{uuid.uuid4().hex}")

    async def respond(parsed, jobs, kind: str, response_id: str):
        gate = admission()
        gate.enter()
        if parsed.stream:
            return StreamingResponse(stream_events(parsed, jobs, kind, response_id, gate), media_type="text/event-stream")
        try:
            async with gate.slots:
                results = [await anyio.to_thread.run_sync(lambda j=job: engine.complete(j[0], **j[1])) for job in jobs]
        finally:
            gate.leave()
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for (ids, options), job_choices in zip(jobs, results):
            prompt_tokens += len(ids) * options["n"]
            for choice in job_choices:
                completion_tokens += choice.tokens
                choices.append(format_choice(kind, len(choices), choice, options["logprobs"]))
        return {
            "id": response_id, "object": kind, "created": int(time.time()), "model": model_id, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def stream_events(parsed, jobs, kind: str, response_id: str, gate: Admission):
        chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"
        head = {"id": response_id, "object": chunk_kind, "created": int(time.time()), "model": model_id}

        def event(choices: list[dict], **extra) -> str:
            return "data: " + json.dumps({**head, "choices": choices, **extra}) + "\n\n"

        prompt_tokens = completion_tokens = 0
        try:
            async with gate.slots:
                offset = 0
                for ids, options in jobs:
                    prompt_tokens += len(ids) * options["n"]
                    if kind == "chat.completion":
                        yield event([{"index": offset + i, "delta": {"role": "assistant", "content": ""},
                                      "logprobs": None, "finish_reason": None} for i in range(options["n"])])
                    steps = engine.stream(ids, **options)
                    while (events := await anyio.to_thread.run_sync(next, steps, None)) is not None:
                        completion_tokens += len(events)
                        choices = [format_delta(kind, offset + e.index, Choice(e.text, e.logprobs, e.finish_reason),
                                                options["logprobs"]) for e in events]
                        if choices:
                            yield event(choices)
                    offset += options["n"]
            if parsed.include_usage:
                yield event([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                       "total_tokens": prompt_tokens + completion_tokens})
            yield "data: [DONE]\n\n"
        finally:
            gate.leave()

    return app


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    def item(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]} for e in entries],
            "refusal": None}


def completion_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(entry.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries], "text_offset": offsets}


def format_choice(kind: str, index: int, choice: Choice, logprobs: int | None) -> dict[str, Any]:
    if kind == "chat.completion":
        return {"index": index, "message": {"role": "assistant", "content": choice.text, "refusal": None},
                "logprobs": chat_logprobs(choice.logprobs) if logprobs is not None else None,
                "finish_reason": choice.finish_reason}
    return {"index": index, "text": choice.text,
            "logprobs": completion_logprobs(choice.logprobs) if logprobs is not None else None,
            "finish_reason": choice.finish_reason}


def format_delta(kind: str, index: int, choice: Choice, logprobs: int | None) -> dict[str, Any]:
    if kind == "chat.completion":
        delta = {"content": choice.text} if choice.text or not choice.finish_reason else {}
        return {"index": index, "delta": delta,
                "logprobs": chat_logprobs(choice.logprobs) if logprobs is not None else None,
                "finish_reason": choice.finish_reason}
    return format_choice(kind, index, choice, logprobs)
