"""Experiment trackers (TensorBoard, Weights & Biases, MLflow, trackio) through accelerate's tracker API.

`--report-to wandb,mlflow` picks any subset; `metrics.jsonl` in the run directory is always written, and
by default TensorBoard logs go to `out/tensorboard` when the `tensorboard` package is installed. Each
training run is one tracker run: its name (`--run-name`), resolved config, every logged step's metrics,
and the plots the command makes (as images where the tracker takes images, else as files).

Where the data goes is each tracker's own setting: `WANDB_MODE=offline` (files under `out/wandb`),
`MLFLOW_TRACKING_URI` (a server, MLflow 3's default `sqlite:///mlflow.db` in the working directory, or a
`file:` store with `MLFLOW_ALLOW_FILE_STORE=true`), `TRACKIO_DIR` (trackio's local SQLite store; default
under the Hugging Face cache).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class MissingTrackerError(ImportError):
    """A tracker given to --report-to whose package is not installed."""


@dataclass(frozen=True)
class RunInfo:
    """What a tracker run needs to know: where the run lives and what it is called."""

    out: Path
    project: str
    name: str
    group: str | None = None


@dataclass(frozen=True)
class TrackerKind:
    module: str  # what must be importable
    pip: str  # what to install when it is not
    make: Callable[[RunInfo], Any]  # -> an accelerate GeneralTracker (not started)
    log_image: Callable[[Any, str, Path, int], None]  # (tracker, key, png, step)


def _image_array(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _tensorboard(run: RunInfo):
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker("tensorboard", run.out)  # logs in out/tensorboard, where the docs say they are


def _tensorboard_image(tracker, key: str, path: Path, step: int) -> None:
    tracker.log_images({key: _image_array(path)[None]}, step=step, dataformats="NHWC")


def _wandb(run: RunInfo):
    from accelerate.tracking import WandBTracker

    return WandBTracker(run.project, name=run.name, group=run.group, dir=str(run.out))


def _wandb_image(tracker, key: str, path: Path, step: int) -> None:
    tracker.log_images({key: [_image_array(path)]}, step=step)


def _mlflow(run: RunInfo):
    from accelerate.tracking import MLflowTracker

    return MLflowTracker(run.project, run_name=run.name, tags={"group": run.group} if run.group else None)


def _mlflow_image(tracker, key: str, path: Path, step: int) -> None:
    import mlflow

    mlflow.log_image(_image_array(path), key=key.replace("/", "_"), step=step)
    tracker.log_artifact(str(path), artifact_path="plots")


def _trackio(run: RunInfo):
    from accelerate.tracking import TrackioTracker

    return TrackioTracker(run.project, name=run.name, group=run.group, embed=False)


def _trackio_image(tracker, key: str, path: Path, step: int) -> None:
    import trackio

    tracker.log({key: trackio.Image(str(path))}, step=step)


TRACKERS: dict[str, TrackerKind] = {
    "tensorboard": TrackerKind("tensorboard", "tensorboard", _tensorboard, _tensorboard_image),
    "wandb": TrackerKind("wandb", "wandb", _wandb, _wandb_image),
    "mlflow": TrackerKind("mlflow", "mlflow", _mlflow, _mlflow_image),
    "trackio": TrackerKind("trackio", "trackio", _trackio, _trackio_image),
}


def parse_tracker_names(value: Any) -> list[str] | None:
    """`"wandb,mlflow"`, `["wandb", "mlflow"]` or `["wandb,mlflow"]` (repeated flags) -> checked names; "none" -> []."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker {', '.join(map(repr, unknown))}; choose any of: {', '.join(TRACKERS)} "
                         "(comma-separated), or none")
    return list(dict.fromkeys(names))


def installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name].module) is not None


def resolve_trackers(names: list[str] | None) -> list[str]:
    """The trackers to use: the given ones (each must be installed), or by default TensorBoard when installed."""
    if names is None:
        return ["tensorboard"] if installed("tensorboard") else []
    missing = [n for n in names if not installed(n)]
    if missing:
        packages = " ".join(TRACKERS[n].pip for n in missing)
        raise MissingTrackerError(f"--report-to {','.join(missing)}: not installed; pip install {packages} "
                                  "(or pip install 'tandem[trackers]' for all of them)")
    return names


def make_trackers(names: list[str] | None, run: RunInfo) -> list | None:
    """accelerate tracker objects for `Accelerator(log_with=...)` (None: no tracker); they start in `Trackers.start`."""
    return [TRACKERS[name].make(run) for name in resolve_trackers(names)] or None


def flat_config(config: dict) -> dict[str, Any]:
    """A resolved config as tracker hyper-parameters: scalars kept, None as "none", anything else as JSON."""
    flat = {}
    for key, value in config.items():
        if value is None:
            flat[key] = "none"
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        else:
            flat[key] = json.dumps(value, default=str)
    return flat


class Trackers:
    """The started trackers of one run: `log` a metrics record, `log_images` of plots, `close` at the end."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    @classmethod
    def start(cls, accelerator, project: str, config: dict) -> Trackers | None:
        """Start the trackers given to `Accelerator(log_with=...)` (main process only); None when there are none."""
        if not accelerator.log_with or not accelerator.is_main_process:
            return None
        accelerator.init_trackers(project, config=flat_config(config))
        return cls(accelerator)

    def log(self, record: dict) -> None:
        values = {k: v for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            self.accelerator.log(values, step=int(record["step"]))

    def log_images(self, images: dict[str, Path], step: int) -> None:
        """PNG files as images (TensorBoard, W&B, trackio; MLflow: an image and an artifact)."""
        for tracker in self.accelerator.trackers:
            for key, path in images.items():
                if path is not None and Path(path).exists():
                    TRACKERS[tracker.name].log_image(tracker, key, Path(path), step)

    def close(self) -> None:
        # not accelerator.end_training(): that also destroys the process group, which later stages reuse
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()
