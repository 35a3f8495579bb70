"""Typed, validated configs: one pydantic model per command, loadable from YAML and overridable by flags.

Precedence: the model's defaults < the YAML file given with `--config` < flags on the command line.
The same objects drive the Python API (`SFTConfig(model=..., data=...)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from tandem.tracking import TRACKERS, parse_tracker_names

C = TypeVar("C", bound=BaseModel)


def _exists(path: Path) -> Path:
    """Files and folders a run reads must exist, even when this run would not read them (a typo is a typo)."""
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    return path


# An option naming a file or folder the run reads: validated to exist when the config is made.
InputPath = Annotated[Path, AfterValidator(_exists)]


class TrainConfig(BaseModel):
    """Options every training command shares (the one training loop reads these)."""

    # NaN and infinity are never valid option values (`--lr inf` would train NaN weights)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    out: Path = Field(Path("runs/run"), description="Run directory: config, metrics, checkpoints and the final model.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed for data order, initialisation and sampling.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to run; overrides --epochs when set.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (used when --max-steps is not set).")
    batch_size: int = Field(32, ge=1, description="Global batch size: examples per optimizer step, over all processes.")
    micro_batch_size: int = Field(
        32, ge=1, description="Examples per forward pass and process; gradient accumulation makes up the rest."
    )
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Fraction of steps with linear learning-rate warm-up.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate decay after warm-up.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this value (none: no clipping).")
    max_bad_steps: int = Field(
        3, ge=0, description="Optimizer steps whose loss or gradient is not finite are skipped (the weights untouched) and counted; one more than this stops the run."
    )
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="Autocast precision; auto picks bf16 where the hardware has it (AMX/AVX512-BF16 CPUs, Ampere+ GPUs)."
    )
    max_length: int = Field(256, ge=8, description="Longest sequence in tokens (prompt + completion).")
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: only at the end).")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="How many recent checkpoints to keep.")
    log_every: int = Field(10, ge=1, description="Write metrics every N steps.")
    resume: bool = Field(False, description="Continue from the last checkpoint in --out.")
    progress: bool = Field(True, description="Show a progress bar.")
    report_to: list[str] | None = Field(
        None, description=f"Experiment trackers, comma-separated: any of {', '.join(TRACKERS)}, or none "
        "(metrics.jsonl is always written; default: tensorboard when installed)."
    )
    project: str = Field("tandem", description="Tracker project (W&B and trackio project, MLflow experiment).")
    run_name: str | None = Field(None, description="Run name in the trackers (default: the --out folder's name).")
    run_group: str | None = Field(None, description="Group of runs in the trackers (W&B and trackio group, MLflow tag).")
    compile: bool = Field(
        False, description="Run the training forward and backward through torch.compile (TorchInductor, dynamic shapes); generation, evaluation and saving stay eager."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in the backward instead of keeping them (about a third more compute, a fraction of the activation memory: long RL completions on a small machine)."
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads (default: torch's choice; on a busy machine 1 can be several times faster than 2)."
    )
    final_checkpoint: bool = Field(
        False, description="Also write a resumable checkpoint (optimizer state) at the end; periodic ones come from --save-every."
    )
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="Render string prompts with the tokenizer's chat template: auto (pretrained models that have one; not tandem's from-scratch models), on, off."
    )
    max_prompt_length: int | None = Field(
        None, ge=1, description="Longest prompt in tokens (default: max_length - 1, so a response fits)."
    )
    on_long_prompt: Literal["error", "truncate", "skip"] = Field(
        "error", description="A prompt longer than --max-prompt-length: stop with its file and line (error), keep its last tokens (truncate), or leave the record out and count it (skip)."
    )
    control_tokens: Literal["allow", "escape", "refuse"] = Field(
        "allow", description="Control-token text such as <|im_start|> inside --data: a real control token (allow: data rendered ahead of time), plain text (escape: a zero-width space breaks it), or an error naming the record (refuse)."
    )

    # Defaults that differ for a pretrained checkpoint (a model tandem did not build from scratch); a value
    # given in the config file or on the command line always wins. See `apply_model_defaults`.
    pretrained_defaults: ClassVar[dict[str, Any]] = {}

    @field_validator("lr", check_fields=False)
    @classmethod
    def _sane_learning_rate(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"the learning rate must lie in (0, 1], got {value}")
        return value

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value):
        return parse_tracker_names(value)

    @model_validator(mode="after")
    def _micro_fits_batch(self) -> TrainConfig:
        cap = self.micro_batch_cap()
        if cap is not None and self.micro_batch_size > cap:
            self.micro_batch_size = cap  # an assignment, validated as any other
        return self

    def micro_batch_cap(self) -> int | None:
        """The most sequences one micro-batch can hold (None: no cap): here, the batch."""
        return self.batch_size


def registered_name(value: str, registry: dict, kind: str) -> str:
    """`value` if it names an entry of `registry`, else a ValueError listing the names (for config validators)."""
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(sorted(registry))}")
    return value


def apply_model_defaults(config: TrainConfig, origin: str) -> dict[str, Any]:
    """For a pretrained model, replace the defaults the user did not set by `pretrained_defaults`; return them."""
    if origin != "pretrained":
        return {}
    changed = {}
    for name, value in type(config).pretrained_defaults.items():
        if name not in config.model_fields_set:
            setattr(config, name, value)
            changed[name] = value
    return changed


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build `cls` from its defaults, then the YAML file at `path`, then `overrides` (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except RecursionError:
                raise ValueError(f"{path}: nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of option names to values, got {type(loaded).__name__}")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def save_config(config: BaseModel, path: Path) -> None:
    """Write the resolved config as YAML (what the run actually used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
