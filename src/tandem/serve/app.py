"""`tandem serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for any tandem or Hugging Face model directory.

    GET  /v1/models              the one served model
    POST /v1/chat/completions    messages rendered with the tokenizer's chat template
    POST /v1/completions         raw text (or token-id) prompts
    GET  /health                 liveness (no key needed)

Both generation endpoints take max_tokens, temperature, top_p, top_k, n, seed, stop (strings, cut from
the output), logprobs (top_logprobs for chat) and stream (server-sent events `data: {...}` ending with
`data: [DONE]`). The decode engine is `--engine hf` (tandem's own batch on a Hugging Face model,
`engine.py`) or `--engine vllm` (vLLM's in-process engine, `vllm_engine.py`); both answer the same
protocol with the same chat templating, text and usage counts. Safety limits, all from `ServeConfig`:

- binds 127.0.0.1 unless told otherwise; with an API key set, every /v1 request needs
  `Authorization: Bearer KEY` (401 otherwise);
- request bodies over `max_body_bytes` get 413; max_tokens over `max_tokens`, n over `max_n`, or a
  prompt that leaves no room in the model's context get 400;
- `max_concurrency` requests generate at once and up to `max_queue` more wait their turn (FIFO);
  beyond that a request gets 429 at once, so a flood never piles up unbounded work. The requests
  generating share one decode batch (continuous batching, `scheduler.py`, up to `max_batch_rows`
  rows), so a short request is not stuck behind a long one;
- a generation still running after `request_timeout` seconds is stopped (504); a client that
  disconnects cancels its generation at the next step; a client that sends its headers or body too
  slowly is cut off after `header_timeout` / `body_timeout` seconds (408 for the body).

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

from contextlib import aclosing, asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tandem.config import registered_name
from tandem.registry import registrar
from tandem.serve.engine import Choice, Engine, Job, TokenLogprob, add_events
from tandem.serve.scheduler import FINISHED, RequestTimeout, Scheduler, ServerStopping
from tandem.serve.protocol import ChatRequest, CompletionRequest, error_body

logger = logging.getLogger("tandem.serve")
API_KEY_ENV = "TANDEM_API_KEY"

SERVE_ENGINES: dict[str, Any] = {}  # name -> function(ServeConfig, **options) returning the scheduler's engine
register_serve_engine = registrar(SERVE_ENGINES, "serve engine")


class ServeConfig(BaseModel):
    """Options of `tandem serve` (and of `create_app`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Path = Field(description="Model to serve: any tandem output, Hugging Face causal LM folder, .gguf file or LoRA adapter folder.")
    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the server local to this machine.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    model_name: str | None = Field(None, description="Model id clients send and /v1/models lists (default: the folder name).")
    api_key: str | None = Field(
        None, min_length=1, description=f"Require 'Authorization: Bearer KEY' on /v1 requests; default from ${API_KEY_ENV} (unset: no key). Prefer ${API_KEY_ENV}: a command line is visible to every user in /proc."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (bytes); larger get 413.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for; more get 400.")
    default_max_tokens: int = Field(64, ge=1, description="Tokens generated when a request gives no max_tokens.")
    max_n: int = Field(8, ge=1, description="Most choices (n) per request.")
    max_prompts: int = Field(16, ge=1, description="Most prompts in one /v1/completions request.")
    max_request_tokens: int = Field(
        8192, ge=1, description="Most tokens one request may ask to generate (prompts x n x max_tokens); more get 400."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests generating at the same time (their rows decode as one batch).")
    max_queue: int = Field(16, ge=0, description="Requests allowed to wait for a free slot; beyond that: 429.")
    max_batch_rows: int = Field(32, ge=1, description="Most rows (choices of all requests) decoding together in one batch.")
    request_timeout: float = Field(300.0, gt=0, allow_inf_nan=False,
                                   description="Seconds a request may wait and generate before it is stopped with 504.")
    header_timeout: float = Field(10.0, gt=0, allow_inf_nan=False,
                                  description="Seconds a client has to send a request's headers before the connection is closed.")
    body_timeout: float = Field(30.0, gt=0, allow_inf_nan=False,
                                description="Seconds a client has to send a request's body before it gets 408.")
    engine: str = Field("hf", description="Decode engine: hf (tandem's continuous batching on the Hugging Face model) or vllm (vLLM's in-process engine; pip install 'tandem[vllm]').")
    device: str | None = Field(None, description="Device to run on (cpu, cuda, cuda:1); default cuda when available, else cpu. --engine vllm runs where its build runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto: bfloat16 on a GPU that has it (float16 on older ones), float32 on CPU.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="uvicorn log level.")
    vllm_max_model_len: int | None = Field(None, ge=16, description="--engine vllm: longest prompt + completion the engine holds (default: the model's own; smaller saves KV-cache memory).")
    vllm_enforce_eager: bool = Field(False, description="--engine vllm: run without compiled graphs (starts faster, no stalls while its compile cache is cold; decodes slower).")
    vllm_gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="--engine vllm on a GPU: fraction of GPU memory the engine may take (vLLM's default 0.9).")

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, value: str) -> str:
        return registered_name(value, SERVE_ENGINES, "serve engine")

    @model_validator(mode="after")
    def _vllm_options_need_vllm(self) -> ServeConfig:
        given = self.vllm_options()
        if given and self.engine != "vllm":
            flags = ", ".join("--vllm-" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags} apply to --engine vllm, not --engine {self.engine}")
        return self

    def vllm_options(self) -> dict:
        """The `vllm.LLM` options given (`--vllm-*`); vLLM's defaults for the rest."""
        return {name: getattr(self, f"vllm_{name}") for name in VLLM_OPTIONS
                if getattr(self, f"vllm_{name}") not in (None, False)}


VLLM_OPTIONS = ("max_model_len", "enforce_eager", "gpu_memory_utilization")  # ServeConfig's vllm_* fields


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


class ClientGone(Exception):
    """The client disconnected before its response was complete."""


class Guard:
    """ASGI middleware: the API key check, and a JSON 500 for any error inside a request (the server keeps serving).

    A plain ASGI middleware rather than `@app.middleware("http")`, whose wrapping hides a client's
    disconnect from the endpoint (and so from cancellation).
    """

    def __init__(self, app, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key is not None and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                body = error_body("invalid or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
                return await JSONResponse(body, status_code=401)(scope, receive, send)
        started = False

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            logger.exception("error while serving %s", scope["path"])
            if not started:
                body = error_body(f"internal server error: {type(error).__name__}: {error}", "server_error")
                await JSONResponse(body, status_code=500)(scope, receive, send)


def load_engine(config: ServeConfig, **options):
    """The decode engine `config.engine` for `config.model`; `options` are that engine's own (vLLM's `LLM` options)."""
    return SERVE_ENGINES[config.engine](config, **options)


@register_serve_engine("hf")
def load_hf_engine(config: ServeConfig) -> Engine:
    import torch

    from tandem.models.loading import load_causal_lm, load_tokenizer

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_causal_lm(config.model, dtype=serving_dtype(config.dtype, device)).to(device)
    return Engine(model, load_tokenizer(config.model))


def serving_dtype(requested: str, device: str):
    """The weights' dtype: `requested`, or for auto the half precision a CUDA device computes fastest in (bf16
    where supported, as vLLM's own "auto" picks for bf16 checkpoints) and float32 elsewhere."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@register_serve_engine("vllm")
def load_vllm_engine(config: ServeConfig, **options):
    """vLLM loading the served model's Hugging Face directory (a GGUF file's converted one, an adapter merged)."""
    import torch

    from tandem.generation.engines import import_vllm
    from tandem.models.loading import load_tokenizer
    from tandem.serve.vllm_engine import VLLMServeEngine, vllm_model_folder

    import_vllm()  # a missing vLLM fails before any conversion
    dtype = serving_dtype(config.dtype, "cuda" if torch.cuda.is_available() else "cpu")
    folder = vllm_model_folder(config.model, dtype)
    return VLLMServeEngine(folder, load_tokenizer(config.model), dtype=str(dtype).removeprefix("torch."), max_rows=config.max_batch_rows,
                           **{**config.vllm_options(), **options})


class ServedModel:
    """The served model and what each endpoint does with a request: read it, make its jobs, check their budget,
    run them on the scheduler and answer. Each step is a method, so a test can reach it without a server."""

    def __init__(self, config: ServeConfig, engine) -> None:
        self.config, self.engine = config, engine
        self.model_id = config.model_name or Path(config.model).name or "model"
        self.created = int(time.time())
        self.scheduler = Scheduler(engine, config.max_batch_rows, config.request_timeout)
        self._admission: Admission | None = None  # made on first use, inside the server's event loop

    def admission(self) -> Admission:
        if self._admission is None:
            self._admission = Admission(self.config.max_concurrency, self.config.max_queue)
        return self._admission

    async def models(self) -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": self.model_id, "object": "model", "created": self.created, "owned_by": "tandem"}]}

    async def chat_completions(self, request: Request):
        parsed = await self.read_request(request, ChatRequest)
        if not getattr(self.engine.tokenizer, "chat_template", None):
            raise ServeError(400, f"model {self.model_id!r} has no chat template; use /v1/completions")
        try:
            messages = [{"role": m.role, "content": m.text()} for m in parsed.messages]
            prompt_ids = self.engine.chat_prompt_ids(messages)
        except Exception as error:  # bad content parts, or the template itself refusing the conversation
            raise ServeError(400, f"cannot apply the chat template: {error}", param="messages") from None
        jobs = [self.make_job(parsed, prompt_ids, chat=True)]
        self.check_budget(jobs)
        return await self.respond(parsed, jobs, "chat.completion", f"chatcmpl-{uuid.uuid4().hex}", request)

    async def completions(self, request: Request):
        parsed = await self.read_request(request, CompletionRequest)
        vocabulary = len(self.engine.tokenizer)
        jobs = []
        if len(parsed.prompts()) > self.config.max_prompts:
            raise ServeError(400, f"{len(parsed.prompts())} prompts exceed this server's limit of "
                             f"{self.config.max_prompts}", param="prompt")
        for prompt in parsed.prompts():
            if isinstance(prompt, list) and any(not 0 <= t < vocabulary for t in prompt):
                raise ServeError(400, f"prompt token ids must lie in [0, {vocabulary})", param="prompt")
            ids = prompt if isinstance(prompt, list) else self.engine.prompt_ids(prompt)
            jobs.append(self.make_job(parsed, ids, chat=False))
        self.check_budget(jobs)
        return await self.respond(parsed, jobs, "text_completion", f"cmpl-{uuid.uuid4().hex}", request)

    async def read_request(self, request: Request, kind: type[BaseModel]):
        return self.parse_request(await self.read_body(request), kind)

    async def read_body(self, request: Request) -> bytes:
        """The request's body, refused with 413 past `max_body_bytes` and with 408 past `body_timeout`."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServeError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        body = bytearray()
        try:
            with anyio.fail_after(self.config.body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise ServeError(413, f"request body exceeds the limit of {limit} bytes")
        except TimeoutError:
            raise ServeError(408, f"the request body was not received within {self.config.body_timeout:g} s",
                             code="request_timeout") from None
        return bytes(body)

    def parse_request(self, body: bytes, kind: type[BaseModel]):
        """The body as a `kind` request for the served model, or a ServeError saying what is wrong with it."""
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
        if parsed.model not in (self.model_id, str(self.config.model)):
            raise ServeError(404, f"model {parsed.model!r} is not served here; this server serves {self.model_id!r}",
                             param="model", code="model_not_found")
        if parsed.n > self.config.max_n:
            raise ServeError(400, f"n={parsed.n} exceeds this server's limit of {self.config.max_n}", param="n")
        return parsed

    def make_job(self, parsed, prompt_ids: list[int], chat: bool) -> Job:
        config, asked = self.config, parsed.requested_tokens
        if asked is not None and asked > config.max_tokens:
            raise ServeError(400, f"max_tokens={asked} exceeds this server's limit of {config.max_tokens}",
                             param="max_tokens")
        room = (self.engine.max_positions or 10**9) - len(prompt_ids)
        if room < 1 or (asked is not None and asked > room):
            raise ServeError(400, f"the prompt has {len(prompt_ids)} tokens and the model's context is "
                             f"{self.engine.max_positions}: no room for {asked or 1} more",
                             param="messages" if chat else "prompt", code="context_length_exceeded")
        if not prompt_ids:
            raise ServeError(400, "the prompt is empty", param="prompt")
        max_tokens = asked if asked is not None else min(config.default_max_tokens, config.max_tokens, room)
        return Job(prompt_ids, n=parsed.n, max_tokens=max_tokens, temperature=parsed.temperature, top_p=parsed.top_p,
                   top_k=max(parsed.top_k, 0), seed=parsed.seed, stop=parsed.stop, logprobs=parsed.logprob_count,
                   chat=chat, ignore_eos=parsed.ignore_eos)

    def check_budget(self, jobs: list[Job]) -> None:
        """One request may not hold the generation slot for unbounded work: prompts x n x max_tokens is capped."""
        asked = sum(job.n * job.max_tokens for job in jobs)
        if asked > self.config.max_request_tokens:
            raise ServeError(400, f"the request asks for up to {asked} generated tokens (prompts x n x max_tokens); "
                             f"this server's limit is {self.config.max_request_tokens}", param="max_tokens")

    async def run_jobs(self, jobs: list[Job], request: Request):
        """Yield (job number, events) as the scheduler decodes `jobs`; a client gone or a caller stopping cancels them."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()

        def sink(number: int):
            return lambda item: loop.call_soon_threadsafe(inbox.put_nowait, (number, item))

        tickets = []

        async def hang_up() -> None:  # the ASGI server says http.disconnect once the client is gone
            while (await request.receive())["type"] != "http.disconnect":
                pass
            for ticket in tickets:
                ticket.cancel()
            inbox.put_nowait((None, ClientGone()))

        watcher = asyncio.create_task(hang_up())
        try:
            for number, job in enumerate(jobs):
                tickets.append(self.scheduler.submit(job, sink(number), request=inbox))
            left = len(jobs)
            while left:
                number, item = await inbox.get()
                if item is FINISHED:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise serve_error_for(item)
                else:
                    yield number, item
        except ServerStopping as error:  # submitted after the scheduler stopped
            raise serve_error_for(error) from None
        finally:
            watcher.cancel()
            for ticket in tickets:
                ticket.cancel()

    async def respond(self, parsed, jobs: list[Job], kind: str, response_id: str, request: Request):
        gate = self.admission()
        gate.enter()
        if parsed.stream:
            return StreamingResponse(self.stream_events(parsed, jobs, kind, response_id, gate, request),
                                     media_type="text/event-stream")
        results = [[Choice() for _ in range(job.n)] for job in jobs]
        try:
            async with gate.slots:
                async with aclosing(self.run_jobs(jobs, request)) as steps:
                    async for number, events in steps:
                        add_events(results[number], events)
        finally:
            gate.leave()
        return completion_body(kind, response_id, self.model_id, jobs, results)

    async def stream_events(self, parsed, jobs: list[Job], kind: str, response_id: str, gate: Admission,
                            request: Request):
        chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"
        head = {"id": response_id, "object": chunk_kind, "created": int(time.time()), "model": self.model_id}

        def event(choices: list[dict], **extra) -> str:
            return "data: " + json.dumps({**head, "choices": choices, **extra}) + "\n\n"

        offsets = [sum(job.n for job in jobs[:k]) for k in range(len(jobs))]
        prompt_tokens = sum(len(job.prompt_ids) * job.n for job in jobs)
        completion_tokens = 0
        try:
            async with gate.slots:
                if kind == "chat.completion":
                    yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None} for i in range(sum(job.n for job in jobs))])
                async with aclosing(self.run_jobs(jobs, request)) as steps:
                    async for number, events in steps:
                        completion_tokens += sum(e.tokens for e in events)
                        yield event([format_delta(kind, offsets[number] + e.index,
                                                  Choice(e.text, e.logprobs, e.finish_reason), jobs[number].logprobs)
                                     for e in events])
            if parsed.include_usage:
                yield event([], usage=usage(prompt_tokens, completion_tokens))
        except ServeError as error:  # the stream has begun: the error travels as an event
            yield "data: " + json.dumps(error.body) + "\n\n"
        except Exception as error:
            logger.exception("error while streaming")
            yield "data: " + json.dumps(error_body(f"internal server error: {type(error).__name__}: {error}",
                                                   "server_error")) + "\n\n"
        finally:
            gate.leave()
        yield "data: [DONE]\n\n"


def serve_error_for(item: BaseException) -> BaseException:
    """What a scheduler's failure becomes for the client: a ServeError where it has a status of its own."""
    if isinstance(item, ClientGone):
        return ServeError(499, "the client closed the request")
    if isinstance(item, RequestTimeout):
        return ServeError(504, str(item), "server_error", code="timeout")
    if isinstance(item, ServerStopping):
        return ServeError(503, str(item), "server_error")
    return item


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(kind: str, response_id: str, model_id: str, jobs: list[Job], results: list[list[Choice]]) -> dict:
    """The whole (not streamed) answer: every job's choices numbered in order, and the token counts."""
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for job, job_choices in zip(jobs, results):
        prompt_tokens += len(job.prompt_ids) * job.n
        for choice in job_choices:
            completion_tokens += choice.tokens
            choices.append(format_choice(kind, len(choices), choice, job.logprobs))
    return {"id": response_id, "object": kind, "created": int(time.time()), "model": model_id, "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens)}


async def serve_error_response(request: Request, error: ServeError) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status)


async def http_error_response(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = "not_found" if error.status_code == 404 else None
    return JSONResponse(error_body(str(error.detail), code=code), status_code=error.status_code)


async def validation_error_response(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body(str(error)), status_code=400)


async def health() -> dict[str, str]:
    return {"status": "ok"}


def add_routes(app: FastAPI, served: ServedModel) -> None:
    """The endpoints, and OpenAI's error JSON for every error FastAPI raises itself."""
    app.add_exception_handler(ServeError, serve_error_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.get("/health")(health)
    app.get("/v1/models")(served.models)
    app.post("/v1/chat/completions")(served.chat_completions)
    app.post("/v1/completions")(served.completions)


def create_app(config: ServeConfig, engine=None) -> FastAPI:
    """The FastAPI app serving `config.model` (or an already built `engine`)."""
    served = ServedModel(config, engine or load_engine(config))
    api_key = config.api_key if config.api_key is not None else os.environ.get(API_KEY_ENV) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        served.scheduler.stop()

    app = FastAPI(title="tandem serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.scheduler, app.state.config = served.scheduler, config
    app.add_middleware(Guard, api_key=api_key)
    add_routes(app, served)
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
