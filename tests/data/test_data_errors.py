"""Every kind of bad record yields a DataError naming the file, the line and the field, before any training."""

from __future__ import annotations

import pytest

from tandem.data import SFT_FORMATS, DataError, read_records, validate

GOOD_SFT = {"prompt": "what is 2 + 2?", "completion": " 4"}
GOOD_PREFERENCE = {"prompt": "what is 2 + 2?", "chosen": " 4", "rejected": " 5"}
GOOD_UNPAIRED = {**GOOD_SFT, "label": True}
USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "hello"}
LONG_PROMPT = " ".join(["the cat sat on the mat"] * 20)

# (case id, expected format(s), good record, bad record, field named in the error, words in the message)
CASES = [
    ("missing field", SFT_FORMATS, GOOD_SFT, {"prompt": "hi"}, "completion", "missing field 'completion'"),
    ("wrong type", SFT_FORMATS, GOOD_SFT, {"prompt": "hi", "completion": 3}, "completion", "got int"),
    ("wrong type chosen", "preference", GOOD_PREFERENCE, {**GOOD_PREFERENCE, "chosen": 7}, "chosen", "expected a string or a list of messages, got int"),
    ("mixed kinds", SFT_FORMATS, GOOD_SFT, {"prompt": [USER], "completion": "hello"}, "completion", "like the prompt"),
    ("empty completion", SFT_FORMATS, GOOD_SFT, {"prompt": "hi", "completion": ""}, "completion", "must not be empty"),
    ("empty chosen", "preference", GOOD_PREFERENCE, {**GOOD_PREFERENCE, "chosen": ""}, "chosen", "must not be empty"),
    ("empty rejected", "preference", GOOD_PREFERENCE, {**GOOD_PREFERENCE, "rejected": []}, "rejected", "must not be empty"),
    ("identical pair", "preference", GOOD_PREFERENCE, {**GOOD_PREFERENCE, "rejected": " 4"}, "rejected", "identical"),
    ("no common prefix", "preference", GOOD_PREFERENCE, {"chosen": "yes", "rejected": "no"}, "prompt", "no common prefix"),
    ("no shared messages", "preference", GOOD_PREFERENCE, {"chosen": [ASSISTANT], "rejected": [USER]}, "prompt", "no leading messages"),
    ("unknown role", "messages", {"messages": [USER, ASSISTANT]}, {"messages": [{"role": "robot", "content": "x"}, ASSISTANT]}, "messages[0].role", "unknown role 'robot'"),
    ("no content", "messages", {"messages": [USER, ASSISTANT]}, {"messages": [{"role": "user"}, ASSISTANT]}, "messages[0].content", "message without content"),
    ("last turn not assistant", "messages", {"messages": [USER, ASSISTANT]}, {"messages": [ASSISTANT, USER]}, "messages[1].role", "must be from the assistant"),
    ("assistant turn only", "messages", {"messages": [USER, ASSISTANT]}, {"messages": [ASSISTANT]}, "messages", "at least one message before"),
    ("empty conversational prompt", SFT_FORMATS, GOOD_SFT, {"prompt": [], "completion": [ASSISTANT]}, "prompt", "at least one message"),
    ("message not an object", SFT_FORMATS, GOOD_SFT, {"prompt": [USER, "hi"], "completion": [ASSISTANT]}, "prompt[1]", "expected a message object"),
    ("label not bool", "unpaired", GOOD_UNPAIRED, {**GOOD_SFT, "label": "yes"}, "label", "expected a bool"),
    ("preference given to sft", SFT_FORMATS, GOOD_SFT, GOOD_PREFERENCE, "completion", "'preference' format"),
    ("sft given to preference", "preference", GOOD_PREFERENCE, GOOD_SFT, "chosen", "'prompt_completion' format"),
    ("text given to sft", SFT_FORMATS, GOOD_SFT, {"text": "hi"}, "messages", "'text' format"),
    ("prompt too long", SFT_FORMATS, GOOD_SFT, {"prompt": LONG_PROMPT, "completion": " 4"}, "prompt", "longer than max_length=32"),
    ("empty text", "text", {"text": "the cat"}, {"text": ""}, "text", "must not be empty"),
]


@pytest.mark.parametrize(("expected", "good", "bad", "field", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_record_on_line_3_is_located(write_jsonl, tokenizer, expected, good, bad, field, words):
    path = write_jsonl([good, good, bad, good])
    records = read_records(path)
    assert validate(records[:2], expected, tokenizer, max_length=32)  # the good rows are fine
    with pytest.raises(DataError) as caught:
        validate(records, expected, tokenizer, max_length=32)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), 3, field)
    message = str(error)
    assert "data.jsonl" in message and "line 3" in message and f"field '{field}'" in message
    assert words in message


def test_all_failures_are_counted_and_the_first_is_raised(write_jsonl, tokenizer):
    path = write_jsonl([GOOD_SFT, {"prompt": "a"}, GOOD_SFT, {"prompt": "b", "completion": 1}, {"text": "c"}])
    with pytest.raises(DataError) as caught:
        validate(read_records(path), SFT_FORMATS, tokenizer)
    assert caught.value.line == 2
    assert "3 of 5 records failed validation" in str(caught.value)


def test_prompt_that_fills_max_length_leaves_no_room(write_jsonl, tokenizer):
    prompt_length = len(tokenizer(LONG_PROMPT, add_special_tokens=False)["input_ids"])
    path = write_jsonl([GOOD_SFT, GOOD_SFT, {"prompt": LONG_PROMPT, "completion": " 4"}])
    with pytest.raises(DataError, match=r"data\.jsonl, line 3, field 'prompt': .* leaves no room"):
        validate(read_records(path), SFT_FORMATS, tokenizer, max_length=prompt_length)


def test_parquet_errors_name_the_row(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD_PREFERENCE, {**GOOD_PREFERENCE, "chosen": ""}]), path)
    with pytest.raises(DataError, match=r"prefs\.parquet, row 2, field 'chosen': must not be empty"):
        validate(read_records(path), "preference", tokenizer)


@pytest.mark.parametrize("content", ["", "  \n"])
def test_an_empty_final_assistant_turn_is_rejected(write_jsonl, tokenizer, content):
    path = write_jsonl([{"messages": [USER, ASSISTANT]}, {"messages": [USER, {"role": "assistant", "content": content}]}])
    with pytest.raises(DataError, match=r"line 2, field 'messages\[1\]\.content': the final assistant turn is empty"):
        validate(read_records(path), "messages", tokenizer)


def test_one_bad_csv_label_is_blamed_on_its_own_line(tmp_path, tokenizer):
    path = tmp_path / "labels.csv"
    cells = ["true", "false", "true", "maybe", "false"]
    path.write_text("prompt,completion,label\n" + "".join(f"hi,there,{cell}\n" for cell in cells))
    with pytest.raises(DataError) as caught:
        validate(read_records(path), "unpaired", tokenizer)
    assert str(caught.value) == f"{path}, line 5, field 'label': expected a bool (true = desirable), got str 'maybe'"


@pytest.mark.parametrize("margin", [10**400, float("inf"), "1.0", True])
def test_a_margin_that_is_no_finite_number_is_rejected(write_jsonl, tokenizer, margin):
    path = write_jsonl([GOOD_PREFERENCE, {**GOOD_PREFERENCE, "margin": margin}])
    with pytest.raises(DataError, match=r"line 2, field 'margin': expected a finite number, got .{1,45}$"):
        validate(read_records(path), "preference", tokenizer)


def test_csv_margins_are_read_as_numbers(tmp_path, tokenizer):
    from tandem.data import load_examples

    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected,margin\nQ:, good, bad,0.5\nQ:, fine, worse,2\n")
    rows = load_examples(path, "preference", tokenizer)
    assert [r["margin"] for r in rows] == [0.5, 2.0]
    path.write_text("prompt,chosen,rejected,margin\nQ:, good, bad,0.5\nQ:, fine, worse,lots\n")
    with pytest.raises(DataError, match="line 3, field 'margin'"):
        load_examples(path, "preference", tokenizer)
