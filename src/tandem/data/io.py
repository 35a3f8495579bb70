"""Read the files users already have into `Record`s: JSONL, JSON, Parquet, CSV and `datasets.save_to_disk` folders.

Every record keeps where it came from (file and 1-based line or row), so that validation can point at
the exact place of a problem before any training starts. Whatever is wrong with a file (bad UTF-8, bad
JSON, a corrupt Parquet file, nesting too deep, a record too large, no records at all) is a `DataError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.data.errors import DataError, type_name

# The largest record: a JSONL/CSV line in bytes, or the text of any record in characters. A record far over
# this is almost surely a broken file (a 30 MB line takes minutes to reject once it reaches the tokenizer).
MAX_RECORD_BYTES = 10 * 2**20
MAX_RECORD_BYTES_VARIABLE = "TANDEM_MAX_RECORD_BYTES"
# Deeper nesting than this is no training data, and it overflows the stack of recursive code downstream.
MAX_NESTING = 100


def max_record_bytes() -> int:
    """`MAX_RECORD_BYTES`, or the environment variable TANDEM_MAX_RECORD_BYTES when it is set."""
    value = os.environ.get(MAX_RECORD_BYTES_VARIABLE)
    if value is None:
        return MAX_RECORD_BYTES
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"{MAX_RECORD_BYTES_VARIABLE} must be a positive whole number of bytes, got {value!r}")
    return int(value)


def _too_large(what: str, size: int, noun: str, path: str, line: int, unit: str) -> DataError:
    limit = max_record_bytes()
    message = f"{what} is {size:,} {noun}, over the limit of {limit:,} ({MAX_RECORD_BYTES_VARIABLE} raises it)"
    return DataError(message, path=path, line=line, unit=unit)


@dataclass(frozen=True)
class Record:
    """One raw record and where it came from.

    `line` is the 1-based line in a JSONL/CSV file, or the 1-based row of a JSON list, Parquet file,
    `datasets` folder or in-memory list; `unit` says which (``"line"`` or ``"row"``).
    """

    data: dict[str, Any]
    path: str
    line: int
    unit: str = "line"

    def error(self, message: str, field: str | None = None) -> DataError:
        """A `DataError` located at this record."""
        return DataError(message, path=self.path, line=self.line, field=field, unit=self.unit)


def _check_text(field: str, value: Any, record: Record) -> int:
    """The characters of text in one field's value; raise if it nests too deeply or holds text that is not Unicode."""
    size, stack = 0, [(value, 1)]
    while stack:  # iterative: a recursive walk would itself overflow on deep nesting
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise record.error(f"nested deeper than {MAX_NESTING} levels", field)
        if isinstance(item, str):
            size += len(item)
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate such as "\ud800" from a JSON escape
                    raise record.error("text holds an invalid Unicode escape (a lone surrogate)", field) from None
        elif isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return size


def _checked(record: Record) -> Record:
    """The record, once its text is known to be valid Unicode, not too deep and not too large."""
    size = sum(_check_text(field, value, record) for field, value in record.data.items())
    if size > max_record_bytes():
        raise _too_large("the record's text", size, "characters", record.path, record.line, record.unit)
    return record


def _expect_object(value: Any, path: str, line: int, unit: str) -> Record:
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type_name(value)}", path=path, line=line, unit=unit)
    return _checked(Record(value, path, line, unit))


def _decode(raw: bytes, label: str, line: int | None = None) -> str:
    """UTF-8 text (a leading byte-order mark dropped); bad bytes are a DataError at their line and byte offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        where = line if line is not None else raw.count(b"\n", 0, error.start) + 1
        offset = f"byte {error.start}" + (" of the line" if line is not None else " of the file")
        message = f"invalid UTF-8 at {offset} ({raw[error.start:error.start + 4]!r}); save the file as UTF-8"
        raise DataError(message, path=label, line=where) from None


def _parse_json(text: str, label: str, line: int | None) -> Any:
    """`json.loads`, with every way it fails (bad syntax, huge integers, deep nesting) a DataError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = line if line is not None else error.lineno
        raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", path=label, line=where) from None
    except ValueError as error:  # integers of over 4,300 digits; the advice after ';' is for Python code
        raise DataError(f"invalid JSON: {str(error).split(';')[0]}", path=label, line=line) from None
    except RecursionError:
        where = line if line is not None else _first_line_deeper_than(text, MAX_NESTING)
        raise DataError(f"invalid JSON: nested deeper than {MAX_NESTING} levels", path=label, line=where) from None


def _first_line_deeper_than(text: str, limit: int) -> int | None:
    """The line where JSON brackets (outside strings) first nest deeper than `limit`."""
    depth, line, in_string, escaped = 0, 1, False, False
    for char in text:
        if char == "\n":
            line += 1
        elif in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth -= 1
    return None


def _read_jsonl(path: Path, label: str) -> list[Record]:
    records, limit = [], max_record_bytes()
    with open(path, "rb") as file:
        for line_number, raw in enumerate(file, start=1):
            if len(raw) > limit:  # checked before decoding or parsing, so a huge line fails at once
                raise _too_large("the line", len(raw), "bytes", label, line_number, "line")
            line = _decode(raw, label, line_number)
            if not line.strip():
                continue  # blank lines are skipped but still counted, so line numbers match an editor's
            records.append(_expect_object(_parse_json(line, label, line_number), label, line_number, "line"))
    return records


def _read_json(path: Path, label: str) -> list[Record]:
    text = _decode(path.read_bytes(), label)
    if not text.strip():
        return []
    value = _parse_json(text, label, None)
    if not isinstance(value, list):
        raise DataError(f"expected a JSON list of objects at the top level, got {type_name(value)}", path=label)
    return [_expect_object(item, label, row, "row") for row, item in enumerate(value, start=1)]


def _read_parquet(path: Path, label: str) -> list[Record]:
    import pyarrow
    import pyarrow.parquet as parquet

    try:
        rows = parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError, UnicodeDecodeError) as error:  # the last: a text column is not UTF-8
        raise DataError(f"cannot read this file as Parquet ({type(error).__name__}: {error})", path=label) from None
    return [_checked(Record(row, label, number, "row")) for number, row in enumerate(rows, start=1)]


_BOOLEAN_CELLS = {"true": True, "false": False}


def _csv_rows(text: str, label: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (first line, cells) of every non-blank row; a cell over the size limit is a DataError."""
    csv.field_size_limit(max_record_bytes())  # the default, 131,072 characters, is too small for long documents
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    header, next_line = None, 1
    try:
        for cells in reader:
            start_line, next_line = next_line, reader.line_num + 1  # a quoted cell may span several lines
            if header is None:
                header = cells
            elif cells:
                rows.append((start_line, cells))
    except csv.Error as error:
        raise DataError(_csv_error_message(error), path=label, line=next_line) from None
    return header or [], rows


def _csv_error_message(error: csv.Error) -> str:
    if "field limit" in str(error):
        limit = csv.field_size_limit()
        return f"a cell is longer than the limit of {limit:,} characters ({MAX_RECORD_BYTES_VARIABLE} raises it)"
    return f"invalid CSV: {error}"


def _check_header(header: list[str], label: str) -> None:
    seen = set()
    for name in header:
        if name in seen:
            message = "this column appears twice in the header (the second would silently replace the first)"
            raise DataError(message, path=label, line=1, field=name)
        seen.add(name)


def _read_csv(path: Path, label: str) -> list[Record]:
    """CSV cells stay strings exactly as written, except in columns where at least half the cells are
    true/false: those cells become booleans, and the others stay strings, so validation names the odd line."""
    header, rows = _csv_rows(_decode(path.read_bytes(), label), label)
    _check_header(header, label)
    for start_line, cells in rows:
        if len(cells) != len(header):
            message = f"row has {len(cells)} cells but the header has {len(header)} columns"
            raise DataError(message, path=label, line=start_line)
    boolean_columns = {
        index for index in range(len(header))
        if rows and 2 * sum(cells[index].lower() in _BOOLEAN_CELLS for _, cells in rows) >= len(rows)
    }
    records = []
    for start_line, cells in rows:
        data = {
            name: _BOOLEAN_CELLS.get(cell.lower(), cell) if index in boolean_columns else cell
            for index, (name, cell) in enumerate(zip(header, cells))
        }
        records.append(_checked(Record(data, label, start_line, "line")))
    return records


def _read_saved_dataset(path: Path, label: str, split: str) -> list[Record]:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (pick `split` from the latter)."""
    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        message = "this folder is not a dataset saved with `datasets` save_to_disk (no dataset_dict.json or state.json)"
        raise DataError(message, path=label)
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            available = ", ".join(sorted(loaded.keys()))
            raise DataError(f"split '{split}' not found; available splits: {available}", path=label)
        loaded, label = loaded[split], f"{label}[{split}]"
    return [_checked(Record(row, label, number, "row")) for number, row in enumerate(loaded.to_list(), start=1)]


FileReader = Callable[[Path, str], list[Record]]

# Readers by file suffix; a directory is read as a `datasets` folder.
FILE_READERS: dict[str, FileReader] = {
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".csv": _read_csv,
}


def read_records(path: str | os.PathLike, split: str = "train") -> list[Record]:
    """Read every record of a data file or a `datasets` folder, each tagged with its file and line/row.

    Args:
        path: a ``.jsonl``, ``.json`` (a list of objects), ``.parquet`` or ``.csv`` file, or a folder
            written by `datasets.Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
        split: which split to read from a `DatasetDict` folder (ignored otherwise).

    Raises:
        DataError: the path does not exist, its type is not supported, its content cannot be parsed,
            or it holds no records.
    """
    label = os.fspath(path)
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", path=label)
    if path.is_dir():
        records = _read_saved_dataset(path, label, split)
    elif path.suffix.lower() in FILE_READERS:
        records = FILE_READERS[path.suffix.lower()](path, label)
    else:
        supported = ", ".join(FILE_READERS)
        message = f"unsupported file type '{path.suffix}'; supported: {supported}, or a folder saved by `datasets`"
        raise DataError(message, path=label)
    if not records:
        raise DataError("no records (the file is empty or holds only a header or blank lines)", path=label)
    return records


def records_from_dicts(rows: Iterable[dict[str, Any]], source: str = "<memory>") -> list[Record]:
    """Wrap in-memory rows (for example a built-in task's data) as `Record`s named `source`, numbered by row."""
    return [_expect_object(row, source, number, "row") for number, row in enumerate(rows, start=1)]
