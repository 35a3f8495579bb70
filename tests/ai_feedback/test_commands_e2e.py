"""End to end on the smoke presets: RLAIF, Constitutional AI and the verbal-feedback reward improve what they measure."""

import json

import pytest
from typer.testing import CliRunner

from tandem.ai_feedback.commands import register


@pytest.fixture(scope="module")
def polite_sft(tmp_path_factory):
    """Pre-train and fine-tune the smoke-sized policy on the polite task once for every test here."""
    from tandem.ai_feedback.runs import base_models

    return base_models(tmp_path_factory.mktemp("polite-base"), "polite", "smoke", progress=False)[1]


@pytest.fixture(scope="module")
def cli():
    """A typer app holding only this package's commands, registered the way `tandem.cli` does."""
    from tandem.cli import add_command, app

    names = {command.name for command in app.registered_commands}
    if "rlaif" not in names:
        register(add_command)
    return app


@pytest.mark.e2e
def test_rlaif_direct_grpo_through_the_cli_lowers_violations(polite_sft, tmp_path, cli):
    out = tmp_path / "rlaif"
    result = CliRunner().invoke(cli, ["rlaif", "--preset", "smoke", "--model", str(polite_sft), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    agreement = report["ai_label_agreement"]
    assert agreement["agreement"] > 0.7 and agreement["coverage"] > 0.5 and agreement["unusable"] == 0
    assert report["after"]["violation_rate"] < report["before"]["violation_rate"] - 0.05
    assert report["after"]["gold_reward"] > report["before"]["gold_reward"]
    assert "AI labels vs gold labels" in (out / "report.md").read_text() and (out / "ai_preferences.jsonl").stat().st_size


@pytest.mark.e2e
def test_cai_sl_then_rl_cuts_the_violation_rate_and_keeps_helpfulness(polite_sft, tmp_path):
    from tandem.ai_feedback.cai import CAIConfig, run_cai

    report = run_cai(CAIConfig(out=tmp_path / "cai", model=polite_sft, preset="smoke", progress=False))
    sft, sl, rl = (report["policies"][k] for k in ("sft", "sl_cai", "rl_cai"))
    assert report["sl_cai"]["revised"]["violation_rate"] < report["sl_cai"]["initial"]["violation_rate"] - 0.1
    assert sl["violation_rate"] < sft["violation_rate"]
    assert rl["violation_rate"] < sft["violation_rate"] - 0.15
    assert rl["helpfulness"] > sft["helpfulness"] - 0.1
    assert report["rl_cai"]["rule_agreement"]["agreement"] > 0.9
    revisions = [json.loads(line) for line in (tmp_path / "cai" / "sl_cai" / "revisions.jsonl").read_text().splitlines()]
    assert len(revisions[0]["steps"]) == 2


@pytest.mark.e2e
def test_verbal_reward_correlates_with_gold_and_drives_rl(polite_sft, tmp_path):
    from tandem.ai_feedback.verbal import VerbalRewardConfig, run_verbal_reward

    report = run_verbal_reward(VerbalRewardConfig(out=tmp_path / "verbal", model=polite_sft, preset="smoke", progress=False))
    assert report["g_phi_vs_gold"]["pearson"] > 0.5 and report["g_phi_vs_gold"]["spearman"] > 0.5
    records = [json.loads(line) for line in (tmp_path / "verbal" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "train/reward" in r]) == 6
    assert report["after"]["gold_reward"] > report["before"]["gold_reward"] - 0.05
