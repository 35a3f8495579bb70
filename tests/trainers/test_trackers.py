"""Experiment trackers (--report-to): names checked when parsed, missing packages named at start, and what each
tracker receives from a real run, read back from its local store (W&B offline, MLflow file store, trackio's
SQLite store, TensorBoard event files); no network."""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tandem import tracking
from tandem.cli import app
from tandem.tracking import TRACKERS, MissingTrackerError, installed, parse_tracker_names, resolve_trackers
from tandem.trainers.sft import SFTConfig


def test_tracker_names_come_comma_separated_or_repeated():
    assert parse_tracker_names("wandb, mlflow") == ["wandb", "mlflow"]
    assert parse_tracker_names(["wandb", "mlflow,trackio", "wandb"]) == ["wandb", "mlflow", "trackio"]
    assert parse_tracker_names("none") == [] and parse_tracker_names(None) is None
    assert SFTConfig(report_to="tensorboard,trackio").report_to == ["tensorboard", "trackio"]


def test_an_unknown_tracker_fails_at_parse_time_with_the_names_to_choose_from():
    with pytest.raises(ValidationError, match="unknown tracker 'neptune'; choose any of: tensorboard, wandb, mlflow, trackio"):
        SFTConfig(report_to="wandb,neptune")
    result = CliRunner().invoke(app, ["sft", "--report-to", "wandb,neptune"])
    assert result.exit_code == 2 and "--report-to" in result.output and "trackio" in result.output


def test_a_missing_tracker_package_fails_at_start_with_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "installed", lambda name: name == "tensorboard")
    with pytest.raises(MissingTrackerError, match="pip install wandb mlflow"):
        resolve_trackers(["tensorboard", "wandb", "mlflow"])
    # the quickstart checks before its first stage; the CLI says it in one line
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "qs"), "--report-to", "trackio"])
    assert result.exit_code == 1 and "pip install trackio" in result.output
    assert not (tmp_path / "qs" / "pretrain").exists()


def test_by_default_tensorboard_when_installed(monkeypatch):
    assert resolve_trackers(None) == (["tensorboard"] if installed("tensorboard") else [])
    monkeypatch.setattr(tracking, "installed", lambda name: False)
    assert resolve_trackers(None) == [] and resolve_trackers([]) == []


# A tiny pre-training run with every installed tracker, then the quickstart's report run (metrics and a plot),
# in a fresh process: trackio reads TRACKIO_DIR on import and W&B keeps one global run.
RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tandem.pipeline import QuickstartConfig, report_to_trackers
    from tandem.trainers.pretrain import PretrainConfig, run_pretrain

    out, names = Path(sys.argv[1]), sys.argv[2].split(",")
    run_pretrain(PretrainConfig(out=out / "pre", size="tiny", n_documents=200, n_eval=4, max_steps=3, batch_size=4,
                                max_length=32, log_every=1, progress=False, mixed_precision="no", threads=1,
                                report_to=names, run_name="qs/pre", run_group="qs"))
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.plot([0, 1], [0, 1])
    figure.savefig(out / "ppo_reward.png")
    report = {"stages": [{"name": "sft", "gold_reward": 0.5, "seconds": 2.0}, {"name": "ppo", "gold_reward": 0.6}]}
    report_to_trackers(QuickstartConfig(out=out, report_to=names), "qs", report, [out / "ppo_reward.png"])
""")


def _wandb_records(run_file: Path) -> list:
    """The protobuf records of a W&B transaction log (`run-ID.wandb`: LevelDB log framing, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = run_file.read_bytes(), 32768, 7, [], b""
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            position += left
            continue
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_run(folder: Path) -> dict:
    (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    received = {"history": [], "config": {}, "name": None}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            received["name"], received["group"] = record.run.display_name, record.run.run_group
        elif kind == "config":
            received["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            received["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                        for item in record.history.item})
    return received


@pytest.mark.e2e
def test_each_tracker_receives_the_run_name_config_metrics_and_plots(tmp_path, monkeypatch):
    names = [name for name in TRACKERS if installed(name)]
    if not names:
        pytest.skip("no tracker package installed (pip install 'tandem[trackers]')")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true",
           "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "TRACKIO_DIR": str(tmp_path / "trackio"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), ",".join(names)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if "train/loss" in r]
    assert train_steps == [1, 2, 3] and any("eval/loss" in r for r in logged)

    if "tensorboard" in names:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        run = EventAccumulator(str(tmp_path / "pre" / "tensorboard")).Reload()
        assert [e.step for e in run.Scalars("train/loss")] == train_steps and "eval/loss" in run.Tags()["scalars"]
        report = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
        assert "report/ppo_reward" in report.Tags()["images"] and "report/sft/gold_reward" in report.Tags()["scalars"]

    if "wandb" in names:
        run = _wandb_run(tmp_path / "pre")
        assert run["name"] == "qs/pre" and run["group"] == "qs"
        assert run["config"]["max_steps"] == 3 and run["config"]["command"] == "pretrain"
        assert [row["_step"] for row in run["history"]] == train_steps, run["history"]
        assert "eval/gold_reward" in run["history"][-1] and "train/loss" in run["history"][0]
        report = _wandb_run(tmp_path)
        logged = {key: value for row in report["history"] for key, value in row.items()}
        assert report["name"] == "qs/report" and logged["report/ppo/gold_reward"] == 0.6
        assert logged["report/ppo_reward/_type"] == "images/separated"  # nested keys joined by "/"
        assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/report/ppo_reward_*.png"))

    if "mlflow" in names:
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

        client = MlflowClient((tmp_path / "mlruns").as_uri())
        runs = {r.info.run_name: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
        assert set(runs) == {"qs/pre", "qs/report"}
        pre = runs["qs/pre"]
        assert pre.data.params["max_steps"] == "3" and pre.data.tags["group"] == "qs"
        assert [m.step for m in client.get_metric_history(pre.info.run_id, "train/loss")] == train_steps
        assert "eval/gold_reward" in pre.data.metrics
        artifacts = [a.path for a in client.list_artifacts(runs["qs/report"].info.run_id, "plots")]
        assert artifacts == ["plots/ppo_reward.png"]

    if "trackio" in names:
        check = textwrap.dedent("""
            import json
            from trackio.sqlite_storage import SQLiteStorage
            print(json.dumps({run: SQLiteStorage.get_logs("tandem", run) for run in SQLiteStorage.get_runs("tandem")},
                             default=str))
        """)
        read = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
        runs = json.loads(read.stdout.strip().splitlines()[-1])
        assert set(runs) == {"qs/pre", "qs/report"}
        assert [r["step"] for r in runs["qs/pre"] if "train/loss" in r] == train_steps
        assert any("eval/gold_reward" in r for r in runs["qs/pre"])
        assert any("report/ppo_reward" in r for r in runs["qs/report"])
