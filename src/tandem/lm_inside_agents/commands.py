"""The agents' CLI commands: `tandem explore`, `shape`, `collect`, `dt` and `babyai` (`world-model`, which also
learns agent text envs, is registered by `tandem.lm_as_agent.imagined`).

Each command runs one experiment of `tandem.lm_inside_agents.experiments` (or `offline_collect`) and prints its headline
numbers; the runs themselves, and their reports, are the same from Python.
"""

from __future__ import annotations

import typer

from tandem.lm_inside_agents.experiments.babyai import BabyAIConfig, run_babyai
from tandem.lm_inside_agents.experiments.dt import DTConfig, run_dt
from tandem.lm_inside_agents.experiments.explore import AgentLMConfig, ExploreConfig, ShapeConfig, run_explore, run_shape
from tandem.lm_inside_agents.offline_collect import CollectConfig, collect_offline_dataset


def _print_dqn_runs(config: AgentLMConfig, report: dict) -> None:
    for run in report["runs"]:
        print(f"{run['label']}: final greedy success {run['final_success']}, steps to target {run['steps_to_target']}, "
              f"{run['env_steps']} env steps in {run['seconds']:.1f}s")
    print(f"wrote {config.out / 'metrics.json'} and {config.out / 'learning_curve.png'}")


def show_explore(config: ExploreConfig) -> None:
    _print_dqn_runs(config, run_explore(config))


def show_shape(config: ShapeConfig) -> None:
    _print_dqn_runs(config, run_shape(config))


def show_collect(config: CollectConfig) -> None:
    dataset = collect_offline_dataset(config)
    typer.echo(f"{len(dataset)} transitions, {dataset.metadata['episodes']} episodes saved to {config.out}")
    for policy in dataset.metadata["policies"]:
        typer.echo(f"  {policy['name']:7s} {policy['episodes']:5d} episodes  mean return {policy['mean_return']:.1f}")


def show_dt(config: DTConfig) -> None:
    metrics = run_dt(config)
    typer.echo(f"{metrics['env_id']}: random {metrics['random_return']:.1f}, best behaviour {metrics['best_behaviour_return']:.1f}")
    for row in metrics["dt"]["targets"]:
        typer.echo(f"  DT target {row['target']:9.1f} -> return {row['mean_return']:9.1f}  (normalised {row['normalised']:.1f})")
    if "bc" in metrics:
        typer.echo(f"  BC              -> return {metrics['bc']['mean_return']:9.1f}  (normalised {metrics['bc']['normalised']:.1f})")
    typer.echo(f"metrics and plot in {config.out} ({metrics['seconds']:.0f}s)")


def show_babyai(config: BabyAIConfig) -> None:
    report = run_babyai(config)
    for method in ("random_policy", "imitation", "ppo"):
        if method in report:
            for split in ("train_missions", "held_out_missions"):
                if report[method][split]:
                    print(f"{method}: {split.replace('_', ' ')} success {report[method][split]['success_rate']:.3f}")
    print(f"metrics in {config.out}/metrics.json")


def register(add_command) -> None:
    add_command("explore", ExploreConfig, show_explore,
                "DQN with LLM-guided exploration vs plain DQN; writes metrics.json and learning_curve.png.")
    add_command("shape", ShapeConfig, show_shape,
                "DQN with LLM potential-based reward shaping vs unshaped; writes metrics.json and learning_curve.png.")
    add_command("collect", CollectConfig, show_collect,
                "Collect an offline RL dataset on a Gymnasium task: random, medium and expert (PPO) episode mixtures.")
    add_command("dt", DTConfig, show_dt,
                "Train a Decision Transformer and a behaviour-cloning baseline on an offline dataset; plot return vs target.")
    add_command("babyai", BabyAIConfig, show_babyai,
                "Language-conditioned BabyAI policy pi(a | s, l) by BabyAIBot imitation and/or PPO; "
                "held-out mission success.")
