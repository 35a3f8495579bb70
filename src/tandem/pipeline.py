"""`tandem quickstart`: the InstructGPT / ChatGPT recipe (Ouyang et al. 2022) on a built-in task, stage by stage.

Pre-train a tiny model on the task corpus, fine-tune it on demonstrations, train a reward model on
preference pairs, optimise the SFT policy against the reward model with PPO (KL to the SFT model), and
report what each stage achieved on held-out prompts: gold reward of sampled completions, KL to the
SFT model, reward-model accuracy against gold labels; plus plots of reward and KL over PPO training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem import files
from tandem.plotting import headless_pyplot
from tandem.presets import PRESETS
from tandem.tracking import TRACKERS, RunInfo, Trackers, make_trackers, parse_tracker_names, resolve_trackers

from tandem.trainers.ppo import PPOConfig, run_ppo
from tandem.trainers.pretrain import PretrainConfig, run_pretrain
from tandem.trainers.rm import RMConfig, run_rm
from tandem.trainers.sft import SFTConfig, run_sft


class QuickstartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/quickstart"), description="Run directory; each stage writes a sub-directory.")
    task: str = Field("sentiment", description="Built-in task to run the pipeline on.")
    preset: Literal["default", "full", "smoke"] = Field(
        "default", description="Stage sizes: default (the ~1M model, about 2.5 minutes on 2 cores), full (the ~5M model, 3.5-5 minutes) or smoke (seconds, for CI)."
    )
    seed: int = Field(0, description="Seed for every stage.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="Autocast precision for every stage.")
    progress: bool = Field(True, description="Show progress bars.")
    resume: bool = Field(False, description="Continue an interrupted pipeline: finished stages are reused.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads for every stage (default: torch's choice).")
    report_to: list[str] | None = Field(
        None, description=f"Experiment trackers for every stage, comma-separated: any of {', '.join(TRACKERS)}, or none "
        "(default: tensorboard when installed). Each stage is one run, and a last run holds the report and plots."
    )
    project: str = Field("tandem", description="Tracker project (W&B and trackio project, MLflow experiment).")
    run_name: str | None = Field(None, description="Tracker run group; stages are NAME/pretrain, ... (default: the --out folder's name).")

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value):
        return parse_tracker_names(value)


def run_quickstart(config: QuickstartConfig) -> dict:
    preset = PRESETS[config.preset]
    resolve_trackers(config.report_to)  # a missing tracker package fails now, not after pre-training
    group = config.run_name or config.out.resolve().name
    common = {"seed": config.seed, "mixed_precision": config.mixed_precision, "progress": config.progress,
              "task": config.task, "resume": config.resume, "threads": config.threads,
              "report_to": config.report_to, "project": config.project, "run_group": group,
              "final_checkpoint": True}  # tiny stages: a finished one is reused on --resume
    stages: list[dict] = []
    cpu_seconds: dict[str, float] = {}

    def stage(name: str, config_class, run, **settings):
        stage_config = config_class(out=config.out / name, run_name=f"{group}/{name}", **common, **preset[name],
                                    **settings)
        started, cpu_started = time.perf_counter(), time.process_time()
        print(f"\n=== stage {len(stages) + 1}: {name} ===", flush=True)
        result = run(stage_config)
        cpu_seconds[name] = time.process_time() - cpu_started
        return result, time.perf_counter() - started

    pre, seconds = stage("pretrain", PretrainConfig, run_pretrain)
    stages.append({"name": "pretrain", "gold_reward": pre.metrics.get("eval/gold_reward"), "kl_to_sft": None,
                   "seconds": seconds, "eval_loss": pre.metrics.get("eval/loss")})
    sft, seconds = stage("sft", SFTConfig, run_sft, model=pre.model_dir)
    stages.append({"name": "sft", "gold_reward": sft.metrics.get("eval/gold_reward"), "kl_to_sft": 0.0,
                   "seconds": seconds, "eval_loss": sft.metrics.get("eval/loss")})
    rm, seconds = stage("rm", RMConfig, run_rm, model=sft.model_dir)
    stages.append({"name": "rm", "gold_reward": None, "kl_to_sft": None, "seconds": seconds,
                   "rm_accuracy": rm.metrics.get("eval/accuracy"), "eval_loss": rm.metrics.get("eval/loss")})
    ppo, seconds = stage("ppo", PPOConfig, run_ppo, model=sft.model_dir, reward=f"model:{rm.model_dir}")
    stages.append({"name": "ppo", "gold_reward": ppo.metrics.get("eval/gold_reward"),
                   "kl_to_sft": ppo.metrics.get("eval/kl_to_reference"), "seconds": seconds})
    report = {"task": config.task, "preset": config.preset, "stages": stages,
              "stage_seconds": {s["name"]: round(s["seconds"], 1) for s in stages},
              "stage_cpu_seconds": {k: round(v, 1) for k, v in cpu_seconds.items()},
              "threads": torch.get_num_threads()}
    write_report(config.out, report)
    plots = plot_training(config.out / "ppo" / "metrics.jsonl", config.out)
    report_to_trackers(config, group, report, plots)
    return report


def report_to_trackers(config: QuickstartConfig, group: str, report: dict, plots: list[Path]) -> None:
    """One more tracker run, NAME/report: each stage's results as metrics, and the PPO plots as images."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    trackers = make_trackers(config.report_to, RunInfo(config.out, config.project, f"{group}/report", group))
    if not trackers:
        return
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True, log_with=trackers)
    run = Trackers.start(accelerator, config.project, {"command": "quickstart", **config.model_dump(mode="json")})
    if run is None:
        return
    metrics = {f"report/{s['name']}/{key}": value for s in report["stages"] for key, value in s.items()
               if key != "name" and isinstance(value, (int, float))}
    run.log({"step": 0, **metrics})
    run.log_images({f"report/{path.stem}": path for path in plots}, step=0)
    run.close()


def plot_training(metrics_file: Path, out: Path) -> list[Path]:
    """PNG plots of reward and KL over the PPO stage's training steps."""
    plt = headless_pyplot()

    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    written = []
    for key, label in (("train/reward", "reward-model score"), ("train/kl", "KL(policy || SFT) per sequence")):
        points = [(r["step"], r[key]) for r in records if key in r]
        figure, axis = plt.subplots(figsize=(5, 3.2))
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        axis.set_xlabel("PPO step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = out / f"ppo_{key.split('/')[-1]}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def write_report(out: Path, report: dict) -> None:
    rows = ["| stage | gold reward | KL to SFT | RM accuracy | seconds |", "|---|---|---|---|---|"]
    for s in report["stages"]:
        def fmt(value):
            return "-" if value is None else f"{value:.3f}"
        rows.append(f"| {s['name']} | {fmt(s.get('gold_reward'))} | {fmt(s.get('kl_to_sft'))} | "
                    f"{fmt(s.get('rm_accuracy'))} | {s['seconds']:.1f} |")
    table = "\n".join(rows)
    files.write_report(out, report, f"# tandem quickstart: {report['task']} ({report['preset']})\n\n{table}\n")
    print("\n" + table + f"\n\nreport: {out / 'report.json'}")
