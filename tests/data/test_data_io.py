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
