"""Callbacks: what watches a training loop plugs in here, instead of subclassing a trainer or a special case in the loop.

A callback is any object with some of these methods (subclass `Callback` for the no-op defaults); both
loops (`Trainer.train`, `OnlineTrainer.train`) call them, in the order the callbacks were given:

  on_rollout(trainer, step, batch, stats)   online loop, each step after the rollout is scored and its
                                            advantages computed (`step` counts from 0: the step being taken);
                                            returns metrics logged with the step
  on_step(trainer, step, record)            after each training step (`step` counts from 1), with the step's
                                            metrics (`record`, as logged when it is a logging step)
  on_evaluate(trainer, step, metrics)       after each evaluation, with its metrics, the model still in eval mode
                                            (`trainer.accelerator.unwrap_model(trainer.model)`); returns metrics
                                            to add (a study's own measurements: `tandem.overopt.ppo_run`)
  on_train_end(trainer, writer)             main process, after the last step, before the final checkpoint,
                                            evaluation and model; `writer` holds the run's trackers (or None)

`reads_kl = True` makes the online loop measure the KL to the reference every step for the callback
(`stats["kl"]` in on_rollout), as the reward-hacking monitor needs (`tandem.diagnostics.monitor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Callback:
    """No-op hooks; override those you need."""

    reads_kl = False

    def on_rollout(self, trainer, step: int, batch, stats: dict[str, float]) -> dict[str, float] | None:
        return None

    def on_step(self, trainer, step: int, record: dict[str, float]) -> None:
        return None

    def on_evaluate(self, trainer, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
        return None

    def on_train_end(self, trainer, writer) -> None:
        return None


def fire(callbacks: Sequence[Any], hook: str, *args) -> dict[str, float]:
    """Call `hook` on every callback that has it; the metrics they return, merged in order."""
    merged: dict[str, float] = {}
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            merged.update(method(*args) or {})
    return merged


def reads_kl(callbacks: Sequence[Any]) -> bool:
    """Whether any callback needs the KL to the reference measured every step."""
    return any(getattr(callback, "reads_kl", False) for callback in callbacks)
