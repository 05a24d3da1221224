"""Score requests: parse a body into a polars frame of raw values with the training split's column types.

Three JSON forms and one binary form are accepted (see docs/serving.md):

- rows: ``{"rows": [{column: value, ...}, ...]}``
- columns: ``{"columns": {column: [value, ...], ...}}``
- ranking: ``{"context": {column: value, ...}, "candidates": [{column: value, ...}, ...]}``: the context's
  values apply to every candidate; a column may not be given in both;
- an Arrow IPC stream (content type ``application/vnd.apache.arrow.stream``).

Every problem raises :class:`RequestError` naming its kind, the field and the row (candidate) it was found in.
Columns the model does not read are ignored and listed in the response (``ignored_fields``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from ..data.encoder import Encoder
from ..data.validate import required_columns

ARROW_TYPE = "application/vnd.apache.arrow.stream"
_MISSING = object()


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` with a JSON body naming ``kind``, ``field`` and ``row``."""

    def __init__(self, kind: str, message: str, field: str | None = None, row: int | None = None, status: int = 400):
        super().__init__(message)
        self.kind, self.message, self.field, self.row, self.status = kind, message, field, row, status

    def body(self) -> dict:
        return {"error": {"kind": self.kind, "message": self.message, "field": self.field, "row": self.row}}


@dataclass(frozen=True)
class InputField:
    """One column a score request must carry. ``kind``: int, float, str, bool, datetime (an ISO string) or any
    (an integer or a string, for encoders saved before column types were recorded); ``dtype``: the polars type
    the column is built with; ``nullable``: whether null (JSON null) is allowed (sparse ids: null is the
    out-of-vocabulary row, as in training)."""

    name: str
    kind: str
    dtype: pl.DataType
    nullable: bool
    use: str


def _kind(dtype: str) -> tuple[str, pl.DataType]:
    if dtype.startswith(("Int", "UInt")):
        return "int", pl.UInt64() if dtype == "UInt64" else pl.Int64()
    if dtype.startswith("Float"):
        return "float", pl.Float64()
    if dtype in ("String", "Utf8", "Categorical") or dtype.startswith("Enum"):
        return "str", pl.String()
    if dtype == "Boolean":
        return "bool", pl.Boolean()
    if dtype.startswith(("Datetime", "Date")):
        return "datetime", pl.Datetime("us")
    return "any", pl.String()


def _known_dtype(encoder: Encoder, column: str) -> str | None:
    """The training dtype of ``column``: recorded at fit, else read off a vocabulary or statistics table."""
    if column in encoder.input_dtypes:
        return encoder.input_dtypes[column]
    for f in encoder.schema.features:
        if f.source == column and f.name in encoder.vocabs:
            return str(encoder.vocabs[f.name].dtype)
    for s in encoder.schema.stats:
        if column in s.keys and s.name in encoder.past.tables:
            return str(encoder.past.tables[s.name].schema[column])
    return None


def input_fields(encoder: Encoder) -> list[InputField]:
    """The columns a request must carry, in a fixed order, with their types (from the training split)."""
    schema = encoder.schema
    strict = {schema.domain, schema.user, *([schema.time] if schema.time else []),
              *(f.source for f in schema.features if f.kind == "dense")}
    numeric = {f.source for f in schema.features if f.kind == "dense"} | ({schema.time} if schema.time else set())
    out = []
    for col, use in required_columns(schema, labels=False).items():
        known = _known_dtype(encoder, col)
        kind, dtype = _kind(known) if known else (("float", pl.Float64()) if col in numeric else ("any", pl.String()))
        if col == schema.time and kind == "float" and known is None:
            kind, dtype = "int", pl.Int64()  # unix seconds
        out.append(InputField(col, kind, dtype, col not in strict, use))
    return out


_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "datetime": "an ISO date-time string", "any": "an integer or a string"}


def _check(field: InputField, values: list, rows: range | None = None) -> list:
    """``values`` if every one fits ``field`` (``rows``: the row number of each, default 0..n-1); else RequestError."""
    kind = field.kind
    for i, v in enumerate(values):
        t = type(v)
        if v is None:
            if field.nullable:
                continue
            raise RequestError("null_value", f"null is not allowed for {field.name!r} ({field.use}); expected "
                               f"{_EXPECTED[kind]}", field.name, rows[i] if rows else i)
        if kind == "float" and (t is float or t is int):
            if t is float and not math.isfinite(v):
                raise RequestError("not_finite", f"{v} is not a finite number ({field.use})", field.name,
                                   rows[i] if rows else i)
            continue
        if (t is int and kind in ("int", "any")) or (t is str and kind in ("str", "any", "datetime")) \
                or (t is bool and kind == "bool"):
            continue
        if t is float and kind in ("int", "str", "any") and not math.isfinite(v):
            raise RequestError("not_finite", f"{v} is not allowed ({field.use}); expected {_EXPECTED[kind]}",
                               field.name, rows[i] if rows else i)
        raise RequestError("wrong_type", f"{v!r} ({type(v).__name__}) for {field.name!r} ({field.use}); expected "
                           f"{_EXPECTED[kind]}", field.name, rows[i] if rows else i)
    return values


def _series(field: InputField, values: list) -> pl.Series:
    try:
        if field.kind == "datetime":
            return pl.Series(field.name, values, dtype=pl.String).str.to_datetime(time_unit="us")
        return pl.Series(field.name, values, dtype=field.dtype, strict=True)
    except (pl.exceptions.PolarsError, OverflowError, TypeError, ValueError) as exc:
        raise RequestError("wrong_type", f"values of {field.name!r} cannot be read as {_EXPECTED[field.kind]}: "
                           f"{str(exc).splitlines()[0]}", field.name) from None


def _limit(n: int, what: str, max_rows: int) -> None:
    if n == 0:
        raise RequestError("empty", f"{what} is empty; expected at least one row", what)
    if n > max_rows:
        raise RequestError("batch_too_large", f"{n} rows in {what}; this server takes at most {max_rows} rows per "
                           "request (--max-batch-rows)", what, status=413)


def _dicts(items: Any, what: str) -> list[dict]:
    if not isinstance(items, list):
        raise RequestError("wrong_type", f"{what!r} must be a list of objects", what)
    for i, r in enumerate(items):
        if type(r) is not dict:
            raise RequestError("wrong_type", f"{what}[{i}] is {type(r).__name__}; expected an object "
                               "{column: value}", what, i)
    return items


def _from_rows(rows: list[dict], fields: list[InputField], context: dict | None = None) -> pl.DataFrame:
    what = "rows" if context is None else "candidates"
    context = context or {}
    cols = {}
    for f in fields:
        if f.name in context:
            try:
                cols[f.name] = _series(f, _check(f, [context[f.name]]))
            except RequestError as exc:
                exc.row, exc.message = None, f"{exc.message} (in the context)"
                raise
            continue
        values = [r.get(f.name, _MISSING) for r in rows]
        if _MISSING in values:
            i = next(i for i, v in enumerate(values) if v is _MISSING)
            where = "context or candidate" if what == "candidates" else "row"
            raise RequestError("missing_field", f"{what}[{i}] has no {f.name!r} ({f.use}); every {where} needs it",
                               f.name, i)
        cols[f.name] = _series(f, _check(f, values))
    n = len(rows)
    for f in fields:
        if f.name in context:
            if any(f.name in r for r in rows):
                i = next(i for i, r in enumerate(rows) if f.name in r)
                raise RequestError("ambiguous_field", f"{f.name!r} is given in the context and in candidates[{i}]; "
                                   "give it in one place", f.name, i)
            cols[f.name] = cols[f.name].new_from_index(0, n)  # the context's value on every candidate (no query)
    return pl.DataFrame(cols)


def _from_columns(columns: Any, fields: list[InputField], max_rows: int) -> pl.DataFrame:
    if type(columns) is not dict:
        raise RequestError("wrong_type", "'columns' must be an object {column: [values]}", "columns")
    n = None
    cols = {}
    for f in fields:
        if f.name not in columns:
            raise RequestError("missing_field", f"no column {f.name!r} ({f.use})", f.name)
        values = columns[f.name]
        if type(values) is not list:
            raise RequestError("wrong_type", f"column {f.name!r} must be a list of values", f.name)
        if n is None:
            n = len(values)
            _limit(n, "columns", max_rows)
        elif len(values) != n:
            raise RequestError("length_mismatch", f"column {f.name!r} has {len(values)} values; the others have {n}",
                               f.name)
        cols[f.name] = _series(f, _check(f, values))
    return pl.DataFrame(cols)


def _from_arrow(body: bytes, fields: list[InputField], max_rows: int) -> tuple[pl.DataFrame, list[str]]:
    import pyarrow as pa  # type: ignore[import-untyped]

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise RequestError("bad_body", f"the body is not an Arrow IPC stream: {exc}") from None
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    _limit(df.height, "rows", max_rows)
    cols = {}
    for f in fields:
        if f.name not in df.columns:
            raise RequestError("missing_field", f"no column {f.name!r} ({f.use})", f.name)
        s = df[f.name]
        ok = {"int": s.dtype.is_integer(), "float": s.dtype.is_numeric(), "str": s.dtype == pl.String,
              "bool": s.dtype == pl.Boolean, "datetime": s.dtype.is_temporal() or s.dtype == pl.String,
              "any": s.dtype.is_integer() or s.dtype == pl.String}[f.kind]
        if not ok:
            raise RequestError("wrong_type", f"column {f.name!r} has type {s.dtype}; expected {_EXPECTED[f.kind]}",
                               f.name)
        if not f.nullable and s.null_count():
            raise RequestError("null_value", f"null is not allowed for {f.name!r} ({f.use})", f.name,
                               int(s.is_null().arg_true()[0]))
        if s.dtype.is_float():
            bad = ~s.is_finite()
            if bad.any():
                raise RequestError("not_finite", f"{f.name!r} holds NaN or infinity ({f.use})", f.name,
                                   int(bad.arg_true()[0]))
        cols[f.name] = s.cast(pl.Datetime("us")) if f.kind == "datetime" and s.dtype.is_temporal() else \
            (_series(f, s.to_list()) if f.kind == "datetime" else s.cast(f.dtype, strict=True))
    return pl.DataFrame(cols), [c for c in df.columns if c not in cols]


def parse(body: bytes, content_type: str, fields: list[InputField], max_rows: int) -> tuple[pl.DataFrame, list[str]]:
    """A request body -> (frame of the model's columns with the training types, ignored column names)."""
    if content_type.split(";")[0].strip().lower() == ARROW_TYPE:
        return _from_arrow(body, fields, max_rows)
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError("bad_json", f"the body is not JSON: {exc}") from None
    if type(doc) is not dict:
        raise RequestError("wrong_type", "the body must be a JSON object with 'rows', 'columns' or 'context' + "
                           "'candidates'")
    names = {f.name for f in fields}
    if "candidates" in doc or "context" in doc:
        context = doc.get("context", {})
        if type(context) is not dict:
            raise RequestError("wrong_type", "'context' must be an object {column: value}", "context")
        rows = _dicts(doc.get("candidates"), "candidates")
        _limit(len(rows), "candidates", max_rows)
        seen = set(context).union(*rows)
        return _from_rows(rows, fields, context), sorted(seen - names)
    if "rows" in doc:
        rows = _dicts(doc["rows"], "rows")
        _limit(len(rows), "rows", max_rows)
        return _from_rows(rows, fields), sorted(set().union(*rows) - names)
    if "columns" in doc:
        return _from_columns(doc["columns"], fields, max_rows), sorted(set(doc["columns"]) - names)
    raise RequestError("bad_body", "expected a JSON object with 'rows', 'columns' or 'context' + 'candidates'; "
                       f"found keys {sorted(doc)}")
