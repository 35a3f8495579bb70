"""Read the files users already have into `Record`s: JSONL, JSON, Parquet, CSV and `datasets.save_to_disk` folders.

Every record keeps where it came from (file and 1-based line or row), so that validation can point at
the exact place of a problem before any training starts.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.data.errors import DataError, type_name


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


def _expect_object(value: Any, path: str, line: int, unit: str) -> Record:
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type_name(value)}", path=path, line=line, unit=unit)
    return Record(value, path, line, unit)


def _read_jsonl(path: Path, label: str) -> list[Record]:
    records = []
    with open(path, encoding="utf-8-sig") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue  # blank lines are skipped but still counted, so line numbers match an editor's
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", path=label, line=line_number) from None
            records.append(_expect_object(value, label, line_number, "line"))
    return records


def _read_json(path: Path, label: str) -> list[Record]:
    try:
        with open(path, encoding="utf-8-sig") as file:
            value = json.load(file)
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", path=label, line=error.lineno) from None
    if not isinstance(value, list):
        raise DataError(f"expected a JSON list of objects at the top level, got {type_name(value)}", path=label)
    return [_expect_object(item, label, row, "row") for row, item in enumerate(value, start=1)]


def _read_parquet(path: Path, label: str) -> list[Record]:
    import pyarrow.parquet as parquet

    rows = parquet.read_table(path).to_pylist()
    return [Record(row, label, number, "row") for number, row in enumerate(rows, start=1)]


_BOOLEAN_CELLS = {"true": True, "false": False}


def _read_csv(path: Path, label: str) -> list[Record]:
    """CSV cells stay strings exactly as written, except columns whose every cell is true/false, which become booleans."""
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            return []
        rows: list[tuple[int, list[str]]] = []
        next_line = reader.line_num + 1
        for cells in reader:
            start_line, next_line = next_line, reader.line_num + 1  # a quoted cell may span several lines
            if not cells:
                continue
            if len(cells) != len(header):
                message = f"row has {len(cells)} cells but the header has {len(header)} columns"
                raise DataError(message, path=label, line=start_line)
            rows.append((start_line, cells))
    boolean_columns = {
        index for index in range(len(header)) if rows and all(cells[index].lower() in _BOOLEAN_CELLS for _, cells in rows)
    }
    records = []
    for start_line, cells in rows:
        data = {
            name: _BOOLEAN_CELLS[cell.lower()] if index in boolean_columns else cell
            for index, (name, cell) in enumerate(zip(header, cells))
        }
        records.append(Record(data, label, start_line, "line"))
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
    return [Record(row, label, number, "row") for number, row in enumerate(loaded.to_list(), start=1)]


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
        DataError: the path does not exist, its type is not supported, or its content cannot be parsed.
    """
    label = os.fspath(path)
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", path=label)
    if path.is_dir():
        return _read_saved_dataset(path, label, split)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(FILE_READERS)
        message = f"unsupported file type '{path.suffix}'; supported: {supported}, or a folder saved by `datasets`"
        raise DataError(message, path=label)
    return reader(path, label)


def records_from_dicts(rows: Iterable[dict[str, Any]], source: str = "<memory>") -> list[Record]:
    """Wrap in-memory rows (for example a built-in task's data) as `Record`s named `source`, numbered by row."""
    return [_expect_object(row, source, number, "row") for number, row in enumerate(rows, start=1)]
