"""Watch an RL run for reward hacking (over-optimisation, Gao et al. 2022): proxy reward rising while the gold
reward falls.

Fed once per RL step with the proxy reward being optimised, the gold reward when one exists (a task's
gold scorer, a held-out judge or reward function) and the KL to the reference, the monitor keeps
exponentially smoothed histories and applies one rule:

    over the last `window` updates that carry a gold reward,
        proxy rose:  P_t - P_{t-window+1}            >= min_proxy_rise
        gold fell:   max(G_{t-window+1..t}) - G_t    >= min_gold_drop
    where P, G are the smoothed series (EMA, s_t = decay * s_{t-1} + (1 - decay) * x_t, s_1 = x_1).

Both must hold for `monitor/divergence` = 1. The peak of the gold history against the peak of the
proxy history is the empirical form of over-optimisation: argmax_pi E_pi[r_proxy] != argmax_pi E_pi[r_gold].

In tandem's online RL loop it is a callback (`on_rollout`, `on_train_end`: `OnlineTrainer(..., callbacks=[monitor])`);
in any other RL loop:

    monitor = RewardHackingMonitor(out=run_dir / "monitor")
    for step in ...:
        metrics.update(monitor.update(step, proxy=mean_proxy, gold=mean_gold_or_None, kl=mean_sequence_kl))
    summary = monitor.report()   # writes monitor.json and proxy_gold_vs_sqrt_kl.png to `out`
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tandem.plotting import headless_pyplot


def ema(values: list[float], decay: float) -> list[float]:
    """Exponential moving average s_t = decay * s_{t-1} + (1 - decay) * x_t, starting at s_1 = x_1."""
    smoothed: list[float] = []
    for value in values:
        smoothed.append(value if not smoothed else decay * smoothed[-1] + (1 - decay) * value)
    return smoothed


@dataclass
class MonitorRecord:
    step: int
    proxy: float
    gold: float | None
    kl: float
    proxy_smooth: float
    gold_smooth: float | None
    divergence: bool

    @property
    def sqrt_kl(self) -> float:
        return math.sqrt(max(self.kl, 0.0))


@dataclass
class RewardHackingMonitor:
    """Proxy vs gold reward vs sqrt(KL) over an RL run, flagging divergence by the rule in the module docstring.

    Args:
        window: updates (with a gold reward) the rule looks back over.
        decay: EMA decay of the smoothed series (0: no smoothing).
        min_proxy_rise: how much the smoothed proxy must rise over the window (proxy units).
        min_gold_drop: how far the smoothed gold must fall below its highest value in the window (gold units).
        out: folder for `report()`'s JSON and PNG (None: `report()` writes nothing unless given a folder).
    """

    window: int = 10
    decay: float = 0.8
    min_proxy_rise: float = 0.02
    min_gold_drop: float = 0.05
    out: Path | None = None
    records: list[MonitorRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be at least 2 updates, got {self.window}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {self.decay}")
        if self.min_proxy_rise < 0 or self.min_gold_drop < 0:
            raise ValueError("min_proxy_rise and min_gold_drop must be non-negative")

    def _smooth(self, previous: float | None, value: float) -> float:
        return value if previous is None else self.decay * previous + (1 - self.decay) * value

    def update(self, step: int, proxy: float, gold: float | None = None, kl: float = 0.0) -> dict[str, float]:
        """Record one RL step; returns the metrics to log (`monitor/*`; `monitor/gold` only when gold is known)."""
        for name, value in (("proxy", proxy), ("kl", kl)) + ((("gold", gold),) if gold is not None else ()):
            if not math.isfinite(value):
                raise ValueError(f"monitor.update(step={step}): {name} must be finite, got {value}")
        last_proxy = self.records[-1].proxy_smooth if self.records else None
        last_gold = next((r.gold_smooth for r in reversed(self.records) if r.gold_smooth is not None), None)
        record = MonitorRecord(
            step=int(step), proxy=float(proxy), gold=None if gold is None else float(gold), kl=float(kl),
            proxy_smooth=self._smooth(last_proxy, float(proxy)),
            gold_smooth=None if gold is None else self._smooth(last_gold, float(gold)), divergence=False,
        )
        self.records.append(record)
        record.divergence = gold is not None and self._diverging()
        metrics = {"monitor/proxy": record.proxy_smooth, "monitor/sqrt_kl": record.sqrt_kl,
                   "monitor/divergence": float(record.divergence)}
        if record.gold_smooth is not None:
            metrics["monitor/gold"] = record.gold_smooth
        return metrics

    # As a training-loop callback (`tandem.trainers.callbacks`): fed by the online loop after every rollout.
    reads_kl = True  # the loop measures KL(policy || reference) every step for it

    def on_rollout(self, trainer, step: int, batch, stats: dict[str, float]) -> dict[str, float] | None:
        """The rollout's mean gold reward (the trainer's task) with the step's proxy reward and KL; its metrics."""
        if trainer.task is None:
            return None
        gold = trainer.task.gold_reward(batch.prompts, batch.completions, **batch.columns)
        mean_gold = sum(gold) / len(gold)
        return {"gold": mean_gold, **self.update(step, proxy=stats["reward"], gold=mean_gold, kl=stats.get("kl", 0.0))}

    def on_train_end(self, trainer, writer) -> None:
        """The report in `out`, and its gold-vs-KL plot as an image in the run's trackers."""
        figure = self.report().get("figure")
        if writer is not None and figure:
            writer.log_images({"monitor/proxy_gold_vs_sqrt_kl": Path(figure)}, trainer.total_steps)

    def _diverging(self) -> bool:
        with_gold = [r for r in self.records if r.gold_smooth is not None][-self.window:]
        if len(with_gold) < self.window:
            return False
        proxy_rise = with_gold[-1].proxy_smooth - with_gold[0].proxy_smooth
        gold_drop = max(r.gold_smooth for r in with_gold) - with_gold[-1].gold_smooth
        return proxy_rise >= self.min_proxy_rise and gold_drop >= self.min_gold_drop

    @property
    def diverged(self) -> bool:
        return any(r.divergence for r in self.records)

    def summary(self) -> dict:
        """Where each smoothed series peaked (step, sqrt KL), and the first step flagged as diverging."""
        if not self.records:
            return {"updates": 0, "diverged": False}
        proxy_peak = max(self.records, key=lambda r: r.proxy_smooth)
        flagged = [r.step for r in self.records if r.divergence]
        summary = {
            "updates": len(self.records), "diverged": bool(flagged), "first_divergence_step": flagged[0] if flagged else None,
            "divergent_steps": len(flagged), "proxy_peak_step": proxy_peak.step, "proxy_peak_sqrt_kl": proxy_peak.sqrt_kl,
            "rule": {"window": self.window, "decay": self.decay, "min_proxy_rise": self.min_proxy_rise,
                     "min_gold_drop": self.min_gold_drop},
        }
        with_gold = [r for r in self.records if r.gold_smooth is not None]
        if with_gold:
            gold_peak = max(with_gold, key=lambda r: r.gold_smooth)
            summary.update({"gold_peak_step": gold_peak.step, "gold_peak_sqrt_kl": gold_peak.sqrt_kl,
                            "gold_peak": gold_peak.gold_smooth, "gold_final": with_gold[-1].gold_smooth,
                            "argmax_proxy_is_argmax_gold": gold_peak.step == proxy_peak.step})
        return summary

    def report(self, out: Path | None = None) -> dict:
        """The summary; also written as `monitor.json` with a PNG of proxy and gold vs sqrt(KL) when a folder is set."""
        summary = self.summary()
        folder = Path(out) if out is not None else self.out
        if folder is not None and self.records:
            folder.mkdir(parents=True, exist_ok=True)
            summary["figure"] = str(self.plot(folder / "proxy_gold_vs_sqrt_kl.png"))
            records = [{**vars(r), "sqrt_kl": r.sqrt_kl} for r in self.records]
            (folder / "monitor.json").write_text(json.dumps({"summary": summary, "records": records}, indent=2))
        return summary

    def plot(self, path: Path) -> Path:
        """Proxy (left axis) and gold (right axis) against sqrt(KL); raw points faint, smoothed lines solid."""
        plt = headless_pyplot()

        d = [r.sqrt_kl for r in self.records]
        figure, proxy_axis = plt.subplots(figsize=(6, 3.8))
        proxy_axis.scatter(d, [r.proxy for r in self.records], s=6, color="tab:blue", alpha=0.25)
        proxy_axis.plot(d, [r.proxy_smooth for r in self.records], color="tab:blue", label="proxy (smoothed)")
        proxy_axis.set_xlabel("sqrt(KL(policy || reference))")
        proxy_axis.set_ylabel("proxy reward", color="tab:blue")
        gold = [r for r in self.records if r.gold_smooth is not None]
        if gold:
            gold_axis = proxy_axis.twinx()
            gold_axis.scatter([r.sqrt_kl for r in gold], [r.gold for r in gold], s=6, color="tab:orange", alpha=0.25)
            gold_axis.plot([r.sqrt_kl for r in gold], [r.gold_smooth for r in gold], color="tab:orange",
                           label="gold (smoothed)")
            gold_axis.set_ylabel("gold reward", color="tab:orange")
            flagged = [r for r in gold if r.divergence]
            if flagged:
                gold_axis.scatter([r.sqrt_kl for r in flagged], [r.gold_smooth for r in flagged], marker="x",
                                  color="tab:red", zorder=3, label="divergence flagged")
            gold_axis.legend(loc="lower right", fontsize=8)
        proxy_axis.legend(loc="upper left", fontsize=8)
        proxy_axis.grid(alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path
