"""`tandem explain`: input records, option checks, and the command writing its report through the CLI."""

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tandem.data import DataError
from tandem.explain.commands import ExplainConfig, records_from_file, register


def test_config_needs_something_to_explain(tmp_path):
    with pytest.raises(ValidationError, match="nothing to explain"):
        ExplainConfig(policy=tmp_path)
    with pytest.raises(ValidationError, match="--reference is compared with a --policy"):
        ExplainConfig(reward_model=tmp_path, reference=tmp_path)


def test_records_read_response_as_completion_and_name_bad_lines(tmp_path, sentiment_tokenizer):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Review: It", "response": " was fine."}) + "\n"
                    + json.dumps({"prompt": "Review: It", "completion": " was bad."}) + "\n")
    assert records_from_file(good, sentiment_tokenizer, 5) == [
        {"prompt": "Review: It", "completion": " was fine."}, {"prompt": "Review: It", "completion": " was bad."}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Review: It", "completion": " ok"}) + "\n" + json.dumps({"prompt": "x", "completion": 3}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, field 'completion'"):
        records_from_file(bad, sentiment_tokenizer, 5)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no records"):
        records_from_file(empty, sentiment_tokenizer, 5)


@pytest.mark.e2e
def test_explain_command_writes_the_report(tmp_path, smoke_pipeline):
    import tandem.cli as cli

    if not any(command.name == "explain" for command in cli.app.registered_commands):
        register(cli.add_command)
    out, _ = smoke_pipeline
    data = tmp_path / "records.jsonl"
    data.write_text(json.dumps({"prompt": "Review: The sequel", "response": " was wonderful and touching."}) + "\n"
                    + json.dumps({"prompt": "Review: The sequel", "response": " was <b>awful</b> and dull."}) + "\n")
    result = CliRunner().invoke(cli.app, [
        "explain", "--reward-model", str(out / "rm" / "model"), "--policy", str(out / "ppo" / "model"),
        "--reference", str(out / "sft" / "model"), "--data", str(data), "--out", str(tmp_path / "explain"), "--ig-steps", "128"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "explain"
    for name in ("report.html", "explanations.json", "record_1.png", "record_2.png", "tokens_1.png", "tokens_2.png"):
        assert (folder / name).stat().st_size > 0
    html = (folder / "report.html").read_text()
    assert "<b>aw" not in html and "&lt;" in html  # the response's markup is shown as text (its tokens escaped)
    records = json.loads((folder / "explanations.json").read_text())["records"]
    for record in records:
        difference = record["reward"]["score"] - record["reward"]["baseline_score"]
        assert abs(record["reward"]["completeness_gap"]) <= 0.02 * abs(difference) + 0.01
        assert sum(record["policy"]["log_prob_change"]) == pytest.approx(record["policy"]["sequence_log_ratio"])
    # the trained sentiment reward model scores the glowing response above the dull one
    assert records[0]["reward"]["score"] > records[1]["reward"]["score"]
    missing = CliRunner().invoke(cli.app, ["explain", "--reward-model", str(tmp_path / "nowhere"), "--data", str(data)])
    assert missing.exit_code == 1 and "config.json" in missing.output
