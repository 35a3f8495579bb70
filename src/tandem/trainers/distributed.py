"""The engines tandem runs on beyond one process, all through accelerate: DDP, FSDP2, DeepSpeed ZeRO.

`accelerate launch --config_file X.yaml tandem sft ...` chooses the engine; the training loop calls
`make_accelerator` and, when the model is sharded (FSDP), saves sharded checkpoints and gathers the
full weights once at the end, so `out/model` is always one ordinary Hugging Face directory.

accelerate enables FSDP only on accelerators (CUDA, XPU, ...): on a CPU-only machine it would quietly
run DDP instead. torch's FSDP2 (`fully_shard`) does run on CPU over gloo, so here tandem hands
accelerate's own FSDP plugin (read from the launch config) to accelerate's FSDP2 preparation itself;
the same config file then shards on CPU and on GPUs. FSDP1 needs an accelerator and is refused on CPU
with a message, never silently replaced by DDP. DeepSpeed ZeRO (stages 1-3) runs wherever DeepSpeed
is installed (on CPU its own CPU accelerator, over gloo): tandem gives it the batch geometry
(micro-batch, accumulation, global batch) and the gradient clipping, and lets the engine step.

A sharded checkpoint is a `torch.distributed.checkpoint` folder per state (`sharded/model`,
`sharded/optimizer`: each process writes its shard, and it loads back into any number of processes)
beside the model's config and tokenizer; `tandem convert` (`tandem.models.sharded`) turns one into a
plain HF directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from tandem.models.sharded import SHARDED, write_model_directory  # noqa: F401 (the loop writes with it)


class EngineError(RuntimeError):
    """The accelerate launch config asks for an engine this machine or model cannot run."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def make_accelerator(mixed_precision: str, **options) -> Accelerator:
    """The run's Accelerator, with the engine `accelerate launch` asked for (see the module docstring); `options`
    go to accelerate (the trackers' `log_with`)."""
    cpu = not torch.cuda.is_available()
    if cpu and _flag("ACCELERATE_USE_FSDP") and os.environ.get("FSDP_VERSION", "1") != "2":
        raise EngineError(f"the accelerate config asks for FSDP version {os.environ.get('FSDP_VERSION', '1')}; on CPU "
                          "(gloo) only FSDP2 runs: set fsdp_version: 2 in its fsdp_config")
    if cpu and _flag("ACCELERATE_USE_DEEPSPEED"):
        # accelerate skips DeepSpeed when told cpu=True; without it, and told gloo (it finds no device to pick a
        # backend for), DeepSpeed runs on its CPU accelerator with every process counted
        from accelerate.utils import InitProcessGroupKwargs

        cpu, options = False, {**options, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu, **options)
    if _flag("ACCELERATE_USE_FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _fsdp2_on_cpu(accelerator)
    return accelerator


def _fsdp2_on_cpu(accelerator: Accelerator) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* settings accelerate launch exported
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def deepspeed_stage(accelerator: Accelerator) -> int | None:
    """The ZeRO stage of a DeepSpeed run, None without DeepSpeed."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def configure_deepspeed(accelerator: Accelerator, config, accumulation: int) -> None:
    """tandem's batch geometry and clipping in the DeepSpeed config (accelerate leaves them to a dataloader, which
    tandem does not use: data order is its own). Checkpoints stay tandem's own: refused until they are sharded."""
    if config.save_every or config.final_checkpoint:
        raise EngineError("resumable checkpoints (--save-every, --final-checkpoint) are not written under DeepSpeed "
                          "yet: use FSDP2 (configs/accelerate/fsdp2.yaml) for sharded checkpoints, or DDP")
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = config.micro_batch_size
    ds["gradient_accumulation_steps"] = accumulation
    ds["train_batch_size"] = config.batch_size
    ds["gradient_clipping"] = config.max_grad_norm or 0.0
    ds["zero_allow_untested_optimizer"] = True  # tandem's AdamW


def check_shardable(model) -> None:
    """Refuse what tandem does not shard yet (before any weight moves), with what to do instead."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise EngineError("LoRA adapters with FSDP are not supported: run LoRA with DDP (a plain accelerate launch) "
                          "or train the full model with FSDP")
    if getattr(model, "_no_split_modules", None) is None and os.environ.get("FSDP_AUTO_WRAP_POLICY") == "TRANSFORMER_BASED_WRAP" \
            and not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        raise EngineError(f"FSDP's TRANSFORMER_BASED_WRAP does not know the layers of {type(model).__name__}: set "
                          "fsdp_transformer_layer_cls_to_wrap in the accelerate config (e.g. LlamaDecoderLayer)")


def mark_sharded_for_generate(model) -> None:
    """transformers' `generate` keeps every process stepping until all are done (`synced_gpus`) for modules marked
    FSDP-managed: with sharded weights each forward is a collective, and processes finish at different lengths."""
    for module in model.modules():
        module._is_fsdp_managed_module = True


def original_class(model) -> type:
    """The model's own class (FSDP2 makes a subclass `FSDP<Name>` in place)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def full_state_dict(accelerator: Accelerator, model) -> dict[str, torch.Tensor]:
    """Every process joins; the main process gets the whole model's weights on CPU (the others may get nothing)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # ZeRO-3 gathers its partitions
        return {k: v.detach().cpu() for k, v in (accelerator.get_state_dict(model) or {}).items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _states(model, optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, getattr(optimizer, "optimizer", optimizer))


def save_sharded(folder: Path, model, optimizer) -> None:
    """Every process writes its shard of the weights and of the optimizer state into `folder/sharded`."""
    import torch.distributed.checkpoint as dcp

    model_state, optimizer_state = _states(model, optimizer)
    dcp.save(model_state, checkpoint_id=str(folder / SHARDED / "model"))
    dcp.save(optimizer_state, checkpoint_id=str(folder / SHARDED / "optimizer"))


def load_sharded(folder: Path, model, optimizer) -> None:
    """Load a sharded checkpoint's weights and optimizer state back into the sharded model (exact resume)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    if not (folder / SHARDED).is_dir():
        raise FileNotFoundError(f"{folder} is not a sharded checkpoint (a run with FSDP resumes only from one)")
    model_state, optimizer_state = _states(model, optimizer)
    dcp.load(model_state, checkpoint_id=str(folder / SHARDED / "model"))
    dcp.load(optimizer_state, checkpoint_id=str(folder / SHARDED / "optimizer"))
    set_state_dict(model, getattr(optimizer, "optimizer", optimizer), model_state_dict=model_state,
                   optim_state_dict=optimizer_state)
