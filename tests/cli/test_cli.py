"""The command line as a user meets it: help, YAML configs with flag overrides, clear errors."""

import json
import os
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from tandem.cli import app

runner = CliRunner()


def test_top_level_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("quickstart", "pretrain", "sft", "rm", "tasks"):
        assert command in result.output


def test_every_option_of_sft_is_explained():
    from tandem.trainers.sft import SFTConfig

    env = {**os.environ, "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "tandem.cli", "sft", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    for name in SFTConfig.model_fields:
        assert "--" + name.replace("_", "-") in result.stdout
    assert "LoRA" in result.stdout and "(default: runs/sft)" in result.stdout


def test_long_option_lists_are_grouped_and_registry_choices_come_from_the_registry():
    from tandem.algorithms.kl import KL_ESTIMATORS
    from tandem.cli import config_options
    from tandem.trainers.ppo import PPOConfig

    options = {parameter.name: parameter.default for parameter in config_options(PPOConfig)}
    assert options["kl_estimator"].rich_help_panel == "Loss" and options["max_new_tokens"].rich_help_panel == "Rollout"
    assert options["lr"].rich_help_panel == "Optimisation" and options["n_eval"].rich_help_panel == "Evaluation"
    assert options["out"].rich_help_panel == "Output and logging" and options["model"].rich_help_panel == "Model"
    assert set(KL_ESTIMATORS) >= {"k1", "k2", "k3", "abs", "low_var_kl"}
    for name in KL_ESTIMATORS:  # every registered estimator is offered, none written by hand
        assert name in options["kl_estimator"].help
    env = {**os.environ, "COLUMNS": "250"}
    shown = subprocess.run([sys.executable, "-m", "tandem.cli", "grpo", "--help"], capture_output=True, text=True, env=env)
    panels = [line.split()[1] for line in shown.stdout.splitlines() if line.startswith("╭─")]
    assert panels[:5] == ["Options", "Model", "Data", "Rollout", "Loss"]
    assert "'tandem[vllm]'" in shown.stdout  # square brackets shown, not read as markup


def test_yaml_config_is_loaded_and_flags_override_it(tmp_path, tiny_model_dir):
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "out": str(tmp_path / "run"), "n_train": 32,
                                      "n_eval": 4, "batch_size": 8, "max_steps": 5, "lr": 0.5,
                                      "mixed_precision": "no", "progress": False}))
    result = runner.invoke(app, ["sft", "--config", str(config), "--max-steps", "2", "--lr", "1e-4"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["lr"] == 1e-4 and saved["n_train"] == 32
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_invalid_option_values_are_reported_by_name():
    result = runner.invoke(app, ["sft", "--lr", "-1", "--mixed-precision", "fp8"])
    assert result.exit_code == 2
    assert "--lr" in result.output and "--mixed-precision" in result.output


def test_unknown_yaml_key_is_an_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: 0.1\n")
    result = runner.invoke(app, ["rm", "--config", str(config)])
    assert result.exit_code == 2 and "learning-rate" in result.output


def test_missing_model_directory_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["sft", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "not a Hugging Face model directory" in result.output


def test_bad_data_file_is_reported_with_file_line_and_field(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3, "rejected": "b"}\n')
    result = runner.invoke(app, ["rm", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "prefs.jsonl, line 2, field 'chosen'" in result.output


def test_tasks_command_lists_built_in_tasks():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0 and "sentiment" in result.output and "arithmetic" in result.output
