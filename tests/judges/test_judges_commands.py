"""`tandem judge` and `tandem serve` through the command line (registered on a fresh typer app)."""

import json
import math

import pytest
import typer
from typer.testing import CliRunner

import tandem.cli
from tandem.judges import FunctionJudge
from tandem.judges.commands import JudgeCommandConfig, register as register_judge, run_judge
from tandem.serve.commands import register as register_serve
from tandem.tasks import get_task

GOLD_JUDGE = """
from tandem.tasks import get_task

TASK = get_task("sentiment")


def gold(prompts, responses):
    return [(g + 1) / 2 for g in TASK.gold_reward(prompts, responses)]


def contrarian(prompts, responses):
    return [1 - v for v in gold(prompts, responses)]

"""


@pytest.fixture()
def app(monkeypatch):
    fresh = typer.Typer()
    monkeypatch.setattr(tandem.cli, "app", fresh)
    register_judge(tandem.cli.add_command)
    register_serve(tandem.cli.add_command)
    return fresh


@pytest.fixture()
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = get_task("sentiment").preference_pairs(40, seed=3)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "gold_judge.py").write_text(GOLD_JUDGE)
    return path


def test_judge_command_measures_agreement_with_chosen_labels(app, pairs, tmp_path):
    out = tmp_path / "out" / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["judge", "--judge", f"python:{tmp_path / 'gold_judge.py'}:gold", "--data", str(pairs),
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "verdicts.summary.json").read_text())
    assert summary["mode"] == "compare" and summary["samples"] == 40 and summary["unusable"] == 0
    assert summary["agreement_with_chosen"] == 1.0 and "agreement with chosen: 1.0000" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 40 and lines[0]["line"] == 1 and lines[0]["value"] > 0.5 and "chosen" in lines[0]
    contrarian = run_judge(JudgeCommandConfig(judge=f"python:{tmp_path / 'gold_judge.py'}:contrarian", data=pairs,
                                              out=tmp_path / "c.jsonl", progress=False))
    assert contrarian["agreement_with_chosen"] == 0.0


def first_biased(prompts, first, second):
    """P(first shown better) with log-odds = gold difference + 3: "A" in both orders for every pair."""
    gold = get_task("sentiment").gold_reward
    return [1 / (1 + math.exp(-(a - b + 3))) for a, b in zip(gold(prompts, first), gold(prompts, second))]


def test_judge_command_calibration_flag_and_position_only_count(app, pairs, tmp_path, monkeypatch):
    import tandem.judges.commands as commands

    monkeypatch.setattr(commands, "build_judge", lambda spec: FunctionJudge(compare=first_biased, name="first-biased"))
    judge = "python:first_biased:judge"  # parsed, then built by the stand-in above
    runs = {}
    for calibration in ("average", "log_odds"):
        out = tmp_path / calibration / "verdicts.jsonl"
        result = CliRunner().invoke(app, ["judge", "--judge", judge, "--data", str(pairs), "--out", str(out),
                                          "--calibration", calibration, "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "same position won both orders: 40 of 40 pairs" in result.output
        runs[calibration] = [json.loads(line)["value"] for line in out.read_text().splitlines()]
        summary = json.loads((tmp_path / calibration / "verdicts.summary.json").read_text())
        assert summary["stats"]["position_only_fraction"] == 1.0 and summary["agreement_with_chosen"] == 1.0
    gold = get_task("sentiment").gold_reward
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    for row, value in zip(rows, runs["log_odds"]):  # the +3 bias cancels: sigmoid(gold difference) is left
        d = gold([row["prompt"]], [row["chosen"]])[0] - gold([row["prompt"]], [row["rejected"]])[0]
        assert value == pytest.approx(1 / (1 + math.exp(-d)), abs=1e-9)
    assert all(0.5 < averaged < calibrated for averaged, calibrated in zip(runs["average"], runs["log_odds"]))  # averaging squeezes
    result = CliRunner().invoke(app, ["judge", "--judge", judge, "--data", str(pairs), "--calibration", "median"])
    assert result.exit_code == 2 and "calibration" in result.output


def test_judge_command_scores_and_counts_unusable_verdicts(tmp_path):
    data = tmp_path / "responses.jsonl"
    data.write_text('{"prompt": "p", "response": "fine"}\n{"prompt": "p", "completion": "x"}\n')
    (tmp_path / "picky.py").write_text("def score(prompts, responses):\n    return [0.8 if r == 'fine' else None for r in responses]\n")
    with pytest.raises(Exception, match="line 2"):  # mixed fields: the bad record is named
        run_judge(JudgeCommandConfig(judge=f"python:{tmp_path / 'picky.py'}:score", data=data, out=tmp_path / "v.jsonl", progress=False))
    data.write_text('{"prompt": "p", "response": "fine"}\n{"prompt": "p", "response": "x"}\n')
    summary = run_judge(JudgeCommandConfig(judge=f"python:{tmp_path / 'picky.py'}:score", data=data, out=tmp_path / "v.jsonl",
                                           progress=False))
    assert summary["mode"] == "score" and summary["unusable_by_reason"] == {"invalid_value": 1}
    assert summary["mean_value"] == pytest.approx(0.8)


def test_judge_command_reports_bad_input_without_a_traceback(app, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "p", "answer": "x"}\n')
    result = CliRunner().invoke(app, ["judge", "--judge", "python:os:getcwd", "--data", str(data), "--no-progress"])
    assert result.exit_code == 1 and "bad.jsonl, line 1" in result.output
    result = CliRunner().invoke(app, ["judge", "--judge", "nonsense:x", "--data", str(data)])
    assert result.exit_code == 1 and "unknown judge backend" in result.output


def test_serve_command_lists_its_options(app):
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--model", "--host", "--port", "--api-key", "--max-body-bytes", "--max-tokens", "--max-concurrency"):
        assert option in result.output
    assert "127.0.0.1" in result.output


def test_judge_command_with_a_local_model_template_and_cache(pairs, tmp_path, tiny_model_dir):
    options = dict(judge=f"local:{tiny_model_dir}:batch_size=8", data=pairs, limit=6, template="compare",
                   cache=tmp_path / "cache.jsonl", progress=False)
    first = run_judge(JudgeCommandConfig(out=tmp_path / "a.jsonl", **options))
    again = run_judge(JudgeCommandConfig(out=tmp_path / "b.jsonl", **options))
    assert first["usable"] == again["usable"] == 6 and first["stats"]["questions"] == 12  # 6 pairs, both orders
    assert again["stats"]["questions"] == 0 and again["stats"]["cache_hits"] == 12
    assert first["mean_value"] == pytest.approx(again["mean_value"])
    with pytest.raises(Exception, match="line 1: expected fields prompt and response"):
        run_judge(JudgeCommandConfig(out=tmp_path / "c.jsonl", mode="score", **options))
    with pytest.raises(Exception, match="kind 'compare'"):
        run_judge(JudgeCommandConfig(out=tmp_path / "c.jsonl", mode="compare", **{**options, "template": "score"}))
