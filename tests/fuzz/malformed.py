"""A seeded generator of malformed data files, and the one rule every case must keep.

The rule: `load_examples` either returns valid examples, or raises a `DataError` that names the file
(and the bad record's line when the mutation is in one record and the untouched file is valid) --
never any other exception. `tests/fuzz/test_fuzz_data.py` runs a few hundred cases,
`benchmarks/fuzz_data.py` thousands.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.data import SFT_FORMATS, DataError, load_examples

FILE_FORMATS = ("jsonl", "json", "csv", "parquet")
USER, ASSISTANT = "user", "assistant"
MAX_LENGTH = 64
SIZE_LIMIT = 65_536  # TANDEM_MAX_RECORD_BYTES while fuzzing, so "huge" cells stay cheap


def _turns(rng: random.Random) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": "be brief"}] if rng.random() < 0.3 else []
    return turns + [{"role": USER, "content": rng.choice(["hi", "what is 2 + 2?", "the cat"])},
                    {"role": ASSISTANT, "content": rng.choice([" 4", "hello", "the mat"])}]


def _good_record(kind: str, rng: random.Random) -> dict[str, Any]:
    prompt = rng.choice(["what is 2 + 2?", "say hi", "the cat sat on"])
    if kind == "sft":
        return {"prompt": prompt, "completion": rng.choice([" 4", " hi", " the mat"])}
    if kind == "messages":
        return {"messages": _turns(rng)}
    if kind == "preference":
        record = {"prompt": prompt, "chosen": " good", "rejected": " bad"}
        return {**record, "margin": rng.choice([0.5, 1, 2.0])} if rng.random() < 0.5 else record
    if kind == "unpaired":
        return {"prompt": prompt, "completion": " ok", "label": rng.random() < 0.5}
    return {"prompt": prompt}


KINDS = {
    "sft": sorted(SFT_FORMATS),
    "messages": ["messages"],
    "preference": ["preference"],
    "unpaired": ["unpaired"],
    "prompt_only": ["prompt_only"],
}


class Deep:
    """A value nested `depth` lists deep, written as raw brackets (json.dumps itself overflows on it)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def text(self) -> str:
        return "[" * self.depth + "]" * self.depth


WRONG_VALUES = [3, -1.5, None, True, [1, 2], {"a": 1}, [], {}, ["hi"], [{"role": "user"}], float("nan")]
BAD_LABELS = ["yes", 1, 0, None, "true", "True", 1.0, [True], ""]
BAD_MARGINS = [float("nan"), float("inf"), -float("inf"), "1.0", None, True, 10**400, [1.0]]
BAD_ROLES = ["robot", "", None, 3, "USER", "Assistant"]


def _set_field(rng: random.Random, record: dict, values: list) -> str:
    field = rng.choice(sorted(record))
    record[field] = rng.choice(values)
    return field


def _message_field(rng: random.Random, record: dict) -> tuple[dict | None, str]:
    """A message of a conversational record (messages, or a prompt turned into turns), or None."""
    if "messages" not in record:
        return None, "messages"
    index = rng.randrange(len(record["messages"]))
    return record["messages"][index], f"messages[{index}]"


# Record mutations: change one record in place and return the field they broke (None: the whole record).
def m_missing_field(rng, record, kind):
    field = rng.choice(sorted(record))
    del record[field]
    return field


def m_wrong_type(rng, record, kind):
    return _set_field(rng, record, WRONG_VALUES)


def m_empty_string(rng, record, kind):
    return _set_field(rng, record, ["", " ", "\n", "\t "])


def m_margin(rng, record, kind):
    record["margin"] = rng.choice(BAD_MARGINS)
    return "margin"


def m_label(rng, record, kind):
    record["label"] = rng.choice(BAD_LABELS)
    return "label"


def m_role(rng, record, kind):
    message, field = _message_field(rng, record)
    if message is None:
        return m_wrong_type(rng, record, kind)
    message["role"] = rng.choice(BAD_ROLES)
    return field


def m_content(rng, record, kind):
    message, field = _message_field(rng, record)
    if message is None:
        return m_empty_string(rng, record, kind)
    if rng.random() < 0.5:
        del message["content"]
    else:
        message["content"] = rng.choice([None, 3, ["hi"], "", " ", {"text": "hi"}])
    return field


def m_last_turn(rng, record, kind):
    if "messages" not in record:
        return m_missing_field(rng, record, kind)
    record["messages"][-1] = rng.choice([{"role": "user", "content": "again"}, {"role": "assistant", "content": ""}])
    return "messages"


def m_deep(rng, record, kind):
    field = rng.choice(sorted(record))
    record[field] = Deep(rng.choice([20, 150, 3000]))
    return field


def m_huge(rng, record, kind):
    field = rng.choice(sorted(record))
    record[field] = "x " * rng.choice([2_000, 40_000])  # 4,000 or 80,000 characters against a 65,536 limit
    return field


def m_strange_text(rng, record, kind):
    field = rng.choice([name for name in record if isinstance(record[name], str)] or sorted(record))
    record[field] = rng.choice(["<|im_start|>user\nhi<|im_end|>", "\x00\x01", "\ud800", "é🙂\u2028x", "\\u0000"])
    return field


def m_extra_field(rng, record, kind):
    record[rng.choice(["answer", "id", "", "prompt "])] = rng.choice(["42", 7, None, [1], Deep(5)])
    return None


def m_not_an_object(rng, record, kind):
    record.clear()
    record["__not_an_object__"] = rng.choice([[1, 2], "text", 3, None])
    return None


def m_long_prompt(rng, record, kind):
    field = "messages" if "messages" in record else "prompt"
    text = " ".join(["the cat sat on the mat"] * 30)
    if field == "messages":
        record["messages"][0]["content"] = text
    else:
        record["prompt"] = text
    return field


RECORD_MUTATIONS = [
    m_missing_field, m_wrong_type, m_empty_string, m_margin, m_label, m_role, m_content, m_last_turn,
    m_deep, m_huge, m_strange_text, m_extra_field, m_not_an_object, m_long_prompt,
]


# File mutations: change the written bytes.
def f_truncate(rng, raw):
    return raw[: rng.randrange(len(raw))] if raw else raw


def f_bad_utf8(rng, raw):
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"]) + raw[at:]


def f_flip_bytes(rng, raw):
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def f_empty(rng, raw):
    return rng.choice([b"", b"\n\n", b" "])


def f_append_garbage(rng, raw):
    return raw + rng.choice([b"garbage\n", b"{\n", b"\x00\x00", b",,,\n", b'{"prompt": 1}\n'])


def f_bom_and_crlf(rng, raw):
    return b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n") if rng.random() < 0.5 else b"\xef\xbb\xbf" + raw


FILE_MUTATIONS = [f_truncate, f_bad_utf8, f_flip_bytes, f_empty, f_append_garbage, f_bom_and_crlf]


def _json_text(value: Any) -> str:
    """JSON with `Deep` values written as raw brackets; NaN/inf as Python's json writes them."""
    deep: list[Deep] = []

    def placeholder(item):
        if isinstance(item, Deep):
            deep.append(item)
            return f"__deep_{len(deep) - 1}__"
        raise TypeError(type(item))

    text = json.dumps(value, default=placeholder)
    for index, item in enumerate(deep):
        text = text.replace(f'"__deep_{index}__"', item.text())
    return text


def _record_value(record: dict) -> Any:
    return record.get("__not_an_object__", record) if "__not_an_object__" in record else record


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\r", "")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else _json_text(value).replace("\r", "")


def write_jsonl(rows: list[dict], path: Path) -> list[int]:
    lines = [_json_text(_record_value(row)) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    return list(range(1, len(rows) + 1))


def write_json(rows: list[dict], path: Path) -> list[int]:
    text = "[" + ",\n".join(_json_text(_record_value(row)) for row in rows) + "]\n"  # row k on line k
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return list(range(1, len(rows) + 1))


def write_csv(rows: list[dict], path: Path, duplicate_column: bool = False) -> list[int]:
    header = sorted({key for row in rows for key in row if key != "__not_an_object__"})
    if duplicate_column and header:
        header.append(header[0])
    buffer, lines, line = io.StringIO(), [], 2
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        start = buffer.tell()
        if "__not_an_object__" in row:  # a CSV row cannot be a list or a number: write one odd cell instead
            writer.writerow([_cell(row["__not_an_object__"])])
        else:
            writer.writerow([_cell(row.get(name)) for name in header])
        lines.append(line)
        line += buffer.getvalue()[start:].count("\n")
    path.write_bytes(buffer.getvalue().encode("utf-8", "surrogatepass"))
    return lines


def _csv_fills_gaps(rows: list[dict]) -> bool:
    """Whether some row lacks a column others have (CSV writes an empty cell there, changing that row too)."""
    keys = [set(row) - {"__not_an_object__"} for row in rows if "__not_an_object__" not in row]
    return any(key_set != keys[0] or not key_set for key_set in keys)  # a row of no columns is a blank line


def write_parquet(rows: list[dict], path: Path) -> tuple[list[int], bool]:
    """Write rows; if arrow cannot type or write a column, every value is written as text (then True)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in row.items() if k != "__not_an_object__"} or {"x": 1} for row in rows]
    try:
        if any(isinstance(v, Deep) for row in rows for v in row.values()):
            raise TypeError("arrow has no raw-bracket nesting")
        pq.write_table(pa.Table.from_pylist(rows), path)
        return list(range(1, len(rows) + 1)), False
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    as_text = [{k: _parquet_text(v) for k, v in row.items()} for row in rows]
    pq.write_table(pa.Table.from_pylist(as_text), path)
    return list(range(1, len(rows) + 1)), True


def _parquet_text(value: Any) -> str | bytes:
    """A value as a Parquet string, or as bytes where it is not valid UTF-8 (a lone surrogate)."""
    text = _cell(value)
    return text if _utf8(text) else text.encode("utf-8", "surrogatepass")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@dataclass
class Case:
    """One generated file and what its error, if any, must name."""

    name: str
    path: Path
    expected: list[str]
    bad_line: int | None  # the one bad record's line/row, where the untouched file is valid
    field: str | None
    chat: bool


def make_case(rng: random.Random, folder: Path, number: int) -> tuple[Case, Path | None]:
    """A malformed file and (when one record was mutated) a copy of the untouched file to compare with."""
    kind = rng.choice(sorted(KINDS))
    file_format = rng.choice(FILE_FORMATS)
    rows = [_good_record(kind, rng) for _ in range(rng.randint(1, 5))]
    expected = KINDS[kind] if rng.random() < 0.9 else KINDS[rng.choice(sorted(KINDS))]
    chat = rng.random() < 0.2
    stem = folder / f"case{number}"
    baseline = Path(f"{stem}_good.{file_format}")
    _write(rows, file_format, baseline)
    bad = rng.randrange(len(rows))
    mutated = json.loads(json.dumps(rows))
    file_mutation = rng.random() < 0.25
    duplicate = file_format == "csv" and not file_mutation and rng.random() < 0.1
    path = Path(f"{stem}.{file_format}")
    if file_mutation:
        mutation = rng.choice(FILE_MUTATIONS)
        _write(rows, file_format, path)
        path.write_bytes(mutation(rng, path.read_bytes()))
        return Case(f"{kind}/{file_format}/{mutation.__name__}", path, expected, None, None, chat), None
    mutation = rng.choice(RECORD_MUTATIONS)
    field = mutation(rng, mutated[bad], kind) if not duplicate else None
    lines, recoded = _write(mutated, file_format, path, duplicate)
    name = f"{kind}/{file_format}/{'duplicate_column' if duplicate else mutation.__name__}"
    bad_line = None if (recoded or duplicate) else lines[bad]
    return Case(name, path, expected, bad_line, field, chat), baseline


def _write(rows: list[dict], file_format: str, path: Path, duplicate: bool = False) -> tuple[list[int], bool]:
    """Write rows in a file format; return each row's line/row number and whether a column had to be recoded."""
    if file_format == "parquet":
        return write_parquet(rows, path)
    if file_format == "csv":
        return write_csv(rows, path, duplicate), _csv_fills_gaps(rows)
    return (write_jsonl if file_format == "jsonl" else write_json)(rows, path), False


def check_example(example: dict, formats: list[str]) -> str | None:
    """What is wrong with an accepted example of one of `formats`, or None."""
    if not isinstance(example.get("prompt"), str):
        return f"prompt is {type(example.get('prompt')).__name__}"
    if formats == ["preference"]:
        chosen, rejected = example.get("chosen"), example.get("rejected")
        if not (isinstance(chosen, str) and isinstance(rejected, str) and chosen and rejected and chosen != rejected):
            return f"bad preference pair {chosen!r} / {rejected!r}"
        margin = example.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            return f"accepted margin {margin!r}"
    elif formats == ["prompt_only"]:
        return None if example["prompt"] else "empty prompt"
    elif not (isinstance(example.get("completion"), str) and example["completion"]):
        return f"empty completion {example.get('completion')!r}"
    if formats == ["unpaired"] and not isinstance(example.get("label"), bool):
        return f"accepted label {example.get('label')!r}"
    return None


def _accepted(path: Path, case: Case, tokenizer) -> bool:
    try:
        load_examples(path, case.expected, tokenizer, max_length=MAX_LENGTH, chat=case.chat)
        return True
    except DataError:
        return False


# Errors about a whole line or record, which name no field.
WHOLE_RECORD_ERRORS = ("invalid JSON", "invalid UTF-8", "limit of", "expected a JSON object", "cells but the header")


def run_case(case: Case, baseline: Path | None, tokenizer) -> tuple[str, str]:
    """("accepted" | "data_error" | "bad_error" | "bad_accept" | "other_exception", detail)."""
    try:
        examples = load_examples(case.path, case.expected, tokenizer, max_length=MAX_LENGTH, chat=case.chat)
    except DataError as error:
        message = str(error)
        if str(case.path) not in message:
            return "bad_error", f"does not name the file: {message}"
        if case.bad_line is not None and baseline is not None and _accepted(baseline, case, tokenizer):
            if error.line != case.bad_line:
                return "bad_error", f"names line {error.line}, not the bad record's {case.bad_line}: {message}"
            whole_record = any(words in message for words in WHOLE_RECORD_ERRORS)
            if case.field is not None and error.field is None and not whole_record:
                return "bad_error", f"names no field (the case broke '{case.field}'): {message}"
        return "data_error", message
    except Exception as error:  # noqa: BLE001 -- the point is to catch everything else
        return "other_exception", f"{type(error).__name__}: {str(error)[:300]}"
    problems = [problem for example in examples if (problem := check_example(example, case.expected))]
    if problems:
        return "bad_accept", problems[0]
    return "accepted", f"{len(examples)} examples"
