"""The `tandem` command line: one command per config class, every option generated from its typed fields.

`tandem CMD --config run.yaml --lr 3e-4` loads the YAML, then applies the flags; `tandem CMD --help`
lists every option with its help text and default.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.markup import escape
import yaml
from pydantic import BaseModel, ValidationError

from tandem.config import load_config
from tandem.data import DataError
from tandem.files import check_writable_dir
from tandem.generation.engines import EngineUnavailable
from tandem.rewards import RewardError, RewardSpecError
from tandem.tracking import MissingTrackerError
from tandem.trainers.loop import NonFiniteError, TrainResult

# Errors that mean the input (data, options, files, rewards) is wrong: one line, exit 1, no traceback.
# OSError: a missing or unreadable file, a full or read-only disk, an --out that cannot be written.
# EngineUnavailable: --engine vllm without vLLM (the message is the pip command).
USER_ERRORS = (DataError, RewardSpecError, RewardError, OSError, NonFiniteError, MissingTrackerError, ValueError,
               EngineUnavailable)

app = typer.Typer(
    help="tandem: reinforcement learning and language models, together. Run `tandem quickstart` for the whole pipeline "
    "on the built-in default task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _cli_type(annotation: Any) -> Any:
    """The type typer should parse a field as; pydantic validates the value afterwards."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # InputPath and the like: typer parses the bare type, pydantic validates
        return _cli_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(inner[0]) if len(inner) == 1 else str
    if origin is typing.Literal:
        return str
    return annotation


# `--help` of a command with many options groups them in these panels: the first pattern that matches the option's
# field name wins; the rest go to "Run".
HELP_PANELS = [
    ("Model", r"model|ref_model|lora_.*|merge_lora|chat_template|compile|gradient_checkpointing|mixed_precision|threads"),
    ("Data", r"task|data|eval_data|n_prompts|n_train|max_length|max_prompt_length|on_long_prompt|control_tokens|eval_fraction"),
    ("Rollout", r"engine|vllm_.*|samples_per_prompt|max_new_tokens|temperature|top_p|top_k|stop_strings|env|history|"
                r"max_turns|max_context|episodes_per_start|n_train_starts|invalid.*|dynamic_sampling|filter_ratio|"
                r"demonstrations|demo_.*|warm_start_.*|reward|reward_.*|shaping.*"),
    ("Loss", r"advantage|policy_loss|loss_agg|kl_.*|target_kl|clip_.*|dual_clip|entropy_coef|tis_cap|gamma|lam|"
             r"whiten_advantages|vf_coef|value_clip|missing_eos_penalty|overlong_.*|beta|loss_type|turn_credit"),
    ("Optimisation", r"lr|weight_decay|adam_betas|warmup_ratio|schedule|max_grad_norm|max_bad_steps|batch_size|"
                     r"micro_batch_.*|max_steps|epochs|update_epochs|minibatches|seed"),
    ("Evaluation", r"eval_.*|n_eval"),
    ("Output and logging", r"out|log_every|save_every|keep_checkpoints|resume|progress|report_to|project|run_name|"
                           r"run_group|final_checkpoint|no_signal_patience|log_.*"),
]
PANEL_FROM = 20  # commands with fewer options show one list


def help_panel(name: str) -> str:
    return next((panel for panel, pattern in HELP_PANELS if re.fullmatch(pattern, name)), "Run")


def _option(name: str, field, registry: dict | None = None, panel: str | None = None) -> inspect.Parameter:
    kind = _cli_type(field.annotation)
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        flag = f"{flag}/--no-{name.replace('_', '-')}"
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else ()
    choices = choices or sorted(registry or ())  # a registry's names as they are when the help is read
    help_text = (field.description or "") + (f" One of: {', '.join(map(str, choices))}." if choices else "")
    default = field.default_factory() if field.default_factory is not None else field.default
    help_text += " (required)" if field.is_required() else f" (default: {default})"
    option = typer.Option(None, flag, help=escape(help_text), show_default=False, rich_help_panel=panel)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def config_options(config_class: type[BaseModel]) -> list[inspect.Parameter]:
    """The command-line options of `config_class`'s fields, in panels when there are many."""
    fields = config_class.model_fields
    registries = getattr(config_class, "registries", {})
    grouped = len(fields) >= PANEL_FROM
    panels = {name: help_panel(name) if grouped else None for name in fields}
    order = [panel for panel, _ in HELP_PANELS] + ["Run"]
    names = sorted(fields, key=lambda name: order.index(panels[name])) if grouped else list(fields)
    return [_option(name, fields[name], registries.get(name), panels[name]) for name in names]


def _close_process_group() -> None:
    """Multi-process runs (torchrun / accelerate launch) exit cleanly only after the process group is torn down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def add_command(name: str, config_class: type[BaseModel], run: Callable[[Any], Any], help: str) -> None:
    """Register `tandem NAME`, whose options are the fields of `config_class`, calling `run(config)`."""

    def command(**values: Any) -> None:
        config_file = values.pop("config")
        try:
            config = load_config(config_class, config_file, **values)
        except ValidationError as error:
            lines = [f"  --{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors()]
            typer.echo(f"tandem {name}: invalid options\n" + "\n".join(lines), err=True)
            raise typer.Exit(2) from None
        except (OSError, yaml.YAMLError, ValueError) as error:  # a missing, unreadable or malformed --config
            typer.echo(f"tandem {name}: --config {config_file}: {str(error).splitlines()[0] if str(error) else error!r}",
                       err=True)
            raise typer.Exit(2) from None
        try:
            if isinstance(getattr(config, "out", None), Path):  # before any work: can the run write its results?
                out_is_file = getattr(type(config), "out_is_file", False)
                check_writable_dir(config.out.parent if out_is_file else config.out, allow_current=out_is_file)
            result = run(config)
            if isinstance(result, TrainResult) and not result.learned:
                typer.echo(f"tandem {name}: nothing was learned: none of the {result.steps} steps had a learning "
                           f"signal (see the warnings above); the model in {result.model_dir} is unchanged", err=True)
                raise typer.Exit(1)
        except USER_ERRORS as error:
            # the user's input is wrong: say what, without a traceback (TANDEM_TRACEBACK=1 shows it)
            if os.environ.get("TANDEM_TRACEBACK"):
                raise
            typer.echo(f"tandem {name}: {error}", err=True)
            raise typer.Exit(1) from None
        finally:
            _close_process_group()

    parameters = [
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
            default=typer.Option(None, "--config", help="YAML file of options; flags given here override it."),
        )
    ]
    parameters += config_options(config_class)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = help
    app.command(name, help=help)(command)


def _register() -> None:
    from tandem.pipeline import QuickstartConfig, run_quickstart
    from tandem.trainers.dpo import DPOConfig, run_dpo
    from tandem.trainers.grpo import GRPOConfig, run_grpo
    from tandem.trainers.one_shot import OneShotConfig, run_one_shot
    from tandem.trainers.ppo import PPOConfig, run_ppo
    from tandem.trainers.pretrain import PretrainConfig, run_pretrain
    from tandem.trainers.rm import RMConfig, run_rm
    from tandem.trainers.sft import SFTConfig, run_sft

    def report(result: TrainResult) -> TrainResult:
        typer.echo(f"model saved to {result.model_dir} after {result.steps} steps in {result.seconds:.1f}s")
        for key, value in result.metrics.items():
            typer.echo(f"  {key}: {value:.4f}")
        return result

    add_command(
        "quickstart", QuickstartConfig, run_quickstart,
        "The whole pipeline on a built-in task: pretrain -> SFT -> reward model, with a report of each stage.",
    )
    trainers = [  # command, config, run, help; each prints where its model went and its last metrics
        ("pretrain", PretrainConfig, run_pretrain,
         "Next-token pre-training of a new tiny model (or a given one) on a task corpus or your text data."),
        ("sft", SFTConfig, run_sft, "Supervised fine-tuning (loss on completion tokens only), optionally with LoRA."),
        ("rm", RMConfig, run_rm, "Train a scalar reward model on preference pairs with the Bradley-Terry loss."),
        ("ppo", PPOConfig, run_ppo,
         "PPO-RLHF: policy with a value head, reward model score, per-token KL to the SFT reference, GAE."),
        ("grpo", GRPOConfig, run_grpo, "RL with verifiable rewards: GRPO, Dr. GRPO, RLOO, REINFORCE++ with DAPO options."),
        ("one-shot-rlvr", OneShotConfig, run_one_shot,
         "RLVR on one example (Wang et al. 2025): picked by the variance of its accuracy in an earlier grpo run."),
        ("dpo", DPOConfig, run_dpo,
         "Direct preference optimisation and its family (IPO, robust/conservative DPO, hinge, SimPO, ORPO)."),
    ]
    for name, config_class, run, help_text in trainers:
        add_command(name, config_class, lambda c, run=run: report(run(c)), help_text)

_register()

# Subpackages that add their own commands: each has `register(add_command)` in the module named here.
COMMAND_MODULES = (
    "tandem.lm_inside_agents.commands",
    "tandem.lm_as_agent.trainer",
    "tandem.lm_as_agent.imagined",
    "tandem.judges.commands",
    "tandem.serve.commands",
    "tandem.models.commands",
    "tandem.preference_studies.commands",
    "tandem.explain.commands",
    "tandem.overopt.commands",
    "tandem.ai_feedback.commands",
)
for _module in COMMAND_MODULES:
    __import__(_module, fromlist=["register"]).register(add_command)


@app.command("tasks")
def list_tasks() -> None:
    """List the built-in tasks."""
    from tandem.tasks import TASKS

    import textwrap

    for task_name, task_class in TASKS.items():
        summary = (task_class.__doc__ or "").strip().splitlines()[0] if task_class.__doc__ else ""
        positional = task_class.positional_option
        label = f"{task_name}:{positional.upper()}" if positional else task_name
        typer.echo(f"{label:12s} {summary}")
        choices = task_class.positional_choices()
        if choices:
            typer.echo(textwrap.fill(f"{positional} is one of: {', '.join(choices)}", width=100,
                                     initial_indent=" " * 13, subsequent_indent=" " * 13))


def main() -> None:
    app(prog_name="tandem")


if __name__ == "__main__":
    sys.exit(main())
