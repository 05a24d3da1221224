"""Check a frame against the schema before anything is trained; derive the label matrix.

Each problem raises one DataError naming the file, the column, the first offending row and what was
expected. Nothing is dropped or coerced silently.
"""
from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl

from ..config import LabelSpec, SchemaConfig
from ..errors import DataError, DataWarning
from .sources import PROVENANCE, Frame

F32_MAX = float(np.finfo(np.float32).max)


def required_columns(schema: SchemaConfig, labels: bool = True) -> dict[str, str]:
    """Column name -> what it is used for, for every column the schema reads (``labels=False``: for scoring
    new rows, which need no label or statistics-target columns)."""
    need: dict[str, str] = {schema.domain: "domain", schema.user: "user key"}
    if schema.time:
        need[schema.time] = "time"
    for task, spec in (schema.labels.items() if labels else ()):
        need.setdefault(spec.column, f"label of task {task!r}")
    for f in schema.features:
        need.setdefault(f.source, f"{f.kind} feature {f.name!r}")
    for s in schema.stats:
        for k in s.keys:
            need.setdefault(k, f"key of stat feature {s.name!r}")
        if labels and s.stat == "mean" and s.target not in schema.labels:
            need.setdefault(s.target or "", f"target of stat feature {s.name!r}")
    return need


def _locate(frame: Frame, mask: pl.Series) -> tuple[str | None, int | None]:
    hit = frame.first_bad(mask)
    return hit if hit else (None, None)


def _refuse(frame: Frame, mask: pl.Series, column: str, message: str) -> None:
    """Raise DataError(message) naming the file and row of the first row where ``mask`` holds, if any."""
    file, row = _locate(frame, mask)
    if row is not None:
        raise DataError(message, file=file, column=column, row=row)


def _refuse_nulls(frame: Frame, column: str, message: str) -> None:
    """:func:`_refuse` the first null of ``column``; a column without nulls (its count is known without a
    query) is passed at once."""
    if frame.df[column].null_count():
        _refuse(frame, frame.df[column].is_null(), column, message)


def check_columns(frame: Frame, schema: SchemaConfig, labels: bool = True) -> None:
    """Every column the schema reads exists; unused columns give a warning."""
    cols = [c for c in frame.df.columns if c not in PROVENANCE]
    need = required_columns(schema, labels)
    for col, use in need.items():
        if col not in frame.df.columns:
            hint = difflib.get_close_matches(col, cols, n=1)
            raise DataError(
                f"column is missing (needed as {use})"
                + (f"; did you mean {hint[0]!r}?" if hint else f"; columns are {cols}"),
                file=", ".join(frame.files),
                column=col,
            )
    read = required_columns(schema)
    unused = [c for c in cols if c not in read]
    if unused:
        warnings.warn(f"columns not referenced by the schema are ignored: {unused}", DataWarning, stacklevel=2)


def _numeric(frame: Frame, col: str, use: str) -> pl.Series:
    s = frame.df[col]
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        return s.cast(pl.Float64)
    if s.dtype.is_temporal():
        return s
    mask, what = s.cast(pl.Float64, strict=False).is_null() & s.is_not_null(), "first non-number"
    if not mask.any():  # every value parses as a number but is stored as text: nothing is coerced silently
        mask, what = s.is_not_null(), "first value (stored as text)"
    hits = mask.arg_true()
    file, row = _locate(frame, mask)
    bad = s[int(hits[0])] if hits.len() else None
    raise DataError(
        f"expected numbers ({use}); found dtype {s.dtype}" + (f", {what} {bad!r}" if bad is not None else ""),
        file=file or ", ".join(frame.files),
        column=col,
        row=row,
    )


def _check_float32(frame: Frame, s: pl.Series, column: str, use: str) -> None:
    """Values the encoder cannot hold in float32 (|x| > 3.4e38) raise DataError naming the first one."""
    if not s.dtype.is_float():
        return
    big = s.abs() > F32_MAX
    file, row = _locate(frame, big)
    if row is not None:
        raise DataError(
            f"{use} holds {s.filter(big.fill_null(False))[0]:g}, which does not fit float32 (the "
            f"encoder's precision); expected |value| <= {F32_MAX:.4g}",
            file=file,
            column=column,
            row=row,
        )


def check_values(frame: Frame, schema: SchemaConfig, labels: bool = True) -> None:
    """Dense features and the targets of mean statistics: numeric, finite, within float32. Sparse ids: within 64
    bits, whole numbers. Labels: numeric; 0/1/null where no threshold."""
    for f in schema.features:
        s = frame.df[f.source]
        if f.kind == "sparse" and s.dtype in (pl.Int128, pl.UInt128):  # polars reads ids >= 2**64 from CSV as 128-bit
            out = (s < -(2**63)) | (s >= 2**64)
            file, row = _locate(frame, out)
            if row is not None:
                raise DataError(
                    f"id {s.filter(out.fill_null(False))[0]} is outside [-2**63, 2**64); expected 64-bit "
                    "integer ids (or store them as text)",
                    file=file,
                    column=f.source,
                    row=row,
                )
        if f.kind == "sparse" and s.dtype.is_float():
            frac = s.is_finite() & (s != s.floor())
            file, row = _locate(frame, frac)
            if row is not None:
                raise DataError(
                    f"id {s.filter(frac.fill_null(False))[0]!r} is not a whole number; expected integer "
                    "ids (a fractional id is never truncated to an integer)",
                    file=file,
                    column=f.source,
                    row=row,
                )
        if f.kind != "dense":
            continue
        s = _numeric(frame, f.source, f"dense feature {f.name!r}")
        for bad, what in ((s.is_null(), "a null"), (s.is_nan(), "NaN"), (s.is_infinite(), "infinity")):
            _refuse(frame, bad, f.source, f"dense feature {f.name!r} holds {what}; expected a finite number")
        _check_float32(frame, s, f.source, f"dense feature {f.name!r}")
        if f.log1p:
            file, row = _locate(frame, s <= -1)
            if row is not None:
                raise DataError(
                    f"log1p needs values > -1; found {s[int((s <= -1).arg_true()[0])]}",
                    file=file,
                    column=f.source,
                    row=row,
                )
    for stat in schema.stats:
        if labels and stat.stat == "mean" and stat.target not in schema.labels and stat.target in frame.df.columns:
            s = _numeric(frame, stat.target or "", f"target of stat feature {stat.name!r}")
            _refuse(frame, s.is_nan() | s.is_infinite(), stat.target or "",
                    f"target of stat feature {stat.name!r} holds NaN/infinity; expected a number or null")
            _check_float32(frame, s, stat.target or "", f"target of stat feature {stat.name!r}")
    for task, spec in schema.labels.items() if labels else ():
        s = _numeric(frame, spec.column, f"label of task {task!r}")
        if spec.threshold is None:
            bad = ~s.is_in([0.0, 1.0]) & s.is_not_null() & ~s.is_in(spec.missing_values)
            file, row = _locate(frame, bad)
            if row is not None:
                val = s[int(bad.fill_null(False).arg_true()[0])]
                raise DataError(
                    f"label of task {task!r} is {val}; expected 0, 1 or null", file=file, column=spec.column, row=row
                )
        else:
            _refuse(frame, s.is_nan() | s.is_infinite(), spec.column,
                    f"label source of task {task!r} holds NaN/infinity; expected a number or null")
    if schema.time:
        s = frame.df[schema.time]
        if not (s.dtype.is_integer() or s.dtype.is_temporal() or s.dtype.is_float()):
            raise DataError(
                f"time column has dtype {s.dtype}; expected unix seconds (integer), a datetime or ISO "
                "date / datetime text",
                file=", ".join(frame.files),
                column=schema.time,
            )
        _refuse_nulls(frame, schema.time,
                      "time is null; every row needs a time for chronological splits and statistics")
    for col, use in ((schema.domain, "domain"), (schema.user, "user key")):
        _refuse_nulls(frame, col, f"{use} is null; expected a value in every row")


def label_expr(spec: LabelSpec) -> pl.Expr:
    """Float expression of one task's label: 1.0 / 0.0, null where the row has no label."""
    raw = pl.col(spec.column).cast(pl.Float64)
    missing = raw.is_null() | raw.is_in(spec.missing_values) if spec.missing_values else raw.is_null()
    value = (raw >= spec.threshold).cast(pl.Float64) if spec.threshold is not None else raw
    return pl.when(missing).then(None).otherwise(value)


def label_matrix(df: pl.DataFrame, schema: SchemaConfig) -> np.ndarray:
    """Labels as float32 [N, T] in task order; NaN where a row has no label for that task (or, when scoring
    new rows, where the frame has no label column at all)."""
    out = np.full((df.height, len(schema.labels)), np.nan, dtype=np.float32)
    present = [(t, spec) for t, spec in enumerate(schema.labels.values()) if spec.column in df.columns]
    if present:  # one query for every task
        values = df.select(label_expr(spec).alias(str(t)) for t, spec in present).to_numpy()
        out[:, [t for t, _ in present]] = values.astype(np.float32)
    return out


def drop_missing(frame: Frame, schema: SchemaConfig, log: Callable[[str], None] = print) -> Frame:
    """``frame`` without the rows that lack the label of a task whose spec sets ``drop_missing``; each such
    task's count of removed rows is logged (nothing is removed silently)."""
    keep = np.ones(frame.df.height, dtype=bool)
    for task, spec in schema.labels.items():
        if spec.drop_missing and spec.column in frame.df.columns:
            missing = frame.df.select(label_expr(spec).is_null())[:, 0].to_numpy()
            if missing.any():
                log(
                    f"dropped {int(missing.sum()):,} rows without a {task!r} label (column {spec.column!r} null or "
                    f"one of {spec.missing_values}), as drop_missing asks"
                )
            keep &= ~missing
    df = frame.df.filter(pl.Series(keep))
    if df.height == 0:
        raise DataError(
            "every row lacks a label marked drop_missing; expected at least one labelled row",
            file=", ".join(frame.files),
        )
    return Frame(df, frame.files)


def validate(frame: Frame, schema: SchemaConfig, labels: bool = True) -> None:
    """All checks, in the order a user would want to hear about problems. ``labels=False`` for rows to score."""
    if frame.df.height == 0:
        raise DataError("no rows; expected at least one interaction", file=", ".join(frame.files))
    check_columns(frame, schema, labels)
    check_values(frame, schema, labels)


ISO_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")
ISO_ZONED = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")


def parse_time(frame: Frame, schema: SchemaConfig) -> Frame:
    """A time column of text holding ISO 8601 dates or datetimes (``2024-05-01``, ``2024-05-01 13:45:00``,
    ``2024-05-01T13:45:00.250Z``, ``...+08:00``) becomes a datetime column (an offset is converted to UTC;
    times without one are taken as written). A value that is no such date raises a DataError naming its row."""
    if not schema.time or schema.time not in frame.df.columns or frame.df[schema.time].dtype != pl.String:
        return frame
    s = frame.df[schema.time].str.strip_chars().str.replace(r"Z$", "+00:00")
    parsed = [s.str.to_datetime(f, strict=False, time_unit="us") for f in ISO_FORMATS]
    parsed += [
        s.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
        for f in ISO_ZONED
    ]
    out = pl.select(pl.coalesce(parsed)).to_series().alias(schema.time)
    bad = out.is_null() & frame.df[schema.time].is_not_null()
    file, row = _locate(frame, bad)
    if row is not None:
        value = frame.df[schema.time][int(bad.arg_true()[0])]
        raise DataError(
            f"time {value!r} is not an ISO date or datetime; expected e.g. 2024-05-01, "
            "2024-05-01 13:45:00 or 2024-05-01T13:45:00+08:00 (or unix seconds as an integer)",
            file=file,
            column=schema.time,
            row=row,
        )
    return Frame(frame.df.with_columns(out), frame.files)


def validated(frame: Frame, schema: SchemaConfig, labels: bool = True, log: Callable[[str], None] = print) -> Frame:
    """:func:`parse_time` and :func:`validate` ``frame``, then (with ``labels``) :func:`drop_missing`: the rows to
    train or score on."""
    frame = parse_time(frame, schema)
    validate(frame, schema, labels)
    return drop_missing(frame, schema, log) if labels else frame
