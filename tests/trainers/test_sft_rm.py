"""The SFT and reward-model trainers through their Python API, on a tiny model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from checks import assert_same_weights, max_weight_change
from tandem.data import DataError
from tandem.algorithms.losses import bradley_terry_loss
from tandem.generation.packed import pack_groups, packable
from tandem.models.loading import enable_gradient_checkpointing
from tandem.trainers.rm import RMConfig, pack_pairs, pair_rewards, reward_length, run_rm
from tandem.trainers.sft import SFTConfig, padding_free_batch, run_sft

FAST = {"mixed_precision": "no", "progress": False, "n_eval": 8, "lr": 1e-3}


def sft_config(tmp_path, model, name, **overrides):
    values = {"model": model, "out": tmp_path / name, "n_train": 64, "batch_size": 8, "micro_batch_size": 8,
              "max_steps": 3, **FAST}
    values.update(overrides)
    return SFTConfig(**values)


def test_gradient_accumulation_gives_the_same_weights(tmp_path, tiny_model_dir):
    whole = run_sft(sft_config(tmp_path, tiny_model_dir, "whole", micro_batch_size=8))
    accumulated = run_sft(sft_config(tmp_path, tiny_model_dir, "accum", micro_batch_size=2))
    # Adam divides by sqrt(v), so float rounding in near-zero gradients shows up at ~1e-5 of a 1e-3 step.
    assert max_weight_change(tiny_model_dir, whole.model_dir) > 2e-3
    assert_same_weights(whole.model_dir, accumulated.model_dir, atol=5e-5)


def test_padding_free_equals_padded_batches(tmp_path, tiny_model_dir):
    packed = run_sft(sft_config(tmp_path, tiny_model_dir, "packed", padding_free=True))
    padded = run_sft(sft_config(tmp_path, tiny_model_dir, "padded", padding_free=False))
    assert_same_weights(packed.model_dir, padded.model_dir, atol=5e-5)


def test_padding_free_batch_masks_prompt_and_boundaries():
    examples = [
        {"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]},
        {"input_ids": [8, 9], "completion_mask": [1, 1]},
        {"input_ids": [3, 4, 5, 6], "completion_mask": [0, 0, 1, 1]},
    ]
    batch = padding_free_batch(examples, row_length=6, pad_id=1)
    # rows hold at most 6 tokens; the shorter row is padded (a segment of its own) to the longest
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, 5, 6, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    # the first token of each sequence is never a target (nothing to predict it from)
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, -100, 5, 6, -100]]
    assert int(batch["n_real_tokens"]) == 9


def test_sft_lowers_held_out_loss_and_writes_a_run_directory(tmp_path, tiny_model_dir):
    result = run_sft(sft_config(tmp_path, tiny_model_dir, "run", max_steps=None, epochs=2, n_train=256,
                                batch_size=16, micro_batch_size=16, eval_every=2, lr=3e-3))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval/loss"] for r in records if "eval/loss" in r]
    assert len(evals) >= 3 and evals[-1] < evals[0] - 0.3
    assert "eval/gold_reward" in result.metrics
    assert (tmp_path / "run" / "config.yaml").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # --save-every 0: the final model only, no optimizer state
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert AutoTokenizer.from_pretrained(result.model_dir).pad_token == "<|pad|>"
    assert model.config.vocab_size > 0


def test_sft_with_lora_saves_adapter_or_merged_model(tmp_path, tiny_model_dir):
    adapter = run_sft(sft_config(tmp_path, tiny_model_dir, "lora", lora_rank=4))
    assert (adapter.model_dir / "adapter_model.safetensors").exists()
    merged = run_sft(sft_config(tmp_path, tiny_model_dir, "merged", lora_rank=4, merge_lora=True))
    model = AutoModelForCausalLM.from_pretrained(merged.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed, "merging the trained adapter should change the base weights"


def test_sft_on_a_users_chat_file(tmp_path, tiny_model_dir):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"number {i}"}]}
            for i in range(40)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = run_sft(sft_config(tmp_path, tiny_model_dir, "chat", data=data, eval_fraction=0.1))
    assert result.steps == 3 and "eval/loss" in result.metrics


def test_bad_record_fails_before_training_with_file_line_and_field(tmp_path, tiny_model_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(DataError) as error:
        run_sft(sft_config(tmp_path, tiny_model_dir, "bad", data=data))
    assert "bad.jsonl" in str(error.value) and "line 2" in str(error.value) and "completion" in str(error.value)
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_completions_cut_to_fit_are_counted_and_reported(tmp_path, tiny_model_dir, capsys):
    """SFT cuts a completion (never the prompt) to fit --max-length, as TRL does, but says how many it cut."""
    from tandem.models.loading import load_tokenizer
    from tandem.trainers.sft import n_cut
    from tandem.data import tokenize_sft

    tokenizer = load_tokenizer(tiny_model_dir)
    rows = [{"prompt": "say", "completion": " good" * n} for n in (1, 3, 30, 60)]
    full = [len(tokenize_sft(r, tokenizer)["input_ids"]) for r in rows]
    limit = full[1]  # the second fits exactly: filling the length is not being cut
    assert n_cut(rows, [tokenize_sft(r, tokenizer, limit) for r in rows], tokenizer, limit) == 2
    assert n_cut(rows, [tokenize_sft(r, tokenizer) for r in rows], tokenizer, None) == 0
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(rows[i % 4]) + "\n" for i in range(40)))
    run_sft(sft_config(tmp_path, tiny_model_dir, "cut", data=data, eval_fraction=0.2, max_length=limit, max_steps=1))
    assert "16 of 32 training completions cut to fit --max-length" in capsys.readouterr().out


def rm_config(tmp_path, model, name, **overrides):
    values = {"model": model, "out": tmp_path / name, "n_train": 256, "n_eval": 64, "batch_size": 16,
              "micro_batch_size": 16, "epochs": 3, "lr": 3e-3, "mixed_precision": "no", "progress": False}
    values.update(overrides)
    return RMConfig(**values)


def test_reward_model_learns_gold_preferences_and_loads_in_transformers(tmp_path, tiny_model_dir):
    result = run_rm(rm_config(tmp_path, tiny_model_dir, "rm"))
    assert result.metrics["eval/accuracy"] > 0.7
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    good = tokenizer(["Review: The film was wonderful and brilliant, a great delight."], return_tensors="pt")
    bad = tokenizer(["Review: The film was awful and boring, a terrible mess."], return_tensors="pt")
    with torch.no_grad():
        assert model(**good).logits.item() > model(**bad).logits.item()


def test_pair_rewards_ignore_right_padding(tiny_model_dir):
    from tandem.data import pad_preference_batch
    from tandem.models.loading import load_reward_model

    model = load_reward_model(tiny_model_dir).eval()
    short = {"prompt_ids": [10, 11], "chosen_ids": [12, 0], "rejected_ids": [13, 14, 15, 16, 0]}
    batch = pad_preference_batch([short], pad_id=1)
    chosen, _ = pair_rewards(model, batch)
    alone = model(input_ids=torch.tensor([[10, 11, 12, 0]])).logits.squeeze()
    assert torch.allclose(chosen[0], alone, atol=1e-5)


def test_pack_groups_lays_the_shared_prefix_once():
    batch = pack_groups([[[5, 6, 7], [5, 6, 8, 9]], [[3], [3, 4]], [[1, 2, 3], [1, 2]]])
    # pair 1: the rejected lays down only [8, 9], at positions 2, 3 after the shared [5, 6]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 3, 4, 1, 2, 3]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 2, 3, 0, 1, 0, 1, 2]]
    # a sequence wholly inside the first of its group ([1, 2] in [1, 2, 3]) ends there
    assert batch["last_columns"].tolist() == [2, 4, 5, 6, 9, 8]
    columns, slots = batch["block_columns"], batch["column_slots"]
    real = [sorted(set(row)) for row in columns.tolist()]
    assert real == [[0, 1, 2], [0, 1, 3, 4], [5], [5, 6], [7, 8, 9]]
    # every column's output comes from the block that lays it down
    width = columns.shape[1]
    assert [columns.flatten()[s] for s in slots.tolist()] == list(range(10))
    assert [s // width for s in slots.tolist()] == [0, 0, 0, 1, 1, 2, 3, 4, 4, 4]
    with pytest.raises(ValueError):
        pack_groups([[[1, 2], []]])


def test_packed_forward_only_where_the_switch_holds(tiny_model_dir):
    from tandem.models.loading import load_reward_model

    model = load_reward_model(tiny_model_dir)
    assert packable(model)
    assert not packable(torch.compile(model))  # each batch's blocks would recompile
    enable_gradient_checkpointing(model)  # the recomputed forward would run without the packed attention
    assert not packable(model)


def test_reward_length_stops_where_transformers_pools():
    assert reward_length([4, 5, 2, 2], pad_id=2) == 2
    assert reward_length([2, 5, 2, 6], pad_id=2) == 4
    assert reward_length([2, 2], pad_id=2) == 1
    assert reward_length([4, 2], pad_id=None) == 2


def _rewards_loss_and_gradients(model, batch):
    model.zero_grad(set_to_none=True)
    chosen, rejected = pair_rewards(model, batch)
    loss = bradley_terry_loss(chosen, rejected, torch.zeros_like(chosen), 0.0).sum()
    loss.backward()
    return chosen.detach(), rejected.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_forward_equals_the_padded_forward(tiny_model_dir):
    from tandem.data import pad_preference_batch
    from tandem.models.loading import load_reward_model

    torch.manual_seed(0)
    model = load_reward_model(tiny_model_dir).train()
    with torch.no_grad():
        model.score.weight.normal_()  # a fresh head outputs ~0: random weights make the rewards differ
    pad = model.config.pad_token_id
    examples = [  # prompts and answers of different lengths; answers ending in the pad token (pad = EOS)
        {"prompt_ids": [10, 11, 12, 13, 14, 15, 16], "chosen_ids": [20, 21, pad], "rejected_ids": [30, 31, 32, 33, 34, 35]},
        {"prompt_ids": [40], "chosen_ids": [41, 42, 43, 44, 45, 46, 47, 48, 49], "rejected_ids": [50, pad]},
        {"prompt_ids": [60, 61, 62], "chosen_ids": [70, 71, 72, 73], "rejected_ids": [70, 71, 80]},  # shares 70, 71
        {"prompt_ids": [90, 91], "chosen_ids": [92, 93, 94], "rejected_ids": [92]},  # inside the chosen one
    ]
    padded = _rewards_loss_and_gradients(model, pad_preference_batch(examples, pad))
    packed_batch = pack_pairs(examples, pad)
    # the prompts once, the shared answer tokens once, nothing after a reward token, no padding
    assert packed_batch["input_ids"].shape == (1, (9 + 6) + (10 + 1) + (7 + 1) + 5)
    packed = _rewards_loss_and_gradients(model, packed_batch)
    for mine, theirs in zip(packed[:3], padded[:3]):
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=0), (mine, theirs)
    assert float((padded[0] - padded[1]).abs().min()) > 1e-2  # rewards that differ: the test can tell pairs apart
    for name, gradient in padded[3].items():
        scale = float(gradient.abs().max())
        assert torch.allclose(packed[3][name], gradient, atol=1e-5 * max(scale, 1.0), rtol=0), name
    assert max(float(g.abs().max()) for g in padded[3].values()) > 1e-3


def test_packed_and_padded_training_give_the_same_weights(tmp_path, tiny_model_dir):
    options = {"n_train": 64, "n_eval": 0, "batch_size": 8, "micro_batch_size": 8, "max_steps": 3, "epochs": 1}
    packed = run_rm(rm_config(tmp_path, tiny_model_dir, "packed", padding_free=True, **options))
    padded = run_rm(rm_config(tmp_path, tiny_model_dir, "padded", padding_free=False, **options))
    assert max_weight_change(tiny_model_dir, padded.model_dir) > 1e-3
    assert_same_weights(packed.model_dir, padded.model_dir, atol=5e-5)
