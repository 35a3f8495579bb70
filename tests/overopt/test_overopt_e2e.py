"""End to end: `tandem overopt --preset smoke` from the smoke quickstart's SFT model, through the CLI."""

import json
import math

import pytest
from typer.testing import CliRunner

import tandem.cli
from tandem.overopt.commands import register


def cli_app():
    """tandem's app with `overopt` on it (registered here until cli.py lists the module itself)."""
    if "overopt" not in {command.name for command in tandem.cli.app.registered_commands}:
        register(tandem.cli.add_command)
    return tandem.cli.app


def test_overopt_names_a_missing_sft_model(tmp_path):
    result = CliRunner().invoke(cli_app(), ["overopt", "--sft", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a model directory" in result.output


@pytest.mark.e2e
def test_smoke_study_fits_curves_and_best_of_n_raises_the_proxy(smoke_pipeline, tmp_path):
    quickstart, _ = smoke_pipeline
    out = tmp_path / "overopt"
    result = CliRunner().invoke(cli_app(), ["overopt", "--preset", "smoke", "--sft", str(quickstart / "sft" / "model"),
                                            "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())

    for curve in (report["bon"]["proxy"], report["ppo"]["proxy"]):
        fit = curve["fit"]
        assert math.isfinite(fit["alpha"]) and math.isfinite(fit["beta"]) and fit["r2"] is not None
    # selecting the best of n by the proxy raises the proxy score, more with every doubling of n
    bon = report["bon"]["proxy"]["points"]
    assert [p["n"] for p in bon] == [1, 2, 4, 8, 16]
    assert all(b["proxy"] > a["proxy"] for a, b in zip(bon, bon[1:]))
    assert bon[-1]["proxy"] > bon[0]["proxy"] + 0.8  # E[max of 16 standard normals] is about 1.77
    assert bon[-1]["d"] == pytest.approx(math.sqrt(math.log(16) - 15 / 16))
    # the gold-selected (oracle) best of n bounds every proxy selection from above
    oracle = report["bon"]["oracle (gold)"]
    assert oracle["peak_gold"] >= report["bon"]["proxy"]["peak_gold"] and oracle["final_gold"] > bon[0]["gold"] + 0.1

    # PPO moved away from the SFT policy, was evaluated along the way and watched by the monitor
    variants = report["ppo"]
    assert set(variants) == {"proxy", "kl-0.1", "ensemble-worst_case", "clip-q0.9"}
    points = variants["proxy"]["points"]
    assert [p["step"] for p in points] == [0, 3, 6] and points[0]["d"] == 0.0 and points[-1]["d"] > 0.1
    assert variants["proxy"]["monitor"]["updates"] == 6
    records = [json.loads(line) for line in (out / "ppo" / "proxy" / "metrics.jsonl").read_text().splitlines()]
    assert all("train/monitor/gold" in r for r in records if "train/reward" in r)
    assert (out / "ppo" / "proxy" / "monitor" / "proxy_gold_vs_sqrt_kl.png").stat().st_size > 5000
    for figure in ("overopt.png", "mitigations.png"):
        assert (out / figure).stat().st_size > 20_000
    text = (out / "report.md").read_text()
    assert "| best-of-n | proxy |" in text and "| PPO | ensemble-worst_case |" in text
