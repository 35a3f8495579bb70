"""Grouped-query attention inside the CPU SDPA kernel: the same logits and gradients as transformers' SDPA, without
repeating the key/value heads."""

import json

import pytest
import torch
import transformers.integrations.sdpa_attention as hf_sdpa

from tandem.generation.prefix import plan_prefix, shared_prefix_logits
from tandem.models.attention import GROUPED_ATTENTION, use_grouped_attention
from tandem.models.factory import build_model
from tandem.models.loading import load_causal_lm


def _forward_and_grads(model, batch):
    model.zero_grad()
    logits = model(**batch).logits
    (logits.float().square() * batch["attention_mask"][..., None]).mean().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def _padded_batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 500, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_grouped_attention_gives_sdpa_logits_and_gradients_without_repeating_heads(sentiment_tokenizer, arch,
                                                                                  monkeypatch):
    model = build_model("tiny", sentiment_tokenizer, arch=arch, seed=0)  # 4 query heads, 2 key/value heads
    assert model.config._attn_implementation == GROUPED_ATTENTION  # tandem's builder switches it
    batch = _padded_batch()
    grouped_logits, grouped_grads = _forward_and_grads(model, batch)

    repeats = []
    repeat_kv = hf_sdpa.repeat_kv
    monkeypatch.setattr(hf_sdpa, "repeat_kv", lambda x, n: repeats.append(n) or repeat_kv(x, n))
    model.config._attn_implementation = "sdpa"
    sdpa_logits, sdpa_grads = _forward_and_grads(model, batch)
    assert repeats  # transformers' SDPA repeats the heads under a mask; the grouped kernel did not (counted after)

    model.config._attn_implementation = GROUPED_ATTENTION
    repeats.clear()
    _forward_and_grads(model, batch)
    assert repeats == []
    torch.testing.assert_close(grouped_logits, sdpa_logits, atol=1e-5, rtol=1e-5)
    for grouped, sdpa in zip(grouped_grads, sdpa_grads):
        torch.testing.assert_close(grouped, sdpa, atol=1e-5, rtol=1e-4)


def test_shared_prefix_forward_matches_the_plain_sdpa_forward(sentiment_tokenizer):
    """The agent update's forward (cached keys and values of the shared prompt, a mask over them) on grouped heads."""
    model = build_model("tiny", sentiment_tokenizer, seed=1)
    common, rows = [7, 8, 9, 10], [[11, 12, 13, 40, 41], [11, 12, 13, 42], [14, 43, 44, 45]]
    width = len(common) + max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        full = common + row
        ids[i, : len(full)], mask[i, : len(full)] = torch.tensor(full), 1
        labels[i, len(full) - 2 : len(full)] = torch.tensor(full[-2:])
    plan = plan_prefix(ids, mask, labels)
    shared = shared_prefix_logits(model, plan).dense(width)
    model.config._attn_implementation = "sdpa"
    plain = model(input_ids=ids, attention_mask=mask).logits
    scored = (labels[:, 1:] != -100)
    torch.testing.assert_close(shared[:, :-1][scored], plain[:, :-1][scored], atol=1e-5, rtol=1e-5)


def test_loaded_models_switch_and_saved_configs_stay_plain(tiny_model_dir, tmp_path):
    model = load_causal_lm(tiny_model_dir)  # 2 query heads, 1 key/value head
    assert model.config._attn_implementation == GROUPED_ATTENTION
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert GROUPED_ATTENTION not in json.dumps(saved)


def test_models_without_grouped_heads_or_on_eager_are_left_alone(sentiment_tokenizer):
    from tandem.models.factory import ModelSize

    size = ModelSize(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=128, vocab_size=512)
    assert build_model(size, sentiment_tokenizer).config._attn_implementation == "sdpa"
    model = build_model("tiny", sentiment_tokenizer)
    model.config._attn_implementation = "eager"
    assert use_grouped_attention(model).config._attn_implementation == "eager"
