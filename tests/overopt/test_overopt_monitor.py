import json
import math

import numpy as np
import pytest

from tandem.diagnostics.monitor import RewardHackingMonitor, ema


def run(monitor, proxy, gold, kl):
    return [monitor.update(step, proxy=p, gold=g, kl=k) for step, (p, g, k) in enumerate(zip(proxy, gold, kl))]


def over_optimised_curves(steps=80, noise=0.0, seed=0):
    """Gao-like: proxy grows with d, gold = d (alpha - beta log d) peaks at d* = e and then falls."""
    rng = np.random.default_rng(seed)
    d = np.linspace(0.0, 6.0, steps)
    proxy = 0.5 * d + rng.normal(0, noise, steps)
    gold = np.where(d > 0, d * (0.4 - 0.2 * np.log(np.where(d > 0, d, 1.0))), 0.0) + rng.normal(0, noise, steps)
    return proxy, gold, d**2


def test_flags_when_gold_peaks_and_falls_while_proxy_rises(tmp_path):
    proxy, gold, kl = over_optimised_curves(noise=0.02)
    monitor = RewardHackingMonitor(window=10, out=tmp_path)
    metrics = run(monitor, proxy, gold, kl)
    assert set(metrics[-1]) == {"monitor/proxy", "monitor/gold", "monitor/sqrt_kl", "monitor/divergence"}
    assert metrics[-1]["monitor/divergence"] == 1.0
    assert metrics[-1]["monitor/sqrt_kl"] == pytest.approx(6.0)
    # before the gold peak (d < e) nothing is flagged
    peak_step = int(np.searchsorted(np.sqrt(kl), math.e))
    assert not any(m["monitor/divergence"] for m in metrics[:peak_step])
    summary = monitor.report()
    assert summary["diverged"] and summary["first_divergence_step"] > peak_step
    assert summary["gold_peak_sqrt_kl"] == pytest.approx(math.e, abs=0.8)
    assert summary["proxy_peak_step"] == 79 and not summary["argmax_proxy_is_argmax_gold"]
    assert (tmp_path / "proxy_gold_vs_sqrt_kl.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "monitor.json").read_text())
    assert len(saved["records"]) == 80 and saved["summary"]["diverged"]


def test_does_not_flag_when_both_rise():
    d = np.linspace(0.0, 6.0, 80)
    rng = np.random.default_rng(1)
    monitor = RewardHackingMonitor()
    metrics = run(monitor, 0.5 * d + rng.normal(0, 0.02, 80), 0.3 * np.sqrt(d) + rng.normal(0, 0.02, 80), d**2)
    assert not any(m["monitor/divergence"] for m in metrics)
    summary = monitor.summary()
    assert not summary["diverged"] and summary["first_divergence_step"] is None


def test_does_not_flag_when_gold_falls_with_the_proxy():
    d = np.linspace(0.0, 6.0, 80)
    monitor = RewardHackingMonitor()
    assert not any(m["monitor/divergence"] for m in run(monitor, -0.5 * d, -0.5 * d, d**2))


def test_without_gold_only_proxy_and_kl_are_logged():
    monitor = RewardHackingMonitor()
    metrics = [monitor.update(step, proxy=float(step), kl=-0.1) for step in range(20)]
    assert "monitor/gold" not in metrics[-1] and metrics[-1]["monitor/divergence"] == 0.0
    assert metrics[0]["monitor/sqrt_kl"] == 0.0  # a negative k1 estimate reads as zero distance
    assert "gold_peak_step" not in monitor.summary()


def test_smoothed_series_is_the_ema():
    values = [1.0, 3.0, 2.0, 5.0, 4.0]
    assert ema(values, 0.5) == [1.0, 2.0, 2.0, 3.5, 3.75]
    monitor = RewardHackingMonitor(decay=0.5)
    run(monitor, values, values, [0.0] * 5)
    assert [r.proxy_smooth for r in monitor.records] == ema(values, 0.5)
    assert [r.gold_smooth for r in monitor.records] == ema(values, 0.5)


def test_bad_settings_and_values_are_rejected():
    with pytest.raises(ValueError, match="window"):
        RewardHackingMonitor(window=1)
    with pytest.raises(ValueError, match="decay"):
        RewardHackingMonitor(decay=1.0)
    with pytest.raises(ValueError, match="gold must be finite"):
        RewardHackingMonitor().update(0, proxy=1.0, gold=float("nan"), kl=0.0)
