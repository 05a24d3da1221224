"""Errors raised for bad input data: each names the file, the column, the first offending row and what was expected."""
from __future__ import annotations


class DataError(ValueError):
    """Input data does not match the schema.

    ``file``, ``column`` and ``row`` (0-based data row within that file, header excluded) locate the
    first offending value where that applies; the message says what was expected.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None, row: int | None = None):
        self.file, self.column, self.row, self.detail = file, column, row, message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DataWarning(UserWarning):
    """Something in the data is suspicious but training can go on (e.g. an unused column)."""
