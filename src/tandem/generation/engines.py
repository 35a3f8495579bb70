"""Generation engines behind one interface: Hugging Face `generate` (`hf`) or an in-process vLLM engine (`vllm`).

An engine turns prompts into a `RolloutBatch` for RL (right-padded prompt + completion rows, the layout the
training forward uses, with each sampled token's log-prob under the sampling distribution) or into `Samples`
for everything else that generates (evaluation, judges, AI feedback, preference pairs, agents' LM backends:
`sample`, the same contract as `tandem.generation.sample`), and, when it holds its own copy of the weights,
takes the policy's new weights after each update (`sync`). An engine is made from a loaded model or straight
from a model path (a judge's or teacher's directory: vLLM then reads it where it is). vLLM (Kwon et al. 2023,
"Efficient memory management for large language model serving with PagedAttention") is what TRL, OpenRLHF
and verl sample with; its log-probs come from other kernels than the training forward's, which the online
trainer measures every step and can correct for (`tandem.algorithms.importance`).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
from pydantic import BaseModel, Field, field_validator

from tandem.config import registered_name
from tandem.data import pad_prompt_response_batch
from tandem.generation.rollout import RolloutBatch, SampledRow, SamplingConfig, rollout, sample_ids
from tandem.generation.sampling import Samples, _stop_ids, sample, stop_ids
from tandem.registry import registrar

VLLM_MISSING = ("--engine vllm needs vLLM: pip install 'tandem[vllm]' (the CPU build; on a GPU machine "
                "pip install 'tandem[vllm-gpu]')")


class EngineUnavailable(ImportError):
    """The engine's package is not installed (the message says what to install)."""


class RolloutEngine(Protocol):
    owns_weights: bool  # a copy of its own, which `sync` refreshes (False: it generates with the model itself)
    tokenizer: object

    def rollout(self, prompts: list[str], config: SamplingConfig, columns: dict[str, list] | None = None,
                sample_keys: torch.Tensor | None = None) -> RolloutBatch: ...

    def sample_ids(self, prompt_ids: list[list[int]], config: SamplingConfig,
                   sample_keys: torch.Tensor | None = None) -> list[SampledRow]:
        """One continuation of each token-id prompt (multi-turn rollouts append exactly the sampled ids)."""

    def sample(self, prompts: list[str], max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
               batch_size: int = 64, seed: int | None = None) -> Samples:
        """`tandem.generation.sample` on this engine: completions end at the first stop token (kept)."""

    def sync(self, model) -> None:
        """Take `model`'s current weights (after an optimizer step), awake again if `sleep` put it to sleep."""

    def sleep(self) -> None:
        """Free the device memory the engine holds until the next `sync` or generation (the update needs it)."""

    def close(self) -> None:
        """Stop the engine and free what it holds; it cannot generate afterwards."""


ROLLOUT_ENGINES: dict[str, type] = {}
register_engine = registrar(ROLLOUT_ENGINES, "rollout engine")


def make_engine(name: str, model, tokenizer=None, **options) -> RolloutEngine:
    """The engine `name` for `model`: a loaded model (with its `tokenizer`) or a model path (a directory, a .gguf
    file or a LoRA adapter; its tokenizer by default). Options: that engine's keyword arguments."""
    if name not in ROLLOUT_ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; choose one of: {', '.join(sorted(ROLLOUT_ENGINES))}")
    if tokenizer is None and not isinstance(model, (str, Path)):
        raise ValueError("an engine made from a loaded model needs its tokenizer")
    return ROLLOUT_ENGINES[name](model, tokenizer, **options)


def engine_for(name: str, model, tokenizer, source: str | Path | None = None, **options) -> RolloutEngine:
    """The engine `name` for an already loaded `model`; one that holds its own copy of the weights (vLLM) starts
    from `source`, the path the model was loaded from, instead of from a copy written out."""
    owns = getattr(ROLLOUT_ENGINES.get(name), "owns_weights", False)
    if owns and source is not None:
        return make_engine(name, source, **options)
    return make_engine(name, model, tokenizer, **options)


def as_engine(engine: str | RolloutEngine, model, tokenizer=None, **options) -> RolloutEngine:
    """`engine` itself when it is one (a caller sharing one engine between stages), else `make_engine(engine, model, ...)`."""
    return make_engine(engine, model, tokenizer, **options) if isinstance(engine, str) else engine


ENGINE_MEMORY_HELP = ("Share of the GPU's memory a vLLM engine may take (vLLM's gpu_memory_utilization; default: 0.9 of "
                      "what is free when it starts, less what the trainer's update will still allocate, so the "
                      "trainer and a second engine fit). Ignored on CPU and by hf.")


def free_memory_share(reserve_bytes: float = 0.0, headroom: float = 0.9) -> float:
    """vLLM's `gpu_memory_utilization` from the memory free now: `headroom` of it, less `reserve_bytes` that the
    trainer will allocate later (gradients, optimizer states), as a share of the device's total."""
    free, total = torch.cuda.mem_get_info()
    share = headroom * (free - reserve_bytes) / total
    if share < 0.02:
        raise RuntimeError(f"a vLLM engine needs GPU memory: {free / 2**30:.1f} GiB free of {total / 2**30:.1f}, "
                           f"{reserve_bytes / 2**30:.1f} GiB kept for the update; set --engine-memory or free some")
    return round(share, 3)


def gpu_llm_options(memory: float | None, reserve_bytes: float, options: dict) -> dict:
    """`vllm.LLM` options beside a trainer on one GPU, as TRL and verl colocate: a memory budget
    (`gpu_memory_utilization`: `memory`, default `free_memory_share`) and sleep mode, so the engine gives its
    weights and KV cache back during the update (`VLLMEngine.sleep`) and takes them again before the weight sync."""
    options = dict(options)
    options.setdefault("gpu_memory_utilization", memory if memory is not None else free_memory_share(reserve_bytes))
    options.setdefault("enable_sleep_mode", True)
    return options


class EngineOptions(BaseModel):
    """The `--engine` option of a command that generates (mixed into its config)."""

    engine: str = Field("hf", description="Generation engine: hf (Hugging Face generate) or vllm (an in-process vLLM engine, started once per model; pip install 'tandem[vllm]').")
    engine_memory: float | None = Field(None, gt=0, lt=1, description=ENGINE_MEMORY_HELP)

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, value: str) -> str:
        return registered_name(value, ROLLOUT_ENGINES, "engine")


@register_engine("hf")
class HFEngine:
    """`generate` on the training model itself (no copy, nothing to sync); `autocast` is the update's precision."""

    owns_weights = False

    def __init__(self, model, tokenizer=None, autocast=nullcontext, **_engine_options):  # dtype, seed: vLLM's
        if isinstance(model, (str, Path)):
            from tandem.models.loading import load_causal_lm, load_tokenizer

            tokenizer, model = tokenizer or load_tokenizer(model), load_causal_lm(model)
        self.model, self.tokenizer, self.autocast = model, tokenizer, autocast

    def rollout(self, prompts, config, columns=None, sample_keys=None) -> RolloutBatch:
        with self.autocast():
            return rollout(self.model, self.tokenizer, prompts, config, columns, sample_keys=sample_keys)

    def sample_ids(self, prompt_ids: list[list[int]], config: SamplingConfig, sample_keys=None) -> list[SampledRow]:
        """One continuation of each token-id prompt (a multi-turn episode's next turn), in one `generate` call."""
        with self.autocast():
            return sample_ids(self.model, self.tokenizer, prompt_ids, config, sample_keys)

    def sample(self, prompts, max_new_tokens=32, temperature=0.0, top_p=1.0, batch_size=64, seed=None) -> Samples:
        with self.autocast():
            return sample(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, batch_size=batch_size, seed=seed)

    def sync(self, model) -> None:
        pass

    def sleep(self) -> None:
        pass

    def close(self) -> None:
        pass


def import_vllm():
    """The `vllm` module, or EngineUnavailable with the pip command. In-process engine: its weights can be pushed."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as error:
        raise EngineUnavailable(f"{VLLM_MISSING} ({error})") from error
    return vllm


def shutdown_llm(llm) -> None:
    """Stop an in-process `vllm.LLM` now. Its engine otherwise stops when the garbage collector reaches it, and
    stopping tears down vLLM's process-wide distributed groups: a later engine in the same process, already
    running by then, fails its next step ("pipeline model parallel group is not initialized")."""
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()
    gc.collect()


def cpu_llm_options(folder: Path, max_model_len: int | None, options: dict) -> dict:
    """`vllm.LLM` options for vLLM's CPU build: no chunked prefill, unless the caller says otherwise.

    A seeded request whose prompt is split over two engine steps has its first step's draw discarded and its
    generator rewound, which the CPU build cannot do ("CPU Generator does not use offset", vLLM 0.32): a
    256-row rollout crashed there. Unchunked, every step holds whole prompts (up to `max_num_batched_tokens`,
    at least the longest sequence the engine takes, as vLLM requires then).
    """
    options = dict(options)
    if torch.cuda.is_available() or options.setdefault("enable_chunked_prefill", False):
        return options
    if max_model_len is None:
        config = json.loads((Path(folder) / "config.json").read_text())
        max_model_len = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    options.setdefault("max_num_batched_tokens", max(int(max_model_len or 0), 8192))
    return options


def language_model(model):
    """The causal LM of a trainable model: PPO's value-head wrapper holds it as `.policy` (its head stays out)."""
    inner = getattr(model, "policy", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def engine_weights(model) -> list[tuple[str, torch.Tensor]]:
    """Every weight as (checkpoint name, tensor); for a LoRA model the merged weights (adapters merged, read, unmerged).

    All of them, not only the trained ones: vLLM's in-place reload processes a layer (repacking for its kernels)
    once it has all of that layer's weights.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return [(name, p.detach()) for name, p in model.named_parameters()]
    model.merge_adapter()
    try:
        return [(name.replace(".base_layer", ""), p.detach().clone())
                for name, p in model.get_base_model().named_parameters() if "lora_" not in name]
    finally:
        model.unmerge_adapter()


@register_engine("vllm")
class VLLMEngine:
    """vLLM's `LLM` in this process, started once: from a model directory where it is, or from a copy of a loaded
    policy (or of a LoRA adapter merged into its base) written to `folder`.

    Sampling options map one to one (temperature, top-p, top-k, stop strings, n, seed, max tokens); the
    engine returns the sampled token's log-prob after temperature and top-k/top-p (`processed_logprobs`,
    the distribution `hf` records). `sync` reloads the policy's weights into the engine's model in place.
    """

    owns_weights = True

    def __init__(self, model, tokenizer=None, folder: str | Path | None = None, dtype: str = "bfloat16", seed: int = 0,
                 max_model_len: int | None = None, enforce_eager: bool = False, autocast=None,
                 memory: float | None = None, reserve_bytes: float = 0.0, **llm_options):
        # `autocast` is the trainer's precision for `hf`; this engine computes in `dtype`; `memory`, `reserve_bytes`:
        # its share of the GPU (`gpu_llm_options`)
        vllm = import_vllm()
        if isinstance(model, (str, Path)):
            from tandem.models.loading import load_causal_lm, load_tokenizer, resolve_model

            source = resolve_model(model)
            tokenizer = tokenizer or load_tokenizer(model)
            # a directory (a .gguf file: its converted cache) is read where it is, nothing written; an adapter is
            # merged into its base, in a copy
            model = source.folder if source.base is None else load_causal_lm(model)
        if isinstance(model, Path):
            folder, stops = model, stop_ids(_generation_config(model), tokenizer)
        else:
            model = language_model(model)
            stops = _stop_ids(model, tokenizer)
            folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tandem-vllm-"))
            write_engine_copy(model, tokenizer, folder)
        self.tokenizer, self.stops = tokenizer, sorted(stops)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB on CPU (its default, 4, is a lot on 24 GB)
        if torch.cuda.is_available():
            llm_options = gpu_llm_options(memory, reserve_bytes, llm_options)
        self.sleeps, self.asleep = bool(llm_options.get("enable_sleep_mode")), False
        set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
        gc.collect()  # an engine no longer referenced stops now, not once this one runs (`shutdown_llm`)
        try:
            self.llm = vllm.LLM(model=str(folder), tokenizer=str(folder), dtype=dtype, seed=seed,
                                max_model_len=max_model_len, enforce_eager=enforce_eager,
                                logprobs_mode="processed_logprobs", **cpu_llm_options(folder, max_model_len, llm_options))
        finally:
            # vLLM's CPU worker replaces it process-wide with a no-op, after cutting this thread to 1 torch thread
            # unless OMP_NUM_THREADS is set ("for serving"): the trainer's update would then run on one core
            torch.set_num_threads = set_num_threads
            set_num_threads(threads)
        self.vllm = vllm

    def sampling_params(self, config: SamplingConfig, n: int, seed: int | None):
        return self.vllm.SamplingParams(
            n=n, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
            max_tokens=config.max_new_tokens, seed=seed, stop=list(config.stop_strings) or None,
            include_stop_str_in_output=True, stop_token_ids=self.stops, logprobs=0, skip_special_tokens=True,
        )

    def rollout(self, prompts, config, columns=None, sample_keys=None) -> RolloutBatch:
        n = config.samples_per_prompt
        self.wake()
        prompt_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        # a group's seed: the key of its first row (keys depend on (seed, step, row), as `hf`'s draws do)
        seeds = [int(sample_keys[i * n]) % 2**31 if sample_keys is not None else None for i in range(len(prompts))]
        # vLLM takes n > 1 only when sampling; greedy copies are n requests of one
        copies, per_request = (n, 1) if config.temperature == 0 else (1, n)
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids for _ in range(copies)]
        params = [self.sampling_params(config, per_request, s) for s in seeds for _ in range(copies)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        prompt_ids = [ids for ids in prompt_ids for _ in range(copies)]
        rows_prompt, rows_tokens, rows_logp, texts, ended = [], [], [], [], []
        for ids, output in zip(prompt_ids, outputs):
            for completion in output.outputs:
                tokens = list(completion.token_ids)
                rows_prompt.append(ids)
                rows_tokens.append(tokens)
                rows_logp.append([step[token].logprob for step, token in zip(completion.logprobs, tokens)])
                texts.append(completion.text)
                ended.append(completion.finish_reason == "stop")
        batch = pad_prompt_response_batch(rows_prompt, rows_tokens, self.tokenizer.pad_token_id)
        sampled = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
        for row, (ids, logp) in enumerate(zip(rows_prompt, rows_logp)):
            sampled[row, len(ids) : len(ids) + len(logp)] = torch.tensor(logp, dtype=torch.float32)
        row_columns = {k: [v for v in values for _ in range(n)] for k, values in (columns or {}).items()}
        return RolloutBatch(
            prompts=[p for p in prompts for _ in range(n)], completions=texts, input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"], completion_mask=batch["completion_mask"], sampled_log_probs=sampled,
            ended=torch.tensor(ended), group_ids=torch.arange(len(prompts)).repeat_interleave(n), columns=row_columns,
        )

    def sample_ids(self, prompt_ids: list[list[int]], config: SamplingConfig, sample_keys=None) -> list[SampledRow]:
        """One continuation of each token-id prompt in one `generate` call (episodes that share a system prompt
        share its cached keys and values: vLLM's prefix caching); row i seeded by its key."""
        self.wake()
        seeds = [int(k) % 2**31 for k in sample_keys] if sample_keys is not None else [None] * len(prompt_ids)
        params = [self.sampling_params(config, 1, seed) for seed in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
        rows = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            log_probs = [step[token].logprob for step, token in zip(completion.logprobs, tokens)]
            rows.append(SampledRow(tokens, log_probs, completion.finish_reason == "stop", completion.text))
        return rows

    def sample(self, prompts, max_new_tokens=32, temperature=0.0, top_p=1.0, batch_size=64, seed=None) -> Samples:
        """As `hf`'s: the same prompt tokens, stop tokens and decoding of the completion tokens; greedy at temperature
        0. Row i is drawn with seed `seed + i` (repeated prompts get different samples, as with `hf`); vLLM
        schedules its own batches (`batch_size` is unused)."""
        self.wake()
        prompt_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        params = [self.vllm.SamplingParams(
            temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_tokens=max_new_tokens,
            seed=None if seed is None else seed + row, stop_token_ids=self.stops, detokenize=False,
        ) for row in range(len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        completions = [list(output.outputs[0].token_ids) for output in outputs]
        return Samples(prompt_ids, completions, self.tokenizer.batch_decode(completions, skip_special_tokens=True))

    def sync(self, model) -> None:
        self.wake()
        self.load_weights(engine_weights(language_model(model)))

    def sleep(self) -> None:
        """Level 1: the weights to host memory, the KV cache freed (the update takes the memory meanwhile)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            torch.cuda.empty_cache()  # what the update's activations held goes back to the device for vLLM
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Stop the engine (see `shutdown_llm`); it cannot sample afterwards."""
        shutdown_llm(self.__dict__.pop("llm", None))

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Load (name, tensor) pairs, in Hugging Face names, into the engine's model (vLLM stacks q/k/v itself)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.apply_model(_repack_tied_head)
        self.llm.reset_prefix_cache()  # cached keys and values were computed by the old weights


def _repack_tied_head(engine_model) -> None:
    """vLLM's CPU build packs the LM head's weight for its GEMM when loading; a head tied to the embedding is not
    in the checkpoint, so a reload never repacks it and it would keep sampling with the old weights. (On a GPU
    the call does nothing.)"""
    head = getattr(engine_model, "lm_head", None)
    if head is not None and hasattr(head, "cpu_linear") and getattr(head, "quant_method", None) is not None:
        head.quant_method.process_weights_after_loading(head)


def _generation_config(folder: Path):
    """The directory's generation config, or the one its model config implies (what `from_pretrained` would give)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder)
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))


def write_engine_copy(model, tokenizer, folder: Path) -> None:
    """The policy as a plain Hugging Face directory for vLLM to start from (a LoRA model merged, in a copy)."""
    from peft import PeftModel

    from tandem.models.loading import save_model

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {name.replace(".base_layer", ""): p for name, p in base.state_dict().items() if "lora_" not in name}
            base.save_pretrained(folder, state_dict=state)
        finally:
            model.unmerge_adapter()
        tokenizer.save_pretrained(folder)
    else:
        save_model(model, tokenizer, folder)
    # vLLM reads the model's EOS from generation_config.json (the other stop ids go with each request)
    if not (folder / "generation_config.json").exists():
        model.generation_config.save_pretrained(folder)
