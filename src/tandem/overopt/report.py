"""Figures and the Markdown report of `tandem overopt`: gold and proxy vs d = sqrt(KL) with Gao et al. fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem.overopt.fits import GAO_FORMS
from tandem import files
from tandem.plotting import headless_pyplot


def _fitted(curve: dict, form: str, d_max: float) -> tuple[np.ndarray, np.ndarray] | None:
    fit = curve["fit"]
    if "alpha" not in fit:
        return None
    d = np.linspace(0.0, d_max * 1.05, 200)
    return d, curve["gold_at_0"] + GAO_FORMS[form].curve(d, fit["alpha"], fit["beta"])


def _coefficients(curve: dict) -> str:
    fit = curve["fit"]
    return f"alpha={fit['alpha']:.3f}, beta={fit['beta']:.3f}, R2={fit['r2']:.2f}" if "alpha" in fit else "no fit"


def _plot_curve(axis, curve: dict, form: str, color, label: str, key: str = "gold", fit: bool = True) -> None:
    d = [p["d"] for p in curve["points"]]
    axis.plot(d, [p[key] for p in curve["points"]], "o", color=color, markersize=3.5, label=label)
    fitted = _fitted(curve, form, max(d)) if fit and key == "gold" else None
    if fitted is not None:
        axis.plot(*fitted, "-", color=color, alpha=0.8, linewidth=1.2)
    elif key != "gold":
        axis.plot(d, [p[key] for p in curve["points"]], "--", color=color, alpha=0.6)


def plot_study(report: dict, out: Path) -> list[Path]:
    """`overopt.png` (Gao et al. Fig. 1 in miniature) and `mitigations.png` (gold vs d for every variant)."""
    plt = headless_pyplot()

    bon, rl = report["bon"]["proxy"], report["ppo"]["proxy"]
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex="col")
    for column, (curve, form, title) in enumerate(((bon, "bon", "best-of-n"), (rl, "rl", "PPO, no KL penalty"))):
        _plot_curve(axes[0, column], curve, form, "tab:orange", "gold (points) and fit (line)")
        axes[0, column].set_title(f"{title}: gold, {_coefficients(curve)}", fontsize=9)
        axes[0, column].set_ylabel("gold reward")
        _plot_curve(axes[1, column], curve, form, "tab:blue", "proxy being optimised", key="proxy")
        axes[1, column].set_ylabel("proxy reward (standardised)")
        axes[1, column].set_xlabel("d = sqrt(KL(policy || SFT))")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle(f"Reward-model over-optimisation on '{report['task']}' ({report['preset']})", fontsize=11)
    figure.tight_layout()
    paths = [out / "overopt.png"]
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (method, form) in zip(axes, (("bon", "bon"), ("ppo", "rl"))):
        for i, (name, curve) in enumerate(report[method].items()):
            _plot_curve(axis, curve, form, colors[i % len(colors)], name, fit=not name.startswith("oracle"))
        axis.set_title(f"{'best-of-n' if method == 'bon' else 'PPO'}: gold reward by mitigation (lines: Gao et al. fits)",
                       fontsize=9)
        axis.set_xlabel("d = sqrt(KL(policy || SFT))")
        axis.set_ylabel("gold reward")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    paths.append(out / "mitigations.png")
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    return paths


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mitigation_rows(report: dict) -> list[str]:
    rows = ["| method | run | KL coef | gold at d=0 | peak gold | d at peak | final gold | final d | "
            "alpha | beta | R^2 | fitted peak d* | fitted peak gold |", "|" + "---|" * 13]
    for method in ("bon", "ppo"):
        for name, c in report[method].items():
            fit = c["fit"]
            fitted_peak = None if fit.get("peak_reward") is None else c["gold_at_0"] + fit["peak_reward"]
            rows.append(
                f"| {'best-of-n' if method == 'bon' else 'PPO'} | {name} | {_number(c.get('kl_coef'), 2)} | "
                f"{_number(c['gold_at_0'])} | {_number(c['peak_gold'])} | {_number(c['peak_d'], 2)} | "
                f"{_number(c['final_gold'])} | {_number(c['final_d'], 2)} | {_number(fit.get('alpha'))} | "
                f"{_number(fit.get('beta'))} | {_number(fit.get('r2'), 2)} | {_number(fit.get('peak_d'), 2)} | "
                f"{_number(fitted_peak)} |"
            )
    return rows


def write_report(out: Path, report: dict) -> None:
    """`report.json` (everything) and `report.md` (the tables a person reads)."""
    proxies = ["| proxy | labels | held-out accuracy |", "|---|---|---|"]
    proxies += [f"| {p['name']} | {p['labels']} | {p['heldout_accuracy']:.3f} |" for p in report["proxies"]]
    monitor = ["| PPO run | divergence flagged | first flagged step | gold peak step (smoothed) | proxy peak step |",
               "|---|---|---|---|---|"]
    for name, c in report["ppo"].items():
        m = c.get("monitor") or {}
        monitor.append(f"| {name} | {m.get('diverged')} | {m.get('first_divergence_step')} | "
                       f"{m.get('gold_peak_step')} | {m.get('proxy_peak_step')} |")
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in report["timings"].items())
    text = "\n".join([
        f"# tandem overopt: {report['task']} ({report['preset']})", "",
        "Gold and proxy reward against d = sqrt(KL(policy || SFT)); fits of Gao et al. (2022) to the gold gain "
        "over the SFT policy: best-of-n R(d) = d(alpha - beta d), RL R(d) = d(alpha - beta log d). "
        "Peak gold is the highest measured point; the fitted peak is the SFT gold plus R(d*).", "",
        "![over-optimisation](overopt.png)", "", "![mitigations](mitigations.png)", "",
        "## Proxy reward models", "", *proxies, "",
        f"Mean spread (std across members) of the standardised ensemble scores on SFT samples: "
        f"{report['ensemble_member_spread']:.3f}. Clip bound (standardised proxy): {_number(report['clip_high'], 2)}.", "",
        "## Peak gold reward and where it occurs", "", *mitigation_rows(report), "",
        "## Reward-hacking monitor (PPO training rollouts)", "", *monitor, "",
        f"Wall time: {timings}.", "",
    ])
    files.write_report(out, report, text)
    print(text)
