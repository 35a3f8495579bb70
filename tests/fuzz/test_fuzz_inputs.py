"""Seeded fuzzing of everything a user hands tandem besides data: command lines and configs, server
requests, reward functions. Each generator's module states the rule its cases keep."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import httpx
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fuzz import configs, requests, rewards


def _check(outcomes: Counter, failures: list[str], good: str) -> None:
    assert not failures, f"{len(failures)} failures, e.g.:\n" + "\n".join(failures[:10])
    assert outcomes[good] > 0


def test_invalid_command_lines_and_configs_are_refused_clearly(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    rng, outcomes, failures, commands = random.Random(7), Counter(), [], Counter()
    for number in range(200):
        case = configs.make_case(rng, tmp_path, number, tiny_model_dir)
        outcome, detail = configs.run_case(case, tmp_path)
        outcomes[outcome] += 1
        commands[case.command] += 1
        if outcome != "refused":
            failures.append(f"{case.name}: {outcome}: {detail}")
    _check(outcomes, failures, "refused")
    assert set(commands) == set(configs.COMMANDS)  # every command is exercised


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir):
    from tandem.serve import BackgroundServer, ServeConfig, create_app

    config = ServeConfig(model=tiny_model_dir, model_name="tiny", api_key="KEY1", max_tokens=64, max_n=4,
                         max_body_bytes=65536, max_request_tokens=2048)
    with BackgroundServer(create_app(config)) as server:
        yield server


def test_bad_requests_get_4xx_and_the_server_keeps_answering(fuzz_server):
    rng, outcomes, failures, statuses = random.Random(11), Counter(), [], Counter()
    for number in range(200):
        case = requests.make_case(rng, number)
        outcome, detail = requests.run_case(case, fuzz_server.url, "KEY1")
        outcomes[outcome] += 1
        statuses[detail[:3]] += outcome == "ok"
        if outcome != "ok":
            failures.append(f"{case.name}: {outcome}: {detail}")
    _check(outcomes, failures, "ok")
    assert statuses["400"] > 80 and statuses["200"] > 10 and statuses["401"] and statuses["404"]
    good = httpx.post(fuzz_server.url + "/v1/completions", json=requests.GOOD_COMPLETION,
                      headers={"authorization": "Bearer KEY1"}, timeout=30)
    assert good.status_code == 200 and good.json()["choices"][0]["text"] is not None


def test_faulty_rewards_are_reported_never_trained_on(monkeypatch):
    rng, outcomes, failures = random.Random(3), Counter(), []
    for number in range(300):
        n = rng.randint(1, 6)
        case = rewards.make_case(rng, n)
        for mode in ("raise", "skip"):
            outcome, detail = rewards.run_case(case, mode, n)
            outcomes[outcome] += 1
            if outcome != "ok":
                failures.append(f"{case.name} ({mode}, {n} samples): {outcome}: {detail}")
    _check(outcomes, failures, "ok")


FAULTY = {
    "nan": "def score(prompts, completions, **kw):\n    return [float('nan')] * len(prompts)\n",
    "exit": "import sys\ndef score(prompts, completions, **kw):\n    sys.exit(0)\n",
    "huge": "def score(prompts, completions, **kw):\n    return [1e300] * len(prompts)\n",
    "hang": "import time\ndef score(prompts, completions, **kw):\n    time.sleep(30)\n",
}


@pytest.mark.parametrize("fault, extra", [("nan", []), ("exit", []), ("huge", ["--reward-errors", "skip"]),
                                          ("hang", ["--reward-timeout", "0.5"])])
def test_a_run_with_a_faulty_reward_fails_in_one_line_and_saves_no_broken_model(tmp_path, monkeypatch,
                                                                                 tiny_model_dir, fault, extra):
    from tandem.cli import app

    (tmp_path / f"faulty_{fault}.py").write_text(FAULTY[fault])
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    ran = CliRunner().invoke(app, ["grpo", "--model", str(tiny_model_dir), "--out", str(out), "--task", "sentiment",
                                   "--reward", f"faulty_{fault}:score", "--max-steps", "2", "--batch-size", "2",
                                   "--samples-per-prompt", "2", "--max-new-tokens", "4", "--n-eval", "0",
                                   "--no-progress", "--mixed-precision", "no", *extra])
    assert ran.exit_code == 1 and isinstance(ran.exception, SystemExit), ran.output
    last = ran.output.strip().splitlines()[-1]
    assert last.startswith("tandem grpo: reward '") and "faulty_" in last and "sample" in last and "Traceback" not in ran.output
    for weights in out.rglob("*.safetensors"):  # whatever was saved is finite
        assert all(torch.isfinite(t).all() for t in load_file(weights).values())
    assert not (out / "model").exists()
    sys.modules.pop(f"faulty_{fault}", None)
