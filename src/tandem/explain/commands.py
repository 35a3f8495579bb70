"""`tandem explain`: a readable report of why a reward model scores responses as it does and where a policy moved."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from tandem.config import InputPath
from tandem.data import SFT_FORMATS, DataError, read_records, validate
from tandem.data.io import Record
from tandem.explain.attribution import explain_policy_shift, explain_reward
from tandem.explain.report import plot_record, render_tokens_png, write_html
from tandem.files import write_json
from tandem.generation.engines import EngineOptions


class ExplainConfig(EngineOptions):
    """What to explain and how: models, the prompt/response records, attribution settings."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/explain"), description="Output folder: report.html, record_N.png, tokens_N.png, explanations.json.")
    reward_model: Path | None = Field(None, description="Reward-model directory whose scores are attributed to tokens.")
    policy: Path | None = Field(None, description="Policy (causal LM) directory; with --reference, per-token log-prob change and KL.")
    reference: Path | None = Field(None, description="Reference model (e.g. the SFT model) the policy is compared with.")
    data: InputPath | None = Field(None, description="JSONL/JSON/CSV/Parquet of records with prompt and completion (or response), or messages.")
    task: str = Field("sentiment", description="Without --data: built-in task whose held-out prompts the policy answers.")
    n_records: int = Field(4, ge=1, description="Records to explain (the first N of --data, or N task prompts).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature when responses are generated (0: greedy).")
    ig_steps: int = Field(128, ge=1, description="Integration intervals of integrated gradients.")
    ig_method: Literal["trapezoid_quadratic", "trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = Field(
        "trapezoid_quadratic", description="Quadrature rule of the path integral (quadratic: grid dense near the baseline).")
    baseline: Literal["zero", "pad"] = Field("zero", description="Baseline rows: zeros (a blank for RMSNorm models) or the pad token's embedding.")
    scope: Literal["response", "all"] = Field("response", description="Replace only the response's tokens in the baseline (prompt and EOS kept), or all.")
    max_length: int = Field(256, ge=8, description="Longest prompt + response in tokens (the response is truncated).")
    seed: int = Field(0, description="Seed for generated responses.")

    @model_validator(mode="after")
    def _something_to_explain(self) -> ExplainConfig:
        if self.reference is not None and self.policy is None:
            raise ValueError("--reference is compared with a --policy: give both")
        if self.reward_model is None and (self.policy is None or self.reference is None):
            raise ValueError("nothing to explain: give --reward-model, or --policy with --reference, or both")
        return self


def records_from_file(path: Path, tokenizer, limit: int) -> list[dict]:
    """The first `limit` valid {prompt, completion} records; a `response` field is read as the completion."""
    records = []
    for record in read_records(path):
        data = dict(record.data)
        if "response" in data and "completion" not in data:
            data["completion"] = data.pop("response")
        records.append(Record(data, record.path, record.line, record.unit))
    if not records:
        raise DataError("no records to explain", path=str(path))
    rows = validate(records[:limit], SFT_FORMATS, tokenizer)
    return [{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]


def generated_records(config: ExplainConfig, policy, tokenizer) -> list[dict]:
    """Held-out task prompts answered by the policy, sampled on `--engine` (vLLM starts from the policy's path)."""
    from tandem.generation.engines import engine_for
    from tandem.tasks import get_task

    task = get_task(config.task)
    prompts = [row["prompt"] for row in task.eval_prompts(config.n_records, seed=config.seed)]
    engine = engine_for(config.engine, policy, tokenizer, config.policy)
    texts = engine.sample(prompts, max_new_tokens=task.max_new_tokens, temperature=config.temperature,
                          seed=config.seed).texts
    return [{"prompt": p, "completion": t} for p, t in zip(prompts, texts)]


def run_explain(config: ExplainConfig) -> dict:
    """Explain every record with the models given; write the HTML report, PNGs and the numbers as JSON."""
    from tandem.models.loading import load_causal_lm, load_reward_model, load_tokenizer

    started = time.perf_counter()
    reward_model = load_reward_model(config.reward_model) if config.reward_model else None
    reward_tokenizer = load_tokenizer(config.reward_model) if config.reward_model else None
    policy = load_causal_lm(config.policy).eval() if config.policy else None
    reference = load_causal_lm(config.reference).eval() if config.reference else None
    policy_tokenizer = load_tokenizer(config.policy) if config.policy else None
    if config.data is not None:
        records = records_from_file(config.data, reward_tokenizer or policy_tokenizer, config.n_records)
    elif policy is not None:
        records = generated_records(config, policy, policy_tokenizer)
    else:
        raise FileNotFoundError("no --data given and no --policy to generate responses with: pass one of them")
    config.out.mkdir(parents=True, exist_ok=True)
    explained, images = [], []
    for index, row in enumerate(records):
        record: dict = {"prompt": row["prompt"], "completion": row["completion"]}
        if reward_model is not None:
            record["reward"] = explain_reward(reward_model, reward_tokenizer, row["prompt"], row["completion"], config.ig_steps,
                                              config.ig_method, config.baseline, config.scope, config.max_length).to_dict()
        if policy is not None and reference is not None:
            record["policy"] = explain_policy_shift(policy, reference, policy_tokenizer, row["prompt"], row["completion"],
                                                    config.max_length).to_dict()
        tokens_png = render_tokens_png(record, config.out / f"tokens_{index + 1}.png")
        plots_png = plot_record(record, config.out / f"record_{index + 1}.png")
        images.append([tokens_png.name, plots_png.name])
        explained.append(record)
    header = {"reward model": str(config.reward_model or "-"), "policy": str(config.policy or "-"),
              "reference": str(config.reference or "-"), "records": str(config.data or f"{config.task} held-out prompts, policy samples"),
              "integrated gradients": f"{config.ig_steps} steps, {config.ig_method}, {config.baseline} baseline on {config.scope} tokens"}
    report = write_html(config.out / "report.html", explained, images, header)
    write_json(config.out / "explanations.json", {"config": config.model_dump(mode="json"), "records": explained})
    seconds = time.perf_counter() - started
    print(f"report: {report} ({len(explained)} records, {seconds:.1f}s)")
    return {"report": report, "records": explained, "seconds": seconds}


def register(add_command) -> None:
    """Add `tandem explain` with `add_command(name, config_class, run, help)` (see `tandem.cli`)."""
    add_command("explain", ExplainConfig, run_explain,
                "Explain a reward model's scores (integrated gradients, occlusion) and a policy's per-token log-prob change "
                "and KL to its reference, as an HTML report with coloured tokens and PNG plots.")
