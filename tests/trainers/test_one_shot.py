"""One-shot RLVR: the example log `tandem grpo` writes, the historical-variance pick, and the one-example run."""

import json
import math

import pytest

from tandem.data import DataError
from tandem.trainers.grpo import GRPOConfig, run_grpo
from tandem.trainers.one_shot import (
    OneShotConfig, example_accuracy_history, historical_variance_ranking, run_one_shot,
)


def test_ranking_is_by_population_std_of_per_epoch_accuracy():
    history = {0: [0.0, 0.0, 0.0], 1: [0.0, 1.0, 1.0], 2: [0.5, 0.5, 1.0], 3: [1.0]}
    ranking = historical_variance_ranking(history)
    assert [i for i, _ in ranking] == [1, 2, 0, 3]
    assert ranking[0][1] == pytest.approx(math.sqrt(2 / 9))  # values 0, 1, 1: mean 2/3
    assert ranking[-1][1] == -1.0  # one epoch: no spread to measure


def test_history_groups_records_by_example_and_epoch(tmp_path):
    lines = [{"step": 1, "epoch": 0, "index": 3, "reward": 0.0}, {"step": 2, "epoch": 0, "index": 3, "reward": 1.0},
             {"step": 5, "epoch": 1, "index": 3, "reward": 1.0}, {"step": 5, "epoch": 1, "index": 4, "reward": 0.25}]
    (tmp_path / "example_rewards.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert example_accuracy_history(tmp_path) == {3: [0.5, 1.0], 4: [0.25]}
    (tmp_path / "example_rewards.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(DataError, match=r"example_rewards.jsonl:1"):
        example_accuracy_history(tmp_path)
    with pytest.raises(FileNotFoundError, match="tandem grpo"):
        example_accuracy_history(tmp_path / "missing")


@pytest.mark.e2e
def test_grpo_logs_example_rewards_and_one_shot_trains_on_the_picked_example(tmp_path, tiny_model_dir):
    common = dict(model=tiny_model_dir, task="sentiment", batch_size=4, samples_per_prompt=4, max_new_tokens=6,
                  n_prompts=8, n_eval=0, progress=False, mixed_precision="no")
    run_grpo(GRPOConfig(out=tmp_path / "full", max_steps=6, **common))  # 2 steps per epoch: 3 epochs
    history = example_accuracy_history(tmp_path / "full")
    assert sorted(history) == list(range(8)) and all(len(v) == 3 for v in history.values())
    best = historical_variance_ranking(history)[0][0]

    run_one_shot(OneShotConfig(out=tmp_path / "one", history=tmp_path / "full", max_steps=2, eval_every=0, **common))
    assert json.loads((tmp_path / "one" / "examples.json").read_text())["indices"] == [best]
    trained_on = {json.loads(line)["index"] for line in (tmp_path / "one" / "example_rewards.jsonl").read_text().splitlines()}
    assert len(trained_on) >= 1  # indices into the duplicated list: every one of them is the same prompt
    prompts = json.loads((tmp_path / "one" / "examples.json").read_text())["prompts"]
    assert len(prompts) == 1
