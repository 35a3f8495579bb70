"""A seeded generator of invalid command lines and YAML configs for the training commands, and the rule each must keep.

Every case is invalid by construction (the mutation is derived from the field's own type and
constraints: NaN/inf for a float, a value just past a bound, a name no registry has, a missing file,
a YAML file that does not parse or is not a mapping, an unknown option). The rule: the command exits
non-zero with a message naming the option (or the --config file), never a traceback; it trains
nothing (no `model` folder appears) and writes nothing outside its --out.
`tests/fuzz/test_fuzz_inputs.py` runs a few hundred cases, `benchmarks/fuzz_inputs.py configs` thousands.
"""

from __future__ import annotations

import random
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import annotated_types
from typer.testing import CliRunner

COMMANDS = {  # command -> its config class (module, name)
    "sft": ("tandem.trainers.sft", "SFTConfig"),
    "rm": ("tandem.trainers.rm", "RMConfig"),
    "dpo": ("tandem.trainers.dpo", "DPOConfig"),
    "grpo": ("tandem.trainers.grpo", "GRPOConfig"),
    "ppo": ("tandem.trainers.ppo", "PPOConfig"),
    "pretrain": ("tandem.trainers.pretrain", "PretrainConfig"),
    "one-shot-rlvr": ("tandem.trainers.one_shot", "OneShotConfig"),
    "agent-rl": ("tandem.lm_as_agent.trainer", "AgentRLConfig"),
}
BASE_ARGS = {"one-shot-rlvr": ["--examples", "0"]}  # what a command needs besides its defaults
NAME_FIELDS = ("task", "reward", "advantage", "policy_loss", "kl_estimator", "loss_agg", "env", "judge", "loss")
FILE_FIELDS = ("data", "eval_data", "model", "ref_model", "reward_model", "history")


@dataclass
class ConfigCase:
    name: str
    command: str
    args: list[str]
    names: list[str]  # the message must contain one of these (the option, field or file)


def config_class(command: str):
    import importlib

    module, name = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


def _plain(annotation):
    """The annotation without Optional[...]."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


def _bounds(field) -> list[tuple[str, float]]:
    found = []
    for item in field.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, kind.capitalize())):
                found.append((kind, getattr(item, kind)))
    return found


def invalid_values(name: str, field) -> list[str]:
    """Command-line values that `field` must refuse."""
    kind = _plain(field.annotation)
    values = []
    if kind in (int, float):
        values += ["abc", ""]
        values += ["1.5"] if kind is int else ["nan", "inf", "-inf", "1e400"]
        for bound, limit in _bounds(field):
            step = 1 if kind is int else 0.5
            past = {"ge": limit - step, "gt": limit, "le": limit + step, "lt": limit}[bound]
            values.append(str(int(past) if kind is int else float(past)))
    elif typing.get_origin(kind) is typing.Literal:
        values += ["no-such-choice", ""]
    elif kind is Path and name in FILE_FIELDS:
        values += ["/nonexistent/path.jsonl"]
    elif kind is str and name in NAME_FIELDS:
        values += ["no-such-name", "::"]
    return values


def invalid_yaml(rng: random.Random, field: str) -> tuple[str, bytes]:
    return rng.choice([
        ("syntax", b"lr: [1, 2\nmax_steps: 3\n"),
        ("tab", b"lr:\t1e-3\n\tmax_steps: 3\n"),
        ("a list", b"- lr\n- 1e-3\n"),
        ("a scalar", b"3\n"),
        ("unknown key", b"no_such_option: 1\n"),
        ("nested value", f"{field}: {{a: [1, 2]}}\n".encode()),
        ("binary", bytes(rng.randrange(256) for _ in range(64)) + b"\x00\xff"),
        ("deep", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
        ("invalid utf-8", b"task: \xff\xfe\n"),
        ("anchor bomb", b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c]\nno_such: 1\n"),
        ("python tag", b"lr: !!python/object/apply:os.system ['echo pwned']\n"),
    ])


def make_case(rng: random.Random, folder: Path, number: int, model: Path) -> ConfigCase:
    command = rng.choice(sorted(COMMANDS))
    cls = config_class(command)
    out = folder / f"run-{number}"
    base = ["--out", str(out), "--max-steps", "1", "--no-progress", *BASE_ARGS.get(command, [])]
    if "model" in cls.model_fields:
        base += ["--model", str(model)]
    fields = {name: f for name, f in cls.model_fields.items() if name not in ("out", "progress")}
    roll = rng.random()
    if roll < 0.15:
        field = rng.choice(sorted(fields))
        kind, content = invalid_yaml(rng, field)
        path = folder / f"config-{number}.yaml"
        path.write_bytes(content)
        flag = "--" + field.replace("_", "-")
        return ConfigCase(f"{command} --config ({kind})", command, [command, "--config", str(path), *base],
                          [str(path), "--no-such", flag] if kind == "nested value" else [str(path), "--no-such"])
    if roll < 0.2:
        missing = folder / ("a-folder" if rng.random() < 0.5 else "missing.yaml")
        if missing.name == "a-folder":
            missing.mkdir(exist_ok=True)
        return ConfigCase(f"{command} --config {missing.name}", command, [command, "--config", str(missing), *base],
                          [str(missing)])
    if roll < 0.25:
        return ConfigCase(f"{command} unknown option", command, [command, *base, "--no-such-option", "1"],
                          ["--no-such-option", "No such option"])
    candidates = [(name, value) for name, f in fields.items() for value in invalid_values(name, f)]
    name, value = rng.choice(candidates)
    flag = "--" + name.replace("_", "-")
    args = [command, *[a for a in base if a != flag], flag, value]
    if flag in base:  # the mutated option replaces the base one
        at = base.index(flag)
        args = [command, *base[:at], *base[at + 2:], flag, value]
    return ConfigCase(f"{command} {flag} {value!r}", command, args, [flag, name, value] if value.startswith("/") else [flag, name])


def run_case(case: ConfigCase, folder: Path) -> tuple[str, str]:
    """('refused', message) when the rule holds, else (what broke, detail)."""
    from tandem.cli import app

    before = {p.name for p in folder.iterdir()}
    result = CliRunner().invoke(app, case.args)
    output = result.output or ""
    after = {p.name for p in folder.iterdir()} - before
    out = Path(case.args[case.args.index("--out") + 1])
    if result.exit_code == 0:
        return "accepted", output[-300:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "exception", f"{type(result.exception).__name__}: {result.exception}"
    if "Traceback" in output:
        return "traceback", output[-500:]
    if not any(name in output for name in case.names):
        return "unclear", output[-300:]
    if (out / "model").exists():
        return "trained", str(out)
    if after - {out.name}:
        return "wrote_outside_out", str(sorted(after))
    return "refused", output.strip().splitlines()[-1] if output.strip() else ""
