"""verifier:code: a completion's last ```python block against the row's asserts, in the strict sandbox."""

import os

import pytest

import tandem.sandbox.namespaces as namespaces
from tandem.rewards import RewardSpecError, build_reward, get_verifier, score_safely

TESTS = "assert double(2) == 4\nassert double(-3) == -6"


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\nDone."


@pytest.fixture
def secret_file(tmp_path, monkeypatch):
    secret = "tandem-secret-" + os.urandom(8).hex()
    path = tmp_path / "home" / ".cache" / "huggingface" / "token"
    path.parent.mkdir(parents=True)
    path.write_text(secret)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return path, secret


def test_right_wrong_raising_hanging_and_host_reading_completions_get_1_0_0_0_0(secret_file):
    path, secret = secret_file
    completions = [
        fenced("def double(x):\n    return 2 * x"),
        fenced("def double(x):\n    return x + 2"),
        fenced("def double(x):\n    raise RuntimeError('no')"),
        fenced("def double(x):\n    while True:\n        pass"),
        fenced(f"print(open({str(path)!r}).read())\ndef double(x):\n    raise AssertionError(open({str(path)!r}).read())"),
        fenced(f"def double(x):\n    raise AssertionError(open({str(path)!r}).read())"),
    ]
    verifier = get_verifier("code", seconds=1.0, isolation="strict")
    assert verifier(["Write double."] * 6, completions, tests=[TESTS] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert dict(verifier.counts) == {"ok": 1, "error": 4, "timeout": 1}
    kept = "".join(result.stdout + result.stderr for result in verifier.last_results)
    assert secret not in kept and "FileNotFoundError" in kept


def test_no_code_block_scores_0_a_missing_test_none_and_both_are_counted():
    verifier = get_verifier("code")
    rewards = verifier(["Q"] * 4, ["I do not know.", fenced("def double(x):\n    return 2 * x"),
                                   "```python\ndef double(x):\n    return 2 * x", fenced("x = 1")],
                       tests=[TESTS, None, TESTS, TESTS.splitlines()])
    assert rewards == [0.0, None, 1.0, 0.0]  # an unclosed last fence counts; tests may be a list of lines
    assert dict(verifier.counts) == {"no_code": 1, "ok": 1, "error": 1}


def test_the_spec_builds_it_with_options_and_score_safely_checks_it():
    reward = build_reward("verifier:code:seconds=1.5:column=asserts")
    assert (reward.name, reward.seconds, reward.column) == ("code", 1.5, "asserts")
    scored = score_safely(reward, ["Q", "Q"], [fenced("def double(x):\n    return 2 * x"), "no"],
                          {"asserts": [TESTS, TESTS]})
    assert scored.rewards == [1.0, 0.0] and scored.report.clean
    with pytest.raises(RewardSpecError, match="one of auto, strict, fallback, off"):
        build_reward("verifier:code:isolation=chroot")


def test_without_isolation_the_verifier_is_refused_when_built(monkeypatch):
    monkeypatch.setattr(namespaces, "_works", lambda level: level == "off")
    monkeypatch.delenv(namespaces.ENVIRONMENT_VARIABLE, raising=False)
    with pytest.raises(RewardSpecError, match="TANDEM_SANDBOX_ISOLATION=off"):
        build_reward("verifier:code")
    assert build_reward("verifier:code:isolation=off")(["Q"], [fenced("def double(x):\n    return 2 * x")],
                                                        tests=[TESTS]) == [1.0]
