"""Tokenization: exact prompt/completion boundary, mask on completion + EOS only, truncation keeps the prompt."""

from __future__ import annotations

import pytest

from tandem.data import pack_sequences, records_from_dicts, tokenize_preference, tokenize_sft, tokenize_text, tokenize_unpaired, validate

EXAMPLE = {"prompt": "what is 3 + 4?", "completion": " the answer is 7."}


def test_sft_mask_covers_exactly_completion_and_eos(tokenizer):
    tokens = tokenize_sft(EXAMPLE, tokenizer)
    prompt_ids = tokenizer(EXAMPLE["prompt"], add_special_tokens=False)["input_ids"]
    ids, mask = tokens["input_ids"], tokens["completion_mask"]
    assert len(ids) == len(mask)
    assert ids[: len(prompt_ids)] == prompt_ids
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    assert ids[-1] == tokenizer.eos_token_id
    completion_ids = [token for token, in_completion in zip(ids, mask) if in_completion]
    assert tokenizer.decode(completion_ids[:-1]) == EXAMPLE["completion"]
    assert tokenizer.decode(completion_ids, skip_special_tokens=False).endswith("<|endoftext|>")


def test_sft_does_not_double_an_existing_eos(tokenizer):
    tokens = tokenize_sft({"prompt": "hi", "completion": " yes<|endoftext|>"}, tokenizer)
    assert tokens["input_ids"].count(tokenizer.eos_token_id) == 1
    assert tokens["input_ids"][-1] == tokenizer.eos_token_id


def test_sft_chat_template_completion_round_trips(tokenizer):
    messages = [{"role": "user", "content": "what is 3 + 4?"}, {"role": "assistant", "content": "7"}]
    [example] = validate(records_from_dicts([{"messages": messages}]), "messages", tokenizer)
    tokens = tokenize_sft(example, tokenizer)
    completion_ids = [token for token, in_completion in zip(tokens["input_ids"], tokens["completion_mask"]) if in_completion]
    # the template's end-of-turn token is the target exactly once: no newline after it, no EOS doubling it
    assert tokenizer.decode(completion_ids, skip_special_tokens=False) == "7<|im_end|>"
    prompt_ids = [token for token, in_completion in zip(tokens["input_ids"], tokens["completion_mask"]) if not in_completion]
    assert tokenizer.decode(prompt_ids, skip_special_tokens=False) == example["prompt"]


def test_sft_truncation_keeps_the_prompt(tokenizer):
    full = tokenize_sft(EXAMPLE, tokenizer)
    prompt_length = full["completion_mask"].index(1)
    truncated = tokenize_sft(EXAMPLE, tokenizer, max_length=prompt_length + 2)
    assert len(truncated["input_ids"]) == prompt_length + 2
    assert truncated["input_ids"] == full["input_ids"][: prompt_length + 2]
    assert truncated["completion_mask"] == [0] * prompt_length + [1, 1]
    assert tokenizer.eos_token_id not in truncated["input_ids"]  # a cut response must not teach stopping
    with pytest.raises(ValueError, match="no room"):
        tokenize_sft(EXAMPLE, tokenizer, max_length=prompt_length)


def test_text_ends_with_eos(tokenizer):
    ids = tokenize_text({"text": "the cat sat"}, tokenizer)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == "the cat sat"


def test_preference_responses_end_with_eos_and_fit(tokenizer):
    example = {"prompt": "what is 3 + 4?", "chosen": " 7", "rejected": " the answer is 8 or maybe 9."}
    tokens = tokenize_preference(example, tokenizer)
    assert tokens["prompt_ids"] == tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    assert tokens["chosen_ids"][-1] == tokens["rejected_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(tokens["chosen_ids"][:-1]) == " 7"
    max_length = len(tokens["prompt_ids"]) + 3
    short = tokenize_preference(example, tokenizer, max_length=max_length)
    assert short["prompt_ids"] == tokens["prompt_ids"]
    assert short["chosen_ids"] == tokens["chosen_ids"][:3]
    assert short["rejected_ids"] == tokens["rejected_ids"][:3]


def test_unpaired_keeps_label_and_eos(tokenizer):
    tokens = tokenize_unpaired({"prompt": "hi", "completion": " yes", "label": False}, tokenizer)
    assert tokens["label"] is False
    assert tokens["completion_ids"][-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("block_size", [1, 3, 4, 7])
def test_pack_sequences_blocks_preserve_content(block_size):
    sequences = [[5, 6, 0], [7, 0], [8, 9, 10, 11, 0]]
    stream = [token for sequence in sequences for token in sequence]
    blocks = pack_sequences(sequences, block_size)
    assert all(len(block) == block_size for block in blocks)
    assert len(blocks) == len(stream) // block_size
    assert [token for block in blocks for token in block] == stream[: len(blocks) * block_size]
    kept = pack_sequences(sequences, block_size, drop_last=False)
    assert [token for block in kept for token in block] == stream


def test_pack_sequences_adds_missing_separators():
    assert pack_sequences([[1, 2], [3, 0]], block_size=3, eos_id=0, drop_last=False) == [[1, 2, 0], [3, 0]]


def test_plain_completion_gets_eos_and_keeps_its_trailing_newline(tokenizer):
    tokens = tokenize_sft({"prompt": "Q:", "completion": " 7\n"}, tokenizer)
    completion = [t for t, m in zip(tokens["input_ids"], tokens["completion_mask"]) if m]
    assert tokenizer.decode(completion, skip_special_tokens=False) == " 7\n<|endoftext|>"


def test_string_prompts_through_the_chat_template_end_once(tokenizer):
    [example] = validate(records_from_dicts([{"prompt": "what is 3 + 4?", "completion": "7"}]), "prompt_completion",
                         tokenizer, chat=True)
    assert example["prompt"] == "<|im_start|>user\nwhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
    assert example["prompt"].count("<|im_start|>assistant") == 1
    tokens = tokenize_sft(example, tokenizer)
    completion = [t for t, m in zip(tokens["input_ids"], tokens["completion_mask"]) if m]
    assert tokenizer.decode(completion, skip_special_tokens=False) == "7<|im_end|>"
