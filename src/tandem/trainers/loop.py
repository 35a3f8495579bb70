"""The one training loop every trainer shares.

Device placement, mixed precision and multi-process wrapping (accelerate), gradient accumulation,
AdamW with warm-up and decay, gradient clipping, periodic evaluation, metrics (`metrics.jsonl`, and the
trackers of `--report-to`, `tandem.tracking`; TensorBoard when installed by default), a progress bar, and
atomic checkpoints with exact resume live here.
A trainer says only what is its own: how examples become a batch (`collate`), what one unit of
loss is (`batch_units`), the loss (`compute_loss`) and what evaluation measures (`evaluate`); what
watches a run plugs in as a callback (`tandem.trainers.callbacks`).

Data order is a pure function of (seed, step): each optimizer step takes the next `batch_size`
indices of a seeded permutation of the data and splits them across processes and micro-batches.
Resuming therefore needs no sampler state, and a run on N processes sees the same global batches as
a run on one. Losses are sums divided by the number of units (tokens, pairs) in the whole global
batch, so gradients are the same with or without accumulation and across data-parallel shards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm
from transformers import get_scheduler

from tandem.config import TrainConfig, save_config
from tandem.policy_eval import gold_eval
from tandem.models.attention import use_grouped_attention
from tandem.models.loading import enable_gradient_checkpointing, load_weights, save_model
from tandem.tracking import RunInfo, Trackers, make_trackers
from tandem.trainers.callbacks import fire
from tandem.trainers.setup import set_threads
from tandem.trainers import distributed
from tandem.trainers.checkpoint import (
    atomic_directory,
    checkpoints_newest_first,
    latest_checkpoint,
    load_training_state,
    mark_latest,
    save_training_state,
)


class NonFiniteError(FloatingPointError):
    """Training produced NaN or infinite losses or gradients more often than `--max-bad-steps` allows."""


@dataclass
class LossOutput:
    """A micro-batch's summed loss, and metric sums to be averaged over the step's units."""

    loss_sum: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    metrics: dict[str, float]
    seconds: float
    learned: bool = True  # False: an RL run none of whose steps had anything to learn from (the CLI exits 1)


def resolve_precision(choice: str) -> str:
    """'auto' -> bf16 when the hardware does it natively, else full precision."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False
    )()
    return "bf16" if cpu_bf16 else "no"


def frozen_model_dtype(choice: str) -> torch.dtype:
    """The precision of a frozen model beside the policy (reward model, judge): bf16 when the run trains in bf16,
    else fp32 (pure fp16 weights overflow where fp16 autocast keeps fp32 islands)."""
    return torch.bfloat16 if resolve_precision(choice) == "bf16" else torch.float32


def reference_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The frozen reference's precision: as a frozen model beside the policy on a GPU (bf16 runs hold it in bf16,
    half the memory, where autocast would round its matmul weights to bf16 anyway); float32 on CPU, where memory is
    plentiful and the reference then equals the policy exactly at step 0 (KL 0, not ~1e-3)."""
    return frozen_model_dtype(choice) if torch.device(device).type == "cuda" else torch.float32


def too_few_examples_message(config: TrainConfig, count: int) -> str:
    """Which data is too small for one batch, and the ways out."""
    source = getattr(config, "data", None) or f"task '{getattr(config, 'task', None)}'"
    fix = f"lower --batch-size to at most {count} or give more records" if count else "give more records"
    return (f"the training data ({source}) has {count} examples after any evaluation split, fewer than one "
            f"batch of {config.batch_size}: {fix}")


class Trainer:
    """Subclass and implement `collate` and `compute_loss`; override `batch_units` and `evaluate` as needed."""

    name = "train"

    def __init__(self, config: TrainConfig, model, tokenizer, train_data: Sequence, eval_data: Sequence = (),
                 callbacks: Sequence = ()):
        self.config = config
        use_grouped_attention(model)  # a model given as it is loaded, not by tandem's loaders
        self.callbacks = list(callbacks)  # on_step, on_evaluate, on_train_end (`tandem.trainers.callbacks`)
        set_threads(config)
        self.tokenizer = tokenizer
        self.train_data = train_data
        self.eval_data = eval_data
        # Several trainers may run in one process (the quickstart chain), each with its own precision;
        # accelerate keeps one global state, so drop it (the process group, if any, is kept).
        AcceleratorState._reset_state()
        # DDP, FSDP or DeepSpeed as `accelerate launch` asks (gloo across processes on CPU-only machines)
        self.accelerator = distributed.make_accelerator(
            resolve_precision(config.mixed_precision), log_with=make_trackers(config.report_to, self._run_info())
        )
        self.sharded = distributed.is_sharded(self.accelerator)  # FSDP
        self.zero_stage = distributed.deepspeed_stage(self.accelerator)
        # weights not whole on the main process: evaluation on every process, the final model gathered
        self.gathers = self.sharded or self.zero_stage == 3
        if self.sharded:
            distributed.check_shardable(model)
        self.model_class, self.model_config = distributed.original_class(model), model.config
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.accumulation = self._accumulation_steps()
        self.steps_per_epoch = len(train_data) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(too_few_examples_message(config, len(train_data)))
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.steps_per_epoch))
        torch.manual_seed(config.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            betas=config.adam_betas,
            # one fused kernel for the whole update: 3.7x faster than the per-tensor loop on this CPU
            fused=all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params),
        )
        schedule = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.schedule]
        optimizer_steps = self.total_steps * self.optimizer_steps_per_step()
        self.scheduler = get_scheduler(
            schedule, optimizer, num_warmup_steps=int(config.warmup_ratio * optimizer_steps),
            num_training_steps=optimizer_steps,
        )
        if self.zero_stage is not None:
            distributed.configure_deepspeed(self.accelerator, config, self.accumulation)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.gathers:
            distributed.mark_sharded_for_generate(self.model)
        # --compile (PyTorch 2, Ansel et al. 2024): the same module through TorchInductor for the training forward
        # only; dynamic shapes, since every batch has its own length (static shapes would recompile per length)
        self.forward_model = torch.compile(self.model, dynamic=True) if config.compile else self.model
        self.out = Path(config.out)
        self.checkpoints = self.out / "checkpoints"
        self.bad_steps = 0  # optimizer steps skipped for a non-finite loss or gradient

    def _optimizer_step(self, step: int, describe_batch) -> float:
        """Clip and check the gradient, then step: a non-finite loss or gradient never reaches the weights.

        Such a step is skipped (gradients dropped, weights and schedule unchanged) and counted; after
        `max_bad_steps` of them the run stops, naming the step and its batch (`describe_batch()`), so the
        last checkpoint and the saved model always hold finite weights. Returns the gradient norm.
        """
        limit = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), limit))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            scaler = getattr(self.accelerator, "scaler", None)
            if scaler is not None:
                # fp16: clipping unscaled the gradients and the scaler saw the inf; update() lowers the scale and
                # clears that record (without it the next step's unscale raises "already called since update")
                scaler.update()
            self.bad_steps += 1
            where = f"step {step + 1}, {describe_batch()}"
            if self.bad_steps > self.config.max_bad_steps:
                raise NonFiniteError(f"the loss or gradient was not finite {self.bad_steps} times (last at {where}); "
                                     "the weights were not updated with it. Check the data (NaN values, margins), "
                                     "the rewards and --lr")
            if self.accelerator.is_main_process:
                print(f"[tandem] warning: non-finite gradient at {where}: step skipped "
                      f"({self.bad_steps} of at most {self.config.max_bad_steps})", flush=True)
            return grad_norm
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _accumulate(self, micro_batches: Sequence, loss_of) -> list:
        """Forward and backward over one optimizer step's micro-batches; gradients are synchronised across
        processes on the last only (DDP's no_sync). `loss_of(micro_batch)` returns (the loss to differentiate,
        anything to keep); what it keeps comes back in order. `_optimizer_step` then clips and steps."""
        kept = []
        for k, micro_batch in enumerate(micro_batches):
            last = k == len(micro_batches) - 1
            with nullcontext() if last else self.accelerator.no_sync(self.model):
                loss, keep = loss_of(micro_batch)
                self._backward(loss, last)
            kept.append(keep)
        return kept

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        if self.zero_stage is not None:
            # the DeepSpeed engine accumulates, divides by its accumulation steps (undone here: the loss is already
            # a share of the global batch) and steps the optimizer itself after the last micro-batch
            self.accelerator.gradient_state._set_sync_gradients(last)
            loss = loss * self.accumulation
        self.accelerator.backward(loss)

    def _accumulation_steps(self) -> int:
        """Micro-batches per process per step; the batch must split evenly over processes and micro-batches."""
        per_step = self.config.micro_batch_size * self.world
        if self.config.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.config.batch_size} must be a multiple of micro_batch_size x processes = {per_step}"
            )
        return self.config.batch_size // per_step

    # ---- what a trainer says --------------------------------------------------------------
    def optimizer_steps_per_step(self) -> int:
        """Optimizer steps in one training step (RL: update epochs x minibatches per rollout)."""
        return 1

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def batch_units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many units the loss sums over (tokens for language modelling, pairs for a reward model)."""
        return int(batch["input_ids"].shape[0])

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens in a batch, for throughput."""
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        return int(batch["input_ids"].numel())

    def compute_loss(self, model, batch: dict[str, torch.Tensor]) -> LossOutput:
        raise NotImplementedError

    def evaluate(self, model) -> dict[str, float]:
        """Held-out loss (and the trainer's own stats) over `eval_data`; trainers add task metrics."""
        if not self.eval_data:
            return {}
        totals: dict[str, float] = {}
        units = 0
        with torch.no_grad(), self.accelerator.autocast():
            for start in range(0, len(self.eval_data), self.config.micro_batch_size):
                batch = self._to_device(self.collate(list(self.eval_data[start : start + self.config.micro_batch_size])))
                output = self.compute_loss(model, batch)
                units += self.batch_units(batch)
                totals["loss"] = totals.get("loss", 0.0) + float(output.loss_sum)
                for key, value in output.stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
        return {f"eval/{k}": v / max(units, 1) for k, v in totals.items()}

    def extra_state(self) -> dict:
        """JSON-serialisable trainer state besides weights, optimizer and RNG that a resumed run needs."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` saved (`state` is the checkpoint's trainer_state.json)."""

    def save_final(self, model, folder: Path) -> None:
        save_model(model, self.tokenizer, folder)

    # ---- the loop --------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _global_indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_data), generator=generator)
        return order[position * self.config.batch_size : (position + 1) * self.config.batch_size].tolist()

    def _local_micro_batches(self, step: int) -> list[dict]:
        indices = self._global_indices(step)
        micro = self.config.micro_batch_size
        mine = indices[self.rank * micro * self.accumulation : (self.rank + 1) * micro * self.accumulation]
        return [self.collate([self.train_data[i] for i in mine[k : k + micro]]) for k in range(0, len(mine), micro)]

    def _all_reduce_sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            tensor = self.accelerator.reduce(tensor, reduction="sum")
        return tensor.tolist()

    def _prepare_run_dir(self) -> int:
        """Return the step to start from, after checking --resume against what the run directory holds."""
        found = latest_checkpoint(self.checkpoints)
        if found is None and (self.out / "model").exists():
            raise FileExistsError(
                f"{self.out} already holds a finished run (its model) and no checkpoint to --resume from; choose "
                "another --out (--final-checkpoint keeps a resumable checkpoint at the end of a run)"
            )
        if found is None:
            if self.config.resume and self.accelerator.is_main_process:
                print(f"[tandem] --resume: no checkpoint in {self.checkpoints}, starting from step 0")
            if self.accelerator.is_main_process:
                self.out.mkdir(parents=True, exist_ok=True)
                save_config(self.config, self.out / "config.yaml")
                (self.out / "metrics.jsonl").write_text("")
            self.accelerator.wait_for_everyone()
            return 0
        if not self.config.resume:
            raise FileExistsError(
                f"{self.out} already holds a run (checkpoint {found.name}); pass --resume to continue it "
                "or choose another --out"
            )
        state, found = self._load_checkpoint(found)
        self.load_extra_state(state)
        if self.accelerator.is_main_process:
            print(f"[tandem] resumed from {found} (step {state['step']})")
            self._note_changed_options()
        return int(state["step"])

    def _load_checkpoint(self, first: Path) -> tuple[dict, Path]:
        """Load `first`, or when it is damaged (a truncated file, a corrupt state) the next older checkpoint."""
        candidates = [first] + [p for p in checkpoints_newest_first(self.checkpoints) if p != first]
        problems = []
        for folder in candidates:
            try:
                if self.sharded:
                    distributed.load_sharded(folder, self.model, self.optimizer)
                    return load_training_state(folder, None, self.scheduler), folder
                load_weights(self.accelerator.unwrap_model(self.model), folder)
                return load_training_state(folder, self.optimizer, self.scheduler), folder
            except Exception as error:  # noqa: BLE001 - any damage means: try the previous checkpoint
                problems.append(f"{folder.name}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                if self.accelerator.is_main_process:
                    print(f"[tandem] warning: checkpoint {folder} cannot be loaded ({problems[-1]}); "
                          "trying the previous one", flush=True)
        raise FileNotFoundError(f"no checkpoint in {self.checkpoints} can be loaded: " + "; ".join(problems))

    def _note_changed_options(self) -> None:
        """--resume with other options than the run had: say which, and keep config.yaml what the run now uses."""
        saved_file = self.out / "config.yaml"
        try:
            saved = yaml.safe_load(saved_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            saved = {}
        current = self.config.model_dump(mode="json")
        changed = {k: (saved[k], v) for k, v in current.items() if k in saved and saved[k] != v and k != "resume"}
        if changed:
            listed = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            print(f"[tandem] --resume with changed options ({listed}); config.yaml now holds the new values "
                  "(the old ones are in config.previous.yaml)", flush=True)
            (self.out / "config.previous.yaml").write_text(saved_file.read_text())
            save_config(self.config, saved_file)

    def _save_checkpoint(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.sharded:
            return self._save_sharded_checkpoint(step)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)

            def write(folder: Path) -> None:
                save_model(model, self.tokenizer, folder)
                save_training_state(folder, step, self.optimizer, self.scheduler, extra=self.extra_state())

            folder = atomic_directory(self.checkpoints / f"step-{step:07d}", write)
            mark_latest(self.checkpoints, folder, self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save_sharded_checkpoint(self, step: int) -> None:
        """FSDP: every process writes its shards into a staging folder; the main process adds config, tokenizer
        and training state and moves the whole into place atomically, as for an ordinary checkpoint."""
        final = self.checkpoints / f"step-{step:07d}"
        staging = final.with_name(f".{final.name}.shards")
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        distributed.save_sharded(staging, self.model, self.optimizer)
        self.accelerator.wait_for_everyone()
        if main:
            def write(folder: Path) -> None:
                os.replace(staging / distributed.SHARDED, folder / distributed.SHARDED)
                self.model_config.architectures = [self.model_class.__name__]
                self.model_config.save_pretrained(str(folder))
                self.tokenizer.save_pretrained(str(folder))
                save_training_state(folder, step, None, self.scheduler, extra=self.extra_state())

            mark_latest(self.checkpoints, atomic_directory(final, write), self.config.keep_checkpoints)
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _log(self, record: dict, writer: Trackers | None) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            writer.log(record)

    def _run_info(self) -> RunInfo:
        out = Path(self.config.out)
        return RunInfo(out, self.config.project, self.config.run_name or out.resolve().name, self.config.run_group)

    def _trackers(self) -> Trackers | None:
        """The --report-to trackers, started with the run's resolved config (main process only)."""
        return Trackers.start(self.accelerator, self.config.project,
                              {"command": self.name, **self.config.model_dump(mode="json")})

    def _run_evaluation(self, step: int, writer) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # sharded weights: every process evaluates (each forward is a collective), the main one logs
        if self.accelerator.is_main_process or self.gathers:
            model = self.accelerator.unwrap_model(self.model)
            model.eval()
            with self.accelerator.autocast():  # callbacks see the model as evaluation does (eval mode, autocast)
                metrics = self.evaluate(model)
                metrics.update(fire(self.callbacks, "on_evaluate", self, step, metrics))
            model.train()
            if metrics and self.accelerator.is_main_process:
                self._log({"step": step, **metrics}, writer)
        self.accelerator.wait_for_everyone()
        return metrics

    def _start(self):
        """Run directory (or resume point), experiment trackers, progress bar and start time."""
        start_step = self._prepare_run_dir()
        bar = tqdm(total=self.total_steps, initial=start_step, desc=self.name,
                   disable=not (self.accelerator.is_main_process and self.config.progress))
        self.model.train()
        return start_step, self._trackers(), bar, time.perf_counter()

    def train(self) -> TrainResult:
        cfg = self.config
        main = self.accelerator.is_main_process
        start_step, writer, bar, started = self._start()
        window = {"tokens": 0.0, "time": 0.0}
        sums: dict[str, float] = {}
        for step in range(start_step, self.total_steps):
            t0 = time.perf_counter()
            batches = [self._to_device(b) for b in self._local_micro_batches(step)]
            local_units = sum(self.batch_units(b) for b in batches)
            local_tokens = sum(self.batch_tokens(b) for b in batches)
            global_units, global_tokens = self._all_reduce_sum([local_units, local_tokens])
            scale = self.world / max(global_units, 1.0)
            step_stats: dict[str, float] = {"loss": 0.0}

            def loss_of(batch):
                output = self.compute_loss(self.forward_model, batch)
                return output.loss_sum * scale, output

            for output in self._accumulate(batches, loss_of):
                step_stats["loss"] += float(output.loss_sum.detach())
                for key, value in output.stats.items():
                    step_stats[key] = step_stats.get(key, 0.0) + float(value)
            grad_norm = self._optimizer_step(step, lambda: f"examples {self._global_indices(step)[:8]}")
            keys = sorted(step_stats)
            reduced = self._all_reduce_sum([step_stats[k] for k in keys])
            for key, value in zip(keys, reduced):
                sums[key] = sums.get(key, 0.0) + value / max(global_units, 1.0)
            sums["_steps"] = sums.get("_steps", 0) + 1
            window["tokens"] += global_tokens
            window["time"] += time.perf_counter() - t0
            done = step + 1
            if main:
                bar.update(1)
                bar.set_postfix(loss=f"{reduced[keys.index('loss')] / max(global_units, 1):.4f}",
                                tok_s=f"{window['tokens'] / max(window['time'], 1e-9):.0f}")
            if done % cfg.log_every == 0 or done == self.total_steps:
                record = {"step": done, "lr": self.scheduler.get_last_lr()[0]}
                record.update({f"train/{k}": v / sums["_steps"] for k, v in sums.items() if k != "_steps"})
                record["train/tokens_per_s"] = window["tokens"] / max(window["time"], 1e-9)
                record["train/grad_norm"] = grad_norm
                if self.bad_steps:
                    record["train/skipped_steps"] = self.bad_steps
                if main:
                    self._log(record, writer)
                sums, window = {}, {"tokens": 0.0, "time": 0.0}
            if self.callbacks:
                step_record = {f"train/{k}": v / max(global_units, 1.0) for k, v in zip(keys, reduced)}
                fire(self.callbacks, "on_step", self, done, {**step_record, "train/grad_norm": grad_norm})
            self._after_step(done, writer)
        bar.close()
        return self._finish(writer, started)

    def _after_step(self, done: int, writer) -> None:
        """Periodic evaluation and checkpoints (the final ones happen in `_finish`)."""
        cfg = self.config
        if cfg.eval_every and done % cfg.eval_every == 0 and done != self.total_steps:
            self._run_evaluation(done, writer)
        if cfg.save_every and done % cfg.save_every == 0 and done != self.total_steps:
            self._save_checkpoint(done)

    def _finish(self, writer, started: float) -> TrainResult:
        """Callbacks' on_train_end, last checkpoint (when asked: it holds the optimizer state), final evaluation, and
        the final model in `out/model`."""
        if self.accelerator.is_main_process:
            fire(self.callbacks, "on_train_end", self, writer)
        if self.config.final_checkpoint or self.config.save_every:
            self._save_checkpoint(self.total_steps)
        last_eval = self._run_evaluation(self.total_steps, writer)
        model_dir = self.out / "model"
        if self.gathers or self.zero_stage is not None:  # the full weights gathered once, as an ordinary HF directory
            weights = distributed.full_state_dict(self.accelerator, self.model)
            if self.accelerator.is_main_process:
                atomic_directory(model_dir, lambda folder: distributed.write_model_directory(
                    self.model_class, self.model_config, weights, self.tokenizer, folder))
        elif self.accelerator.is_main_process:
            atomic_directory(model_dir, lambda folder: self.save_final(self.accelerator.unwrap_model(self.model), folder))
        self.accelerator.wait_for_everyone()
        if writer is not None:
            writer.close()
        return TrainResult(model_dir, self.total_steps, last_eval, time.perf_counter() - started)


class GenerativeTrainer(Trainer):
    """A trainer of a policy: evaluation also samples held-out prompts and scores them with the task's gold reward."""

    def __init__(self, config, model, tokenizer, train_data, eval_data=(), task=None, eval_prompts=(),
                 eval_max_new_tokens: int | None = None, callbacks: Sequence = ()):
        super().__init__(config, model, tokenizer, train_data, eval_data, callbacks=callbacks)
        self.task = task
        self.eval_prompts = list(eval_prompts)
        self.eval_max_new_tokens = eval_max_new_tokens  # None: the task's

    def evaluate(self, model) -> dict[str, float]:
        metrics = super().evaluate(model)
        if self.task is not None and self.eval_prompts:
            gold = gold_eval(model, self.tokenizer, self.task, self.eval_prompts, max_new_tokens=self.eval_max_new_tokens)
            metrics.update({f"eval/{k}": v for k, v in gold.items()})
        return metrics
