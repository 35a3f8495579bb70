"""CLI commands of the over-optimisation package: `tandem overopt`."""

from __future__ import annotations


def register(add_command) -> None:
    """Add `tandem overopt` through `tandem.cli.add_command(name, config_class, run, help)`."""
    from tandem.overopt.study import OveroptConfig, run_overopt

    def run(config: OveroptConfig) -> None:
        report = run_overopt(config)
        print(f"report: {config.out / 'report.md'}; figures: {', '.join(report['figures'])}")

    add_command(
        "overopt", OveroptConfig, run,
        "Reward-model over-optimisation (Gao et al. 2022) in miniature: proxy reward models on few gold labels, "
        "best-of-n and PPO pushed to large KL, gold vs sqrt(KL) fits, and mitigations (KL penalty, ensembles, clipping).",
    )
