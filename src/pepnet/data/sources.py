"""Reading interaction logs: parquet / CSV files, built-in data sets, side tables.

Every frame returned here carries two provenance columns, ``__file`` (index into the list of file
names) and ``__row`` (0-based data row within that file), so that validation errors can name the
file and row of the first bad value after any join, sort or split.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..config import DataConfig, SideTable, SyntheticData
from ..errors import DataError, DataWarning

if TYPE_CHECKING:
    from ..datasets.synthetic import SyntheticSpec

FILE_COL = "__file"
ROW_COL = "__row"
PROVENANCE = (FILE_COL, ROW_COL)


@dataclass
class Frame:
    """A polars frame plus the names of the files its rows came from (indexed by ``__file``)."""

    df: pl.DataFrame
    files: list[str] = field(default_factory=list)

    def locate(self, position: int) -> tuple[str, int]:
        """(file name, row within file) of the row at ``position`` in ``df``."""
        f, r = self.df.select(FILE_COL, ROW_COL).row(position)
        return self.files[f], r

    def first_bad(self, mask: pl.Series) -> tuple[str, int] | None:
        """Location of the first True in ``mask`` (a boolean Series aligned with ``df``), or None."""
        if not mask.any():  # the common case, without a query
            return None
        hits = mask.fill_null(False).arg_true()
        return self.locate(int(hits[0]))


def concat_frames(first: Frame, second: Frame) -> Frame:
    """The rows of ``first`` then ``second``, each still located in its own file."""
    if first.files == second.files:
        return Frame(pl.concat([first.df, second.df], how="vertical_relaxed"), first.files)
    shifted = second.df.with_columns((pl.col(FILE_COL) + len(first.files)).cast(pl.UInt16))
    return Frame(pl.concat([first.df, shifted], how="vertical_relaxed"), first.files + second.files)


def read_table(path: str | Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read one parquet or CSV file; an unreadable or truncated file raises DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError("file does not exist", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):  # pages written with a CRC (pepnet writes them) are verified
            return pl.read_parquet(path, columns=columns, use_pyarrow=True,
                                   pyarrow_options={"page_checksum_verification": True})
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            check_csv_lines(path, sep)
            return pl.read_csv(path, separator=sep, columns=columns, infer_schema_length=100_000)
    except DataError:
        raise
    except pl.exceptions.ColumnNotFoundError as exc:
        raise DataError(f"column not found: {exc}", file=str(path)) from None
    except Exception as exc:  # polars/pyarrow raise many types for damaged files
        raise DataError(f"cannot read file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        "expected a readable parquet or CSV file", file=str(path)) from None
    raise DataError(f"unknown file type {suffix!r}; expected .parquet, .csv or .tsv", file=str(path))


def check_csv_lines(path: Path, sep: str) -> None:
    """A CSV file whose rows do not all have the header's number of fields (a row missing fields, a last line
    cut inside an earlier field), or whose last line ends with a separator and no newline (cut before its last
    field), raises DataError naming the line. Any other last line without a newline gives a DataWarning naming
    it: the file may have been cut inside its last value, which nothing in the file can tell."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        return  # the reader names an empty file
    ends = np.flatnonzero(raw == ord("\n"))
    if raw[-1] != ord("\n"):
        ends = np.append(ends, raw.size)
        if raw[-1] == ord(sep):
            raise DataError(f"line {ends.size}, the last, ends with an empty field and no newline: the file looks "
                            "cut before its last field; expected complete lines", file=str(path), row=ends.size - 2)
        warnings.warn(f"file {path}, line {ends.size}: the last line does not end with a newline; if the file was "
                      "cut, the last value of this row may be cut too (files written by pepnet, polars, pandas and "
                      "the csv module end with one)", DataWarning, stacklevel=3)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if ord('"') in raw:  # quoted fields may hold separators and newlines: the csv module counts the fields
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=sep)
            width = None
            for record in reader:
                if record and width is not None and len(record) != width:
                    _ragged(path, reader.line_num, len(record), width)
                width = width if width is not None else len(record)
        return
    fields = np.bincount(np.searchsorted(ends, np.flatnonzero(raw == ord(sep))), minlength=ends.size) + 1
    blank = (ends - starts) <= (raw[np.maximum(ends - 1, 0)] == ord("\r"))  # empty lines are skipped by the reader
    bad = np.flatnonzero((fields != fields[0]) & ~blank)
    if bad.size:
        _ragged(path, int(bad[0]) + 1, int(fields[bad[0]]), int(fields[0]))


def _ragged(path: Path, line: int, got: int, width: int) -> None:
    cut = " (the file looks truncated)" if got < width else ""
    raise DataError(f"line {line} has {got} field(s), the header {width}{cut}; expected every row to have "
                    f"{width}", file=str(path), row=line - 2)


def read_files(paths: list[str]) -> Frame:
    """Concatenate several files (same columns) into one Frame with provenance columns."""
    if not paths:
        raise DataError("no data files given")
    parts: list[pl.DataFrame] = []
    for i, p in enumerate(paths):
        df = read_table(p)
        if parts and df.columns != parts[0].columns[: len(df.columns)]:
            missing = sorted(set(parts[0].columns) - set(df.columns) - set(PROVENANCE))
            extra = sorted(set(df.columns) - set(parts[0].columns))
            raise DataError(f"columns differ from {paths[0]}: missing {missing}, extra {extra}", file=str(p))
        parts.append(df.with_columns(
            pl.lit(i, dtype=pl.UInt16).alias(FILE_COL), pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_COL)
        ))
    try:
        df = pl.concat(parts, how="vertical_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"files have incompatible column types: {exc}", file=", ".join(paths)) from None
    return Frame(df, [str(p) for p in paths])


def join_side_tables(frame: Frame, tables: list[SideTable]) -> Frame:
    """Left-join side tables (e.g. user or item attributes) on their key; keys must be unique in the side table."""
    df = frame.df
    for t in tables:
        side = read_table(t.path)
        if t.key not in side.columns:
            raise DataError(f"join key missing; side table columns: {side.columns}", file=t.path, column=t.key)
        if t.key not in df.columns:
            raise DataError("join key missing from the interaction files", file=", ".join(frame.files), column=t.key)
        if t.columns is not None:
            missing = [c for c in t.columns if c not in side.columns]
            if missing:
                raise DataError(f"columns {missing} not in side table; it has {side.columns}", file=t.path)
            side = side.select([t.key, *t.columns])
        dup = ~side[t.key].is_first_distinct()  # the first row that repeats an earlier key
        if dup.any():
            row = int(dup.arg_true()[0])
            raise DataError(f"join key value {side[t.key][row]!r} repeats; side table keys must be unique",
                            file=t.path, column=t.key, row=row)
        clash = [c for c in side.columns if c != t.key and c in df.columns]
        if clash:
            raise DataError(f"side table columns {clash} already exist in the interactions", file=t.path)
        try:
            side = side.with_columns(pl.col(t.key).cast(df.schema[t.key]))
        except pl.exceptions.PolarsError:
            raise DataError(f"join key type {side.schema[t.key]} does not match {df.schema[t.key]}",
                            file=t.path, column=t.key) from None
        df = df.join(side, on=t.key, how="left", maintain_order="left")
    return Frame(df, frame.files)


def synthetic_spec(cfg: SyntheticData) -> SyntheticSpec:
    """The generator's spec of a config's ``data.synthetic`` section."""
    from ..datasets.synthetic import SyntheticSpec

    return SyntheticSpec(**cfg.model_dump())


def load_data(cfg: DataConfig, files: list[str] | None = None) -> Frame:
    """All rows of the configured source (files or built-in data set) with side tables joined."""
    if files is None and cfg.dataset == "ciao":
        from ..datasets.ciao import ratings_path

        files = [str(ratings_path())]
    if files is None and cfg.dataset == "synthetic":
        from ..datasets.synthetic import generate

        s = cfg.synthetic
        df = generate(synthetic_spec(s)).with_columns(
            pl.lit(0, dtype=pl.UInt16).alias(FILE_COL), pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_COL)
        )
        return join_side_tables(Frame(df, [f"<synthetic seed={s.seed}>"]), cfg.side_tables)
    return join_side_tables(read_files(files if files is not None else cfg.files), cfg.side_tables)
