"""`tandem serve --engine vllm`: the server's decode batch on vLLM's in-process engine (`vllm.LLM(...).llm_engine`).

The scheduler drives it exactly as it drives `DecodeBatch`: a job joins (`add`: one vLLM request per choice,
queued for the engine's next step), every `step` is one `LLMEngine.step()` (vLLM's own continuous batching
and paged KV cache), and a job that leaves early (its client gone, its deadline passed, the server stopping)
is aborted in the engine at once (`remove`). vLLM decides when a row ends (EOS, the chat turn's end, stop
strings, max_tokens; it stops on the same tokens as `hf`); the text shown is tandem's own, decoded from the
token ids with the same rules as `hf` (stop strings cut off, a possible stop-string start or a broken UTF-8
character held back), so both engines stream the same text for the same tokens. Log-probs are the model's
raw distribution (vLLM's default `raw_logprobs`), as `hf` reports them.

One scheduler drives an engine at a time: a step returns the outputs of every request in the engine.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from tandem.generation.engines import cpu_llm_options, import_vllm, shutdown_llm, write_engine_copy
from tandem.generation.sampling import _stop_ids, end_of_turn_ids
from tandem.serve.engine import ChoiceEvent, Engine, Job, TokenLogprob, _show, first_stop, held_back


@dataclass(eq=False)
class _Request:
    """One choice of a job: one vLLM request."""

    job: Job
    index: int
    request_id: str
    stops: list[str]
    ids: list[int] = field(default_factory=list)  # the visible tokens (a stop token is not)
    sent: str = ""


class VLLMBatch:
    """The requests of the jobs now running in the vLLM engine (see the module docstring)."""

    def __init__(self, engine: VLLMServeEngine, max_rows: int) -> None:
        self.engine, self.max_rows = engine, max_rows
        self.rows: list[_Request] = []
        self._by_id: dict[str, _Request] = {}

    def add(self, job: Job) -> dict[Job, list[ChoiceEvent]]:
        """Queue the job's `n` choices; their first tokens come with the next `step`."""
        stops = [s for s in (job.stop or []) if s]
        prompt = {"prompt_token_ids": list(job.prompt_ids)}
        for index in range(job.n):
            request = _Request(job, index, f"tandem-{uuid.uuid4().hex}", stops)
            # each choice draws from its own seed, as vLLM seeds the choices of one request (seed + index)
            seed = job.seed + index if job.seed is not None else None
            self.engine.llm_engine.add_request(request.request_id, prompt, self.engine.sampling_params(job, seed))
            self.rows.append(request)
            self._by_id[request.request_id] = request
        return {job: []}

    def step(self) -> dict[Job, list[ChoiceEvent]]:
        """One engine step: the new tokens of every running request."""
        events: dict[Job, list[ChoiceEvent]] = {}
        ended, cut_short = [], []
        self.engine.ready_this_thread()
        for output in self.engine.llm_engine.step():
            request = self._by_id.get(output.request_id)
            if request is None:  # aborted since
                continue
            completion = output.outputs[0]
            event = self._event(request, completion)
            events.setdefault(request.job, []).append(event)
            if event.finish_reason is not None:
                ended.append(request)
                if completion.finish_reason is None:
                    cut_short.append(request)
        self._drop(ended, abort=cut_short)
        return events

    def remove(self, job: Job) -> None:
        """Abort a job's requests still in the engine (cancelled, timed out, or the server stopping)."""
        mine = [r for r in self.rows if r.job is job]
        self._drop(mine, abort=mine)

    def _drop(self, requests: list[_Request], abort: list[_Request]) -> None:
        if abort:
            self.engine.llm_engine.abort_request([r.request_id for r in abort])
        for request in requests:
            self._by_id.pop(request.request_id, None)
        self.rows = [r for r in self.rows if r.request_id in self._by_id]

    def _event(self, request: _Request, output) -> ChoiceEvent:
        """The step's event for one request: like `hf`'s, text decoded from all its tokens, cut or held back."""
        tokens = list(output.token_ids)
        logprobs = list(output.logprobs or [])
        if output.finish_reason == "stop" and not isinstance(output.stop_reason, str) and tokens:
            tokens.pop()  # EOS or an end-of-turn token: counted, never shown (as with `hf`)
            logprobs = logprobs[: len(tokens)]
        request.ids += tokens
        entries = [self.engine.logprob_entry(token, step, request.job.logprobs)
                   for token, step in zip(tokens, logprobs)] if request.job.logprobs is not None else []
        text = self.engine.tokenizer.decode(request.ids, skip_special_tokens=True)
        cut = first_stop(text, request.stops)
        finish = output.finish_reason
        if cut is not None:  # vLLM stops there too; should its incremental detokenizer see it later, end here
            text, finish = text[:cut], "stop"
        elif finish is None:
            text = text[: len(text) - held_back(text, request.stops)]
        return ChoiceEvent(request.index, _show(request, text), entries, finish, tokens=len(output.token_ids))


class VLLMServeEngine:
    """vLLM's in-process engine serving one model directory, with the interface of `tandem.serve.Engine`.

    `folder` is a Hugging Face model directory (a GGUF file or a LoRA adapter is first turned into one, see
    `vllm_model_folder`); `tokenizer` the tokenizer `hf` would use, so prompts and chat templates are the
    same. `options` go to `vllm.LLM` (max_model_len, enforce_eager, gpu_memory_utilization, ...).
    """

    mergeable = True  # jobs join a running batch

    def __init__(self, folder: str | Path, tokenizer, dtype: str = "float32", max_rows: int = 32, **options) -> None:
        vllm = import_vllm()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB on CPU (its default, 4, is a lot on 24 GB)
        self.vllm, self.tokenizer = vllm, tokenizer
        set_num_threads = torch.set_num_threads
        gc.collect()  # an engine no longer referenced stops now, not once this one runs (`shutdown_llm`)
        try:
            self.llm = vllm.LLM(model=str(folder), tokenizer=str(folder), dtype=dtype, max_num_seqs=max_rows,
                                **cpu_llm_options(folder, options.get("max_model_len"), options))
        finally:  # vLLM's CPU worker replaces it process-wide with a no-op
            torch.set_num_threads = set_num_threads
        self.threads = torch.get_num_threads()  # what vLLM's worker set for this thread
        self._thread_ready = threading.local()
        self.llm_engine = self.llm.llm_engine
        self.max_positions = self.llm_engine.model_config.max_model_len
        self.eos_ids = _stop_ids(SimpleNamespace(generation_config=_generation_config(folder)), tokenizer,
                                 end_of_turn=False)
        self.end_of_turn_ids = end_of_turn_ids(tokenizer)

    def close(self) -> None:
        """Stop the engine (see `shutdown_llm`); it cannot serve afterwards."""
        self.llm_engine = None
        shutdown_llm(self.__dict__.pop("llm", None))

    # prompts, chat templates and token texts exactly as `hf` makes them
    chat_prompt_ids = Engine.chat_prompt_ids
    prompt_ids = Engine.prompt_ids
    _token_texts = Engine._token_texts

    def batch(self, max_rows: int) -> VLLMBatch:
        return VLLMBatch(self, max_rows)

    def ready_this_thread(self) -> None:
        """Give the calling thread (the scheduler's) vLLM's thread count. OpenMP keeps one per thread: a new
        thread need not start with the count vLLM set, whatever `torch.get_num_threads()` says, and vLLM's CPU
        attention then fails its check "metadata->thread_num == thread_num" (seen with enforce_eager in a process
        whose first thread count was 1: `test_a_batch_decodes_on_a_thread_other_than_the_engines`)."""
        if not getattr(self._thread_ready, "done", False):
            torch.set_num_threads(self.threads)
            self._thread_ready.done = True

    def sampling_params(self, job: Job, seed: int | None):
        """A job's options as vLLM's: one choice, tokens streamed as deltas, the same stop tokens as `hf`."""
        stop_ids = set() if job.ignore_eos else self.eos_ids | (self.end_of_turn_ids if job.chat else set())
        stops = [s for s in (job.stop or []) if s]
        return self.vllm.SamplingParams(
            n=1, temperature=job.temperature, top_p=job.top_p, top_k=job.top_k, max_tokens=job.max_tokens, seed=seed,
            stop=stops or None, stop_token_ids=sorted(stop_ids), ignore_eos=job.ignore_eos, logprobs=job.logprobs,
            detokenize=bool(stops),  # vLLM's own text is needed only to find stop strings; tandem decodes its own
            skip_special_tokens=True, output_kind=self.vllm.sampling_params.RequestOutputKind.DELTA,
        )

    def logprob_entry(self, token: int, step: dict, top: int) -> TokenLogprob:
        """`hf`'s entry from vLLM's {token id: Logprob} of one step (the sampled token and the `top` best)."""
        best = sorted((t for t, lp in step.items() if lp.rank <= top), key=lambda t: step[t].rank)[:top]
        texts = self._token_texts([token, *best])
        return TokenLogprob(token, texts[0], step[token].logprob, [(t, step[i].logprob) for t, i in zip(texts[1:], best)])


def vllm_model_folder(model: str | Path, dtype: torch.dtype) -> Path:
    """A Hugging Face directory vLLM can load for `model`: itself, a GGUF file's converted directory, or (for a
    LoRA adapter) its merged copy in a temporary directory."""
    from tandem.models.loading import load_causal_lm, load_tokenizer, resolve_model

    source = resolve_model(model)
    if source.base is None:
        return source.folder
    folder = Path(tempfile.mkdtemp(prefix="tandem-serve-vllm-"))
    write_engine_copy(load_causal_lm(model, dtype=dtype), load_tokenizer(model), folder)
    return folder


def _generation_config(folder: str | Path):
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder)
    except OSError:  # no generation_config.json: what from_pretrained derives from the model's config
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
