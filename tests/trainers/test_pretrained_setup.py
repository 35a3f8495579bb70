"""Pretrained checkpoints vs tandem's from-scratch models: chat rendering, defaults, loud no-signal runs."""

import copy
import json
import shutil

import pytest
import torch
import yaml

from tandem.data import records_from_dicts, validate
from tandem.data.errors import DataError
from tandem.generation.sampling import _stop_ids
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.models.origin import ORIGIN_KEY, model_origin, use_chat_template
from tandem.tasks import get_task
from tandem.trainers.grpo import GRPOConfig, run_grpo
from tandem.trainers.online import NoSignalWatch, learning_signal, load_prompts
from tandem.trainers.setup import prepare_run
from tandem.trainers.sft import SFTConfig, run_sft


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model as if it came from elsewhere: no tandem origin marker in its config.json."""
    folder = tmp_path_factory.mktemp("pretrained")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    assert config.pop(ORIGIN_KEY) == "scratch"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_origin_is_read_from_the_config(tiny_model_dir, pretrained_dir, tmp_path):
    assert model_origin(tiny_model_dir) == "scratch"
    assert model_origin(pretrained_dir) == "pretrained"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert model_origin(adapter) == "scratch"  # an adapter has its base's origin


def test_chat_template_modes(sentiment_tokenizer):
    assert use_chat_template("auto", sentiment_tokenizer, "pretrained")
    assert not use_chat_template("auto", sentiment_tokenizer, "scratch")
    assert use_chat_template("on", sentiment_tokenizer, "scratch")
    assert not use_chat_template("off", sentiment_tokenizer, "pretrained")
    untemplated = copy.deepcopy(sentiment_tokenizer)
    untemplated.chat_template = None
    assert not use_chat_template("auto", untemplated, "pretrained")
    with pytest.raises(ValueError, match="no chat template"):
        use_chat_template("on", untemplated, "pretrained")


def test_pretrained_defaults_apply_only_to_what_the_user_left_unset(pretrained_dir, tiny_model_dir, capsys):
    tokenizer = load_tokenizer(pretrained_dir)
    config = GRPOConfig(model=pretrained_dir)
    setup = prepare_run(config, tokenizer)
    assert setup.origin == "pretrained" and setup.chat
    assert config.lr == 1e-6 and config.max_new_tokens == 256
    assert "lr=1e-06" in capsys.readouterr().out  # the resolved values are printed
    given = GRPOConfig(model=pretrained_dir, lr=3e-5)
    prepare_run(given, tokenizer)
    assert given.lr == 3e-5 and given.max_new_tokens == 256
    scratch = GRPOConfig(model=tiny_model_dir)
    assert not prepare_run(scratch, load_tokenizer(tiny_model_dir)).chat
    assert scratch.lr == GRPOConfig.model_fields["lr"].default and scratch.max_new_tokens is None


def test_task_prompts_are_rendered_once_for_a_pretrained_model(pretrained_dir):
    tokenizer = load_tokenizer(pretrained_dir)
    config = GRPOConfig(model=pretrained_dir, task="arithmetic", n_prompts=5)
    setup = prepare_run(config, tokenizer)
    prompts = load_prompts(config, tokenizer, get_task("arithmetic"), setup)
    raw = get_task("arithmetic").sft_examples(5, seed=0)
    for row, original in zip(prompts, raw):
        assert row["prompt"] == f"<|im_start|>user\n{original['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    eval_rows = setup.eval_prompts(get_task("arithmetic"), config, tokenizer)
    assert all(r["prompt"].count("<|im_start|>assistant\n") == 1 and "answer" in r for r in eval_rows)


def test_sft_on_a_pretrained_model_saves_the_resolved_config_and_no_optimizer_state(pretrained_dir, tmp_path):
    result = run_sft(SFTConfig(model=pretrained_dir, out=tmp_path / "sft", n_train=16, n_eval=0, batch_size=8,
                               max_steps=1, mixed_precision="no", progress=False))
    saved = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())
    assert saved["lr"] == 2e-5 and saved["chat_template"] == "auto"
    assert (result.model_dir / "model.safetensors").exists()
    assert not list((tmp_path / "sft").rglob("optimizer.pt"))  # --save-every 0: no optimizer state written
    with pytest.raises(FileExistsError, match="finished run"):
        run_sft(SFTConfig(model=pretrained_dir, out=tmp_path / "sft", n_train=16, n_eval=0, batch_size=8,
                          max_steps=1, mixed_precision="no", progress=False))


def test_end_of_turn_token_stops_generation(pretrained_dir):
    tokenizer = load_tokenizer(pretrained_dir)
    model = load_causal_lm(pretrained_dir)
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # as many checkpoints ship it
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in _stop_ids(model, tokenizer)


def test_long_prompt_policies(sentiment_tokenizer):
    rows = [{"prompt": "good " * 40, "completion": " yes"}, {"prompt": "bad", "completion": " no"}]
    with pytest.raises(DataError, match="row 1.*--max-prompt-length=8"):
        validate(records_from_dicts(rows), "prompt_completion", sentiment_tokenizer, max_length=64, max_prompt_length=8)
    kept = validate(records_from_dicts(rows), "prompt_completion", sentiment_tokenizer, max_length=64,
                    max_prompt_length=8, on_long_prompt="skip")
    assert [r["prompt"] for r in kept] == ["bad"]
    cut = validate(records_from_dicts(rows), "prompt_completion", sentiment_tokenizer, max_length=64,
                   max_prompt_length=8, on_long_prompt="truncate")
    assert len(sentiment_tokenizer(cut[0]["prompt"], add_special_tokens=False)["input_ids"]) <= 8
    assert rows[0]["prompt"].endswith(cut[0]["prompt"])  # the end of the prompt is kept
    with pytest.raises(DataError, match="every record"):
        validate(records_from_dicts(rows[:1]), "prompt_completion", sentiment_tokenizer, max_length=64,
                 max_prompt_length=8, on_long_prompt="skip")


def test_learning_signal_and_watch_on_equal_rewards():
    from tandem.generation.rollout import RolloutBatch

    batch = RolloutBatch(prompts=["p"] * 4, completions=["a", "b", "", "c"], input_ids=torch.zeros(4, 3, dtype=torch.long),
                         attention_mask=torch.ones(4, 3), completion_mask=torch.ones(4, 3),
                         sampled_log_probs=torch.zeros(4, 3), ended=torch.tensor([True, True, False, True]),
                         group_ids=torch.tensor([0, 0, 1, 1]))
    valid = torch.ones(4, dtype=torch.bool)
    tied = learning_signal(batch, torch.tensor([1.0, 1.0, 0.0, 0.0]), valid, grouped=True)
    assert tied == {"signal/informative_fraction": 0.0, "signal/empty_fraction": 0.25, "signal/truncated_fraction": 0.25}
    mixed = learning_signal(batch, torch.tensor([1.0, 0.0, 0.0, 0.0]), valid, grouped=True)
    assert mixed["signal/informative_fraction"] == 0.5
    watch = NoSignalWatch(patience=2)
    assert watch.update(0, tied, batch, torch.ones(4)) is None
    message = watch.update(1, tied, batch, torch.ones(4))
    assert "every reward is equal" in message and "'a'" in message and "--chat-template" in message
    assert watch.update(2, tied, batch, torch.ones(4)) is None  # once
    assert watch.steps_with_signal == 0


def test_a_grpo_run_with_constant_rewards_says_so(tmp_path, tiny_model_dir, monkeypatch, capsys):
    (tmp_path / "flat_reward.py").write_text("def score(prompts, completions, **kw):\n    return [0.5] * len(prompts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run_grpo(GRPOConfig(model=tiny_model_dir, out=tmp_path / "run", task="sentiment",
                                 reward="flat_reward:score", max_steps=3, batch_size=2, samples_per_prompt=2,
                                 max_new_tokens=4, n_eval=0, progress=False, mixed_precision="no",
                                 no_signal_patience=2))
    out = capsys.readouterr().out
    assert "2 steps in a row" in out and "every reward is equal" in out
    assert "none of the 3 steps had anything to learn from" in out
    assert not result.learned
    from typer.testing import CliRunner

    from tandem.cli import app

    args = ["grpo", "--model", str(tiny_model_dir), "--out", str(tmp_path / "cli"), "--task", "sentiment",
            "--reward", "flat_reward:score", "--max-steps", "2", "--batch-size", "2", "--samples-per-prompt", "2",
            "--max-new-tokens", "4", "--n-eval", "0", "--no-progress", "--mixed-precision", "no"]
    ran = CliRunner().invoke(app, args)
    assert ran.exit_code == 1, ran.output
    assert "nothing was learned: none of the 2 steps had a learning signal" in ran.output
    assert (tmp_path / "cli" / "model" / "config.json").exists()  # the run's files are still there to inspect
