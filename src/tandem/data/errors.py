"""The one error type for bad training data: it names the file, the line (or row) and the field at fault."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with a user's data, found before training starts.

    `str()` reads like ``data.jsonl, line 7, field 'chosen': expected a string or a list of messages, got int``.

    Attributes:
        message: what is wrong, without the location.
        path: the file (or data source name) the record came from.
        line: 1-based line of a JSONL/CSV file, or 1-based row of a Parquet/JSON/`datasets` source.
        field: the record field at fault (``messages[2].role`` for a field inside a list).
        unit: the word for `line` in messages: ``"line"`` for line-oriented files, ``"row"`` otherwise.
        failed_records: when several records failed validation, how many (this error is the first of them).
        total_records: how many records were validated.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
        failed_records: int | None = None,
        total_records: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        self.unit = unit
        self.failed_records = failed_records
        self.total_records = total_records
        super().__init__(str(self))

    def __str__(self) -> str:
        location = []
        if self.path is not None:
            location.append(str(self.path))
        if self.line is not None:
            location.append(f"{self.unit} {self.line}")
        if self.field is not None:
            location.append(f"field '{self.field}'")
        text = f"{', '.join(location)}: {self.message}" if location else self.message
        if self.failed_records is not None and self.failed_records > 1:
            text += f" ({self.failed_records} of {self.total_records} records failed validation; this is the first)"
        return text

    def _keywords(self) -> dict:
        """Every field but the message, as the constructor's keyword arguments."""
        return {name: getattr(self, name) for name in ("path", "line", "field", "unit", "failed_records", "total_records")}

    def __reduce__(self):
        # Keep the fields when the error crosses a process boundary (pickling only passes `args` by default).
        return _rebuild_data_error, (self.message, self._keywords())

    def with_failure_count(self, failed_records: int, total_records: int) -> DataError:
        """A copy of this error that also says how many records failed in total."""
        return DataError(self.message, **{**self._keywords(), "failed_records": failed_records,
                                          "total_records": total_records})


def _rebuild_data_error(message: str, keywords: dict) -> DataError:
    return DataError(message, **keywords)


def type_name(value: object) -> str:
    """The JSON-ish name of a value's type for error messages (``null`` rather than ``NoneType``)."""
    return "null" if value is None else type(value).__name__
