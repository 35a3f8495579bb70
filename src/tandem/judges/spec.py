"""Build a judge, or a judge reward, from a spec string (the `judge:` kind of reward specs).

    local:PATH[:key=value...]                 a local model (see below)     local:runs/sft/model:cot=true
    openai:URL:MODEL[:key=value...]           an OpenAI-compatible endpoint openai:http://127.0.0.1:8000/v1:judge
    python:MODULE:FUNCTION                    a score function (or a ready `Judge` object) in a module or .py file

PATH may be a Hugging Face model directory, a .gguf file (converted once and cached) or a LoRA adapter folder
(its base model resolved from its adapter_config.json). A leading "judge:" is accepted and ignored. MODEL may
itself contain colons ("llama3:8b"): every piece after the URL up to the first `key=value` belongs to it. Options
(values read as int, float, true/false or none where they can):

    all backends   on_unusable=skip|neutral|raise  both_orders=true|false  calibration=average|log_odds  name=TEXT
    local, openai  template=NAME|PATH (score)  compare_template=NAME|PATH  cot=true  cache=PATH.jsonl
    local          batch_size  device  cot_max_tokens  min_label_mass
    openai         api_key_env  timeout  max_retries  backoff  max_backoff  max_concurrency  temperature
                   top_logprobs  answer_max_tokens  cot_max_tokens
    reward only    reference=COLUMN  scale  shift          (see `JudgeReward`)
"""

from __future__ import annotations

import re
from typing import Any

import torch

from tandem.judges.base import Judge, check_calibration, check_orders
from tandem.judges.function import FunctionJudge
from tandem.judges.reward import JudgeReward
from tandem.rewards.base import RewardSpecError, load_reward_function
from tandem.rewards.spec import register_spec_kind

_URL = re.compile(r"^(?P<url>https?://[^/\s]+(?:/[^:\s]*)?):(?P<rest>.+)$")
_SHARED = {"on_unusable", "both_orders", "calibration", "name"}
_TEMPLATED = _SHARED | {"template", "score_template", "compare_template", "cot", "cache"}
_ALLOWED = {
    "local": _TEMPLATED | {"batch_size", "device", "cot_max_tokens", "min_label_mass", "engine"},
    "openai": _TEMPLATED | {"api_key_env", "timeout", "max_retries", "backoff", "max_backoff", "max_concurrency",
                            "temperature", "top_logprobs", "answer_max_tokens", "cot_max_tokens"},
}
REWARD_OPTIONS = {"reference", "scale", "shift"}


class JudgeSpecError(RewardSpecError):
    """A judge spec cannot be built (unknown backend, malformed URL, unknown option...)."""


def _split_target_and_options(rest: str, spec: str) -> tuple[str, dict[str, Any]]:
    """'a:b:k=v:k2=v2' -> ('a:b', {k: v, k2: v2}): the target is everything before the first key=value piece."""
    from tandem.specs import parse_option_value

    pieces = rest.split(":")
    first_option = next((i for i, piece in enumerate(pieces) if "=" in piece), len(pieces))
    target = ":".join(pieces[:first_option])
    options: dict[str, Any] = {}
    for piece in pieces[first_option:]:
        key, equals, value = piece.partition("=")
        if not equals or not key.strip():
            raise JudgeSpecError(f"judge spec {spec!r}: expected option 'key=value', got {piece!r}")
        options[key.strip()] = parse_option_value(value.strip())
    if not target:
        raise JudgeSpecError(f"judge spec {spec!r}: nothing before the options")
    return target, options


def _check_options(kind: str, options: dict[str, Any], spec: str, extra: set[str] = frozenset()) -> dict[str, Any]:
    unknown = set(options) - _ALLOWED[kind] - set(extra)
    if unknown:
        raise JudgeSpecError(f"judge spec {spec!r}: unknown option(s) {sorted(unknown)}; "
                             f"{kind} judges take {', '.join(sorted(_ALLOWED[kind]))}")
    options = dict(options)
    if "calibration" in options:
        try:
            check_orders(options.get("both_orders", True), check_calibration(options["calibration"]))
        except ValueError as error:
            raise JudgeSpecError(f"judge spec {spec!r}: {error}") from None
    if "template" in options:
        options["score_template"] = options.pop("template")
    return options


def parse_judge_spec(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(backend, constructor arguments, all options) of a spec; see the module docstring."""
    text = spec.strip()
    if text.startswith("judge:"):
        text = text[len("judge:") :]
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise JudgeSpecError(
            f"judge spec {spec!r} must be local:PATH, openai:URL:MODEL or python:MODULE:FUNCTION (options as :key=value)"
        )
    if kind == "local":
        path, options = _split_target_and_options(rest, spec)
        return "local", {"model": path}, options
    if kind == "openai":
        match = _URL.match(rest)
        if match is None:
            raise JudgeSpecError(f"judge spec {spec!r}: expected openai:http(s)://HOST[:PORT][/PATH]:MODEL")
        model, options = _split_target_and_options(match["rest"], spec)
        return "openai", {"base_url": match["url"], "model": model}, options
    if kind == "python":
        return "python", {"target": rest}, {}
    raise JudgeSpecError(f"judge spec {spec!r}: unknown judge backend {kind!r}; use local, openai or python")


def build_judge(spec: str, device: str | None = None, reward_options: set[str] = frozenset(),
                dtype: torch.dtype | None = None) -> Judge:
    """The judge a spec string describes (options named in `reward_options` are allowed and ignored here)."""
    kind, arguments, options = parse_judge_spec(spec)
    options = {key: value for key, value in options.items() if key not in reward_options}
    if kind == "python":
        found = load_reward_function(arguments["target"])
        return found if isinstance(found, Judge) else FunctionJudge(score=found, name=f"python:{arguments['target']}")
    options = _check_options(kind, options, spec)
    if kind == "local":
        from tandem.judges.local import LocalJudge

        if device is not None:
            options.setdefault("device", device)
        return LocalJudge(**arguments, **options, dtype=dtype)
    from tandem.judges.remote import OpenAIJudge

    return OpenAIJudge(**arguments, **options)


def build_judge_reward(spec: str, device: str | None = None, dtype: torch.dtype | None = None) -> JudgeReward:
    """A `JudgeReward` from a spec; `reference=COLUMN`, `scale=`, `shift=` go to the reward, the rest to the judge."""
    _, _, options = parse_judge_spec(spec)
    judge = build_judge(spec, device=device, reward_options=REWARD_OPTIONS, dtype=dtype)
    reward_options = {key: options[key] for key in REWARD_OPTIONS if key in options}
    return JudgeReward(judge, name=f"judge:{judge.name}", **reward_options)


def judge_reward_from_spec(rest: str, spec: str, tokenizer=None, device=None, dtype=None) -> JudgeReward:
    """The entry for `tandem.rewards.spec.SPEC_KINDS["judge"]` (same signature as its other kinds)."""
    return build_judge_reward(rest, device=device, dtype=dtype)


# `judge:...` reward specs (tandem.rewards imports this package on the first such spec; see SPEC_PROVIDERS there)
register_spec_kind("judge", judge_reward_from_spec)
