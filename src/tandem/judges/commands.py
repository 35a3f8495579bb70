"""`tandem judge`: score or compare the responses in a data file with any judge; registered through `register(add_command)`.

Input records (JSONL, JSON, Parquet, CSV): `prompt` plus `response` (or `completion`) to score, or
`response_a` and `response_b` (or `chosen` and `rejected`) to compare. Output: one JSON line per record
(its fields, the verdict's value, reason, method and raw text) and a summary JSON beside it with
unusable counts by reason and, for chosen/rejected pairs, the judge's agreement with those labels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field
from tqdm import tqdm

from tandem.generation.engines import EngineOptions
from tandem.judges.base import Judge, Verdict, check_orders
from tandem.judges.spec import build_judge, parse_judge_spec

SCORE_FIELDS = (("response",), ("completion",))
COMPARE_FIELDS = (("response_a", "response_b"), ("chosen", "rejected"))


class JudgeCommandConfig(EngineOptions):
    """Options of `tandem judge`."""

    model_config = ConfigDict(extra="forbid")
    out_is_file: ClassVar[bool] = True  # `out` names a file, not a run directory

    judge: str = Field(description="Judge spec: local:PATH, openai:URL:MODEL or python:MODULE:FUNCTION, options as :key=value.")
    data: Path = Field(description="Records with prompt + response (score) or prompt + response_a/response_b or chosen/rejected (compare).")
    out: Path = Field(Path("runs/judge/verdicts.jsonl"), description="Verdicts JSONL; the summary goes beside it (*.summary.json).")
    mode: Literal["auto", "score", "compare"] = Field("auto", description="What to ask; auto picks from the record fields.")
    template: str | None = Field(None, description="Template name or YAML path (for the chosen mode); default the built-in one.")
    cot: bool | None = Field(None, description="Ask for reasoning before the verdict (template judges).")
    both_orders: bool = Field(True, description="Compare in both orders and combine them (cancels position bias).")
    calibration: Literal["average", "log_odds"] | None = Field(
        None, description="How both orders combine: average (mean probability) or log_odds (half the log-odds "
                          "difference: keeps a position-biased judge's confidence); default the spec's, else average.")
    on_unusable: Literal["skip", "neutral", "raise"] = Field("skip", description="What an unusable verdict becomes.")
    cache: Path | None = Field(None, description="JSONL verdict cache, read at start and appended to (template judges).")
    batch_size: int = Field(64, ge=1, description="Records per judge call.")
    limit: int | None = Field(None, ge=1, description="Judge only the first N records.")
    progress: bool = Field(True, description="Show a progress bar.")


def _pick_fields(record, mode: str) -> tuple[str, tuple[str, ...]]:
    candidates = {"score": SCORE_FIELDS, "compare": COMPARE_FIELDS}
    modes = ["compare", "score"] if mode == "auto" else [mode]
    for name in modes:
        for fields in candidates[name]:
            if all(field in record.data for field in fields):
                return name, fields
    wanted = " or ".join("+".join(f) for name in modes for f in candidates[name])
    raise record.error(f"expected fields prompt and {wanted}; the record has {sorted(record.data)}")


def _text(record, field: str) -> str:
    value = record.data.get(field)
    if not isinstance(value, str):
        raise record.error(f"expected a string, got {type(value).__name__}", field=field)
    return value


def _configured_judge(config: JudgeCommandConfig) -> Judge:
    judge = build_judge(config.judge)
    judge.on_unusable = config.on_unusable
    judge.both_orders = config.both_orders
    if config.calibration is not None:
        judge.calibration = config.calibration
    check_orders(judge.both_orders, judge.calibration)
    if "engine" in config.model_fields_set:  # else the spec's (local:PATH:engine=vllm) or hf
        if not hasattr(judge, "engine"):
            raise ValueError(f"judge {judge.name!r} generates nothing here: --engine applies to local: judges")
        judge.engine = config.engine
    if hasattr(judge, "score_template"):
        from tandem.judges.cache import VerdictCache
        from tandem.judges.templates import load_template

        if config.template is not None:
            template = load_template(config.template, None if config.mode == "auto" else config.mode)
            setattr(judge, f"{template.kind}_template", template)
        if config.cot is not None:
            judge.cot = config.cot
        if config.cache is not None:
            judge.cache = VerdictCache(config.cache)
    elif config.template or config.cot or config.cache:
        raise ValueError(f"judge {judge.name!r} is a Python function: --template, --cot and --cache do not apply")
    return judge


def summarise(verdicts: list[Verdict], gold_first: bool, judge: Judge, mode: str, seconds: float) -> dict:
    """Counts, mean value and (for chosen/rejected pairs) agreement: P(value > 0.5), ties counting half."""
    usable = [v.value for v in verdicts if v.usable]
    summary = {
        "judge": judge.name, "mode": mode, "samples": len(verdicts), "usable": len(usable),
        "unusable": len(verdicts) - len(usable),
        "unusable_by_reason": dict(sorted({r: sum(v.reason == r for v in verdicts) for r in {v.reason for v in verdicts if v.reason}}.items())),
        "mean_value": sum(usable) / len(usable) if usable else None,
        "seconds": round(seconds, 3), "stats": judge.stats.as_dict(),
    }
    if gold_first:
        wins = [1.0 if value > 0.5 else 0.5 if value == 0.5 else 0.0 for value in usable]
        summary["agreement_with_chosen"] = sum(wins) / len(wins) if wins else None
    return summary


def run_judge(config: JudgeCommandConfig) -> dict:
    """Judge every record of `config.data`; write the verdicts and the summary; return the summary."""
    from tandem.data import DataError, read_records
    from tandem.files import atomic_write_text, write_json

    parse_judge_spec(config.judge)  # a bad spec is reported before any data is read or model loaded
    records = read_records(config.data)[: config.limit]
    if not records:
        raise DataError("no records to judge", path=str(config.data))
    mode, fields = _pick_fields(records[0], config.mode)
    rows = []
    for record in records:
        if tuple(f for f in fields if f in record.data) != fields:
            _pick_fields(record, mode)  # raises naming the record's line
        rows.append([_text(record, "prompt")] + [_text(record, field) for field in fields])
    judge = _configured_judge(config)
    started, verdicts = time.perf_counter(), []
    with tqdm(total=len(rows), desc=f"judge ({mode})", disable=not config.progress) as bar:
        for start in range(0, len(rows), config.batch_size):
            columns = list(zip(*rows[start : start + config.batch_size]))
            ask = judge.score if mode == "score" else judge.compare
            verdicts.extend(ask(*map(list, columns)))
            bar.update(len(columns[0]))
    summary = summarise(verdicts, fields == ("chosen", "rejected"), judge, mode, time.perf_counter() - started)
    lines = []
    for record, verdict in zip(records, verdicts):
        entry = {"line": record.line, **{key: record.data[key] for key in ("prompt", *fields)},
                 "value": verdict.value, "reason": verdict.reason, "method": verdict.method, "raw": verdict.raw,
                 "detail": verdict.detail, "cached": verdict.cached}
        lines.append(json.dumps(entry, ensure_ascii=False))
    config.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.out, "\n".join(lines) + "\n")
    write_json(summary_path(config.out), summary)
    return summary


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.json")


def _run_and_report(config: JudgeCommandConfig) -> None:
    import typer

    from tandem.judges.base import UnusableVerdictError
    from tandem.judges.templates import TemplateError

    try:
        summary = run_judge(config)
    except (TemplateError, UnusableVerdictError) as error:
        typer.echo(f"tandem judge: {error}", err=True)
        raise typer.Exit(1) from None
    text = f"judged {summary['samples']} records ({summary['mode']}): {summary['usable']} usable, {summary['unusable']} unusable"
    if summary["unusable_by_reason"]:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in summary["unusable_by_reason"].items()) + ")"
    typer.echo(text)
    if summary["mean_value"] is not None:
        typer.echo(f"  mean value: {summary['mean_value']:.4f}")
    if summary["stats"].get("position_only_fraction") is not None:
        stats = summary["stats"]
        typer.echo(f"  same position won both orders: {stats['order_disagreements']} of {stats['pairs_both_orders']} pairs")
    if summary.get("agreement_with_chosen") is not None:
        typer.echo(f"  agreement with chosen: {summary['agreement_with_chosen']:.4f}")
    typer.echo(f"verdicts: {config.out}\nsummary: {summary_path(config.out)}")


def register(add_command) -> None:
    add_command(
        "judge", JudgeCommandConfig, _run_and_report,
        "Score or compare responses in a data file with a judge (local model, OpenAI-compatible endpoint or Python "
        "function); writes verdicts JSONL and a summary with unusable counts and agreement with chosen labels.",
    )
