"""Every supported file type reads back exactly what was written, with the right line/row numbers."""

from __future__ import annotations

import csv
import json
import pickle

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tandem.data import DataError, read_records, records_from_dicts

ROWS = [
    {"prompt": "what is 2 + 2?", "completion": " 4", "label": True},
    {"prompt": "what is 3 + 3?", "completion": " 7", "label": False},
    {"prompt": "say hi", "completion": " hi", "label": True},
]


def test_jsonl_round_trip_counts_blank_lines(write_jsonl):
    path = write_jsonl([ROWS[0], "", "   ", ROWS[1], ROWS[2]])
    records = read_records(path)
    assert [record.data for record in records] == ROWS
    assert [record.line for record in records] == [1, 4, 5]
    assert {record.path for record in records} == {str(path)}


def test_json_list_round_trip(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(ROWS, indent=2))
    records = read_records(path)
    assert [record.data for record in records] == ROWS
    assert [(record.line, record.unit) for record in records] == [(1, "row"), (2, "row"), (3, "row")]


def test_parquet_round_trip_with_messages(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 2
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = read_records(path)
    assert [record.data for record in records] == rows
    assert [record.line for record in records] == [1, 2]


def test_csv_round_trip_keeps_strings_and_reads_booleans(tmp_path):
    path = tmp_path / "data.csv"
    rows = [{**ROWS[0], "completion": "line one\nline two"}, {**ROWS[1], "prompt": "007"}, ROWS[2]]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["prompt", "completion", "label"])
        writer.writeheader()
        writer.writerows(rows)
    records = read_records(path)
    assert [record.data for record in records] == rows  # "007" stays a string; true/false become bools
    assert [record.line for record in records] == [2, 4, 5]  # header is line 1; row 1 spans lines 2-3


def test_csv_row_with_wrong_cell_count_names_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,completion\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"data\.csv, line 3: row has 3 cells but the header has 2"):
        read_records(path)


def test_saved_dataset_and_dataset_dict(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert [record.data for record in read_records(tmp_path / "single")] == ROWS

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])})
    splits.save_to_disk(str(tmp_path / "splits"))
    test_records = read_records(tmp_path / "splits", split="test")
    assert [record.data for record in test_records] == ROWS[:1]
    assert test_records[0].path.endswith("splits[test]")
    with pytest.raises(DataError, match="split 'validation' not found; available splits: test, train"):
        read_records(tmp_path / "splits", split="validation")


def test_invalid_json_line_is_named(write_jsonl):
    path = write_jsonl([ROWS[0], ROWS[1], '{"prompt": "oops",'])
    with pytest.raises(DataError, match=r"data\.jsonl, line 3: invalid JSON") as caught:
        read_records(path)
    assert caught.value.line == 3


def test_non_object_line_is_rejected(write_jsonl):
    with pytest.raises(DataError, match=r"line 2: expected a JSON object, got list"):
        read_records(write_jsonl([ROWS[0], [1, 2]]))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file or directory"),
        ("data.txt", "hello", "unsupported file type '.txt'"),
        ("folder", "", "not a dataset saved with `datasets`"),
        ("data.json", '{"a": 1}', "expected a JSON list of objects"),
    ],
)
def test_unreadable_sources_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        read_records(path)
    assert name in str(caught.value)


def test_records_from_dicts_numbers_rows_and_rejects_non_dicts():
    records = records_from_dicts(ROWS, source="<arithmetic>")
    assert [(record.path, record.line) for record in records] == [("<arithmetic>", 1), ("<arithmetic>", 2), ("<arithmetic>", 3)]
    with pytest.raises(DataError, match=r"<arithmetic>, row 2: expected a JSON object, got str"):
        records_from_dicts([ROWS[0], "oops"], source="<arithmetic>")


def test_data_error_survives_pickling():
    error = DataError("bad", path="data.jsonl", line=7, field="chosen", failed_records=3, total_records=9)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.field, str(copy)) == ("data.jsonl", 7, "chosen", str(error))
    assert str(error) == "data.jsonl, line 7, field 'chosen': bad (3 of 9 records failed validation; this is the first)"


# (file name, raw bytes, words in the message, line named): every way a file can be unreadable is a DataError.
BROKEN_FILES = [
    ("bad_utf8.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n', "invalid UTF-8 at byte 12 of the line", 2),
    ("bad_utf8.csv", b"prompt,completion\na,b\nc,\xc3\x28\n", "invalid UTF-8", 3),
    ("bad_utf8.json", b'[{"prompt": "a"},\n {"prompt": "\xff"}]', "invalid UTF-8", 2),
    ("corrupt.parquet", b"PAR1 this is not parquet", "cannot read this file as Parquet", None),
    ("zero.parquet", b"", "cannot read this file as Parquet", None),
    ("deep.jsonl", b'{"a": 1}\n{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "nested deeper than 100 levels", 2),
    ("deep.json", b'[{"a": 1},\n {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}]", "nested deeper than 100 levels", 2),
    ("fairly_deep.jsonl", b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}\n", "field 'a': nested deeper than 100", 1),
    ("huge_int.jsonl", b'{"margin": ' + b"1" * 5000 + b"}\n", "invalid JSON: Exceeds the limit (4300 digits)", 1),
    ("surrogate.jsonl", b'{"prompt": "\\ud800"}\n', "field 'prompt': text holds an invalid Unicode escape", 1),
    ("empty.jsonl", b"", "no records", None),
    ("blank.jsonl", b"\n  \n", "no records", None),
    ("empty.json", b"", "no records", None),
    ("empty_list.json", b"[]", "no records", None),
    ("empty.csv", b"", "no records", None),
    ("header_only.csv", b"prompt,completion\n", "no records", None),
    ("duplicate.csv", b"prompt,completion,prompt\na,b,c\n", "field 'prompt': this column appears twice", 1),
]


@pytest.mark.parametrize(("name", "content", "words", "line"), BROKEN_FILES, ids=[case[0] for case in BROKEN_FILES])
def test_broken_files_are_data_errors_naming_file_and_line(tmp_path, name, content, words, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_records(path)
    assert str(caught.value).startswith(str(path)) and words in str(caught.value)
    assert caught.value.line == line


def test_empty_parquet_table_has_no_records(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match=r"empty\.parquet: no records"):
        read_records(path)


def test_csv_cell_longer_than_the_old_csv_limit_is_read(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("prompt,completion\nhi," + "x" * 200_000 + "\n")
    assert len(read_records(path)[0].data["completion"]) == 200_000  # csv's default limit is 131,072


@pytest.mark.parametrize("name", ["long.jsonl", "long.csv", "long.json"])
def test_a_record_over_the_size_limit_fails_fast_naming_its_line(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TANDEM_MAX_RECORD_BYTES", "1000")
    path = tmp_path / name
    rows = [{"prompt": "hi", "completion": "x"}, {"prompt": "hi", "completion": "x" * 2000}]
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    elif name.endswith(".csv"):
        path.write_text("prompt,completion\n" + "".join(f"{row['prompt']},{row['completion']}\n" for row in rows))
    else:
        path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="over the limit of 1,000|longer than the limit of 1,000") as caught:
        read_records(path)
    assert caught.value.line == (3 if name.endswith(".csv") else 2)  # a CSV's header is line 1
    assert "TANDEM_MAX_RECORD_BYTES raises it" in str(caught.value)


def test_a_line_over_the_default_limit_is_rejected_before_parsing(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text('{"prompt": "hi", "completion": "x"}\n{"prompt": "' + "x" * 11 * 2**20 + '"}\n')
    with pytest.raises(DataError, match=r"huge\.jsonl, line 2: the line is 11,534,351 bytes, over the limit of 10,485,760"):
        read_records(path)


def test_a_bad_size_limit_variable_is_a_one_line_error(tmp_path, monkeypatch, write_jsonl):
    monkeypatch.setenv("TANDEM_MAX_RECORD_BYTES", "10MB")
    with pytest.raises(ValueError, match="TANDEM_MAX_RECORD_BYTES must be a positive whole number of bytes, got '10MB'"):
        read_records(write_jsonl([ROWS[0]]))


def test_one_bad_boolean_cell_keeps_its_column_boolean(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("prompt,completion,label\n" + "".join(f"p{i},c{i},{cell}\n" for i, cell in
                                                         enumerate(["true", "false", "maybe", "TRUE", "false"])))
    labels = [record.data["label"] for record in read_records(path)]
    assert labels == [True, False, "maybe", True, False]


def test_parquet_text_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "bad_text.parquet"
    pq.write_table(pa.table({"prompt": pa.array([b"\xff\xfe"], pa.binary()).view(pa.string())}), path)
    with pytest.raises(DataError, match=r"bad_text\.parquet: cannot read this file as Parquet \(UnicodeDecodeError"):
        read_records(path)
