"""`tandem grpo` on a reasoning-gym task with the GSPO loss, and how --clip-low/--clip-high reach a policy loss."""

import functools
import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tandem.algorithms import policy_losses
from tandem.trainers.grpo import GRPOConfig
from tandem.trainers.online import OnlineTrainer


@pytest.mark.parametrize("options, expected", [
    (dict(policy_loss="gspo"), {}),  # the loss's own (the paper's) epsilons, not PPO's 0.2
    (dict(policy_loss="gspo", clip_low=1e-3), {"clip_low": 1e-3, "clip_high": None}),  # --clip-high defaults to it
    (dict(policy_loss="gspo", clip_high=1e-3), {"clip_high": 1e-3}),
    (dict(policy_loss="ppo_clip", clip_low=0.1, clip_high=0.28), {"clip_low": 0.1, "clip_high": 0.28}),
    (dict(policy_loss="reinforce", clip_low=0.1), {}),  # takes no clip
])
def test_clip_options_reach_the_losses_that_take_them(options, expected):
    trainer = SimpleNamespace(config=GRPOConfig(**options))
    assert OnlineTrainer._policy_options(trainer) == expected


def test_cli_grpo_trains_a_step_on_a_reasoning_gym_task_with_gspo(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("reasoning_gym")
    from tandem.cli import app

    calls = []
    gspo = policy_losses.POLICY_LOSSES["gspo"]

    @functools.wraps(gspo)
    def recording_gspo(*args, **kwargs):
        calls.append(kwargs)
        return gspo(*args, **kwargs)

    monkeypatch.setitem(policy_losses.POLICY_LOSSES, "gspo", recording_gspo)
    out = tmp_path / "run"
    # a random model never answers right (no signal: the CLI would exit 1), so the reward is the length
    (tmp_path / "rg_length_reward.py").write_text("def score(prompts, completions, **kw):\n"
                                              "    return [len(c) / 100 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(app, [
        "grpo", "--model", str(tiny_model_dir), "--out", str(out), "--task", "rg:basic_arithmetic:size=16:eval_size=8",
        "--reward", "rg_length_reward:score",
        "--policy-loss", "gspo", "--loss-agg", "seq-mean-token-mean", "--max-steps", "1", "--batch-size", "2",
        "--samples-per-prompt", "2", "--n-prompts", "4", "--n-eval", "2", "--max-new-tokens", "6",
        "--no-progress", "--mixed-precision", "no", "--log-every", "1",
    ])
    assert result.exit_code == 0, result.output
    assert calls and calls[0] == {}  # gspo ran with its own epsilons
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "train/clip_fraction" in logged and 0.0 <= logged["train/reward"] <= 1.0
    assert "eval/gold_reward" in result.output
