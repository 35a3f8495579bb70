"""Format detection, normalisation to plain text, implicit prompts and chat-template completion extraction."""

from __future__ import annotations

import pytest

from tandem.data import SFT_FORMATS, DataError, detect_format, load_examples, records_from_dicts, validate
from tandem.data.pieces import shared_leading_messages, shared_text_prefix

USER = {"role": "user", "content": "what is 2 + 2?"}
ANSWER = {"role": "assistant", "content": "the answer is 4"}
WRONG = {"role": "assistant", "content": "the answer is 5"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"text": "the cat sat"}, "text"),
        ({"prompt": "hi"}, "prompt_only"),
        ({"prompt": "hi", "completion": " yes"}, "prompt_completion"),
        ({"messages": [USER, ANSWER]}, "messages"),
        ({"prompt": "hi", "chosen": " yes", "rejected": " no"}, "preference"),
        ({"chosen": "hi yes", "rejected": "hi no"}, "preference"),
        ({"prompt": "hi", "completion": " yes", "label": True}, "unpaired"),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row) == expected
    assert detect_format(records_from_dicts([row])[0]) == expected


def test_detect_format_unknown_fields():
    with pytest.raises(DataError, match="cannot tell the data format"):
        detect_format({"question": "hi"})


def test_plain_formats_pass_through_and_keep_extra_fields(tokenizer):
    rows = [{"prompt": "what is 2 + 2?", "completion": " 4", "answer": "4"}]
    assert validate(records_from_dicts(rows), SFT_FORMATS, tokenizer) == rows
    assert validate(records_from_dicts([{"text": "the cat"}]), "text") == [{"text": "the cat"}]


def test_messages_completion_is_the_rendered_final_assistant_turn(tokenizer):
    system = {"role": "system", "content": "be brief"}
    [example] = validate(records_from_dicts([{"messages": [system, USER, ANSWER]}]), "messages", tokenizer)
    prompt_text = tokenizer.apply_chat_template([system, USER], add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template([system, USER, ANSWER], tokenize=False)
    assert example["prompt"] == prompt_text
    assert example["prompt"].endswith("<|im_start|>assistant\n")
    assert example["completion"] == "the answer is 4<|im_end|>\n"
    assert example["prompt"] + example["completion"] == full_text


def test_conversational_prompt_completion_matches_messages_format(tokenizer):
    conversational = {"prompt": [USER], "completion": [ANSWER]}
    from_pair = validate(records_from_dicts([conversational]), "prompt_completion", tokenizer)
    from_messages = validate(records_from_dicts([{"messages": [USER, ANSWER]}]), "messages", tokenizer)
    assert from_pair == from_messages


def test_implicit_prompt_from_strings_cuts_at_whitespace():
    assert shared_text_prefix("The cat sat on it", "The cat sate") == "The cat"
    assert shared_text_prefix("Answer: yes", "Answer: yes please") == "Answer:"
    rows = [{"chosen": "Q: 2 + 2? A: 4", "rejected": "Q: 2 + 2? A: 5"}]
    [example] = validate(records_from_dicts(rows), "preference")
    assert example == {"prompt": "Q: 2 + 2? A:", "chosen": " 4", "rejected": " 5"}


def test_implicit_prompt_from_messages(tokenizer):
    assert shared_leading_messages([USER, ANSWER], [USER, WRONG]) == [USER]
    [example] = validate(records_from_dicts([{"chosen": [USER, ANSWER], "rejected": [USER, WRONG]}]), "preference", tokenizer)
    explicit = {"prompt": [USER], "chosen": [ANSWER], "rejected": [WRONG]}
    assert [example] == validate(records_from_dicts([explicit]), "preference", tokenizer)
    assert example["prompt"] == tokenizer.apply_chat_template([USER], add_generation_prompt=True, tokenize=False)
    assert (example["chosen"], example["rejected"]) == ("the answer is 4<|im_end|>\n", "the answer is 5<|im_end|>\n")


def test_unpaired_keeps_label(tokenizer):
    rows = [{"prompt": [USER], "completion": [ANSWER], "label": False}]
    [example] = validate(records_from_dicts(rows), "unpaired", tokenizer)
    assert example["label"] is False
    assert example["completion"] == "the answer is 4<|im_end|>\n"


def test_expected_formats_are_tried_before_others(tokenizer):
    # An unpaired record has everything prompt_completion needs, so SFT accepts it (label carried through).
    row = {"prompt": "hi", "completion": " yes", "label": True}
    assert validate(records_from_dicts([row]), SFT_FORMATS, tokenizer) == [row]


def test_prompt_exactly_fitting_max_length_minus_one_is_accepted(tokenizer):
    prompt = "the cat sat on the mat"
    length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    rows = [{"prompt": prompt, "completion": " yes"}]
    assert validate(records_from_dicts(rows), "prompt_completion", tokenizer, max_length=length + 1) == rows
    with pytest.raises(DataError, match="leaves no room"):
        validate(records_from_dicts(rows), "prompt_completion", tokenizer, max_length=length)


def test_load_examples_reads_and_validates(write_jsonl, tokenizer):
    path = write_jsonl([{"messages": [USER, ANSWER]}])
    assert load_examples(path, SFT_FORMATS, tokenizer) == load_examples([{"messages": [USER, ANSWER]}], SFT_FORMATS, tokenizer)


def test_unknown_expected_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown data format"):
        validate([], "sft")
