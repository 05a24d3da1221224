"""Statistics of the past (``schema.stats``): per-key counts, rates and means that a row may see without leakage.

:class:`PastStatistics` holds, for each statistic, the accumulated totals of the rows it has seen (a table of
keys -> n rows, s sum of the target, m rows with a target) and the global mean of the target. A training row
sees only strictly earlier rows of its own frame (a cumulative sum over time; without a time column, every
other row: leave-one-out); an evaluation row sees the accumulated totals; a ``realtime`` count also counts
the evaluated frame's earlier rows. The :class:`~pepnet.data.encoder.Encoder` buckets or standardises these
values into model inputs; the GBDT baseline reads them raw (:meth:`PastStatistics.values`).
"""
from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from ..config import SchemaConfig, StatFeature
from ..fileio import write_parquet
from .keyindex import PerTable, dict_key_type, dict_values, small_frame
from .split import time_seconds
from .validate import label_expr

TOTALS = ("n", "s", "m")
INDEX_RATIO = 64  # evaluation rows use the hash index when the table has more than this many rows per frame row


def _key_rows(table: pl.DataFrame, keys: list[str]) -> tuple[list[pl.DataType], dict] | None:
    """The dict index of a statistics table: the dtypes of its key columns and key (the value for one key column,
    else the tuple) -> row, without null keys (which never match); None when a key column's values are not dict
    keys (:func:`~.keyindex.dict_key_type`)."""
    dtypes = [table.schema[k] for k in keys]
    if not all(dict_key_type(d) for d in dtypes):
        return None
    cols = [table[k].to_list() for k in keys]
    rows = (
        {k: i for i, k in enumerate(cols[0]) if k is not None}
        if len(cols) == 1
        else {k: i for i, k in enumerate(zip(*cols, strict=True)) if None not in k}
    )
    return dtypes, rows


def _totals_in_order(first: pl.DataFrame, table: pl.DataFrame, keys: list[str]) -> np.ndarray | None:
    """The totals n, s, m of ``table`` in the row order of ``first`` (a table of another statistic with the same
    keys, whose dict index they share), float64 [rows + 1, 3], the last row (unseen) 0; None when the two tables
    do not hold the same keys (then ``table`` is joined)."""
    if table is not first:
        if table.height != first.height or table.select(keys).schema != first.select(keys).schema or \
                table.join(first, on=keys, how="anti", nulls_equal=True).height:
            return None
        table = first.select(keys).join(table, on=keys, how="left", maintain_order="left", nulls_equal=True)
    values = table.select(pl.col(c).cast(pl.Float64).fill_null(0.0) for c in TOTALS).to_numpy()
    return np.vstack([values, np.zeros((1, 3))])


class PastStatistics:
    """The accumulated totals of every statistic of ``schema.stats``, and the values each row may see."""

    def __init__(self, schema: SchemaConfig):
        self.schema = schema
        self.tables: dict[str, pl.DataFrame] = {}  # stat name -> keys, n, s, m over the rows seen so far
        self.global_mean: dict[str, float] = {}    # stat name -> mean target of those rows (0 for counts)
        self._index = PerTable()  # "keys [...]" -> (key dtypes, key -> row); stat name -> value by row: _key_index
        self._rows_memo: tuple[pl.DataFrame, dict] | None = None  # see _rows
        self._key_owner = {s.name: next(o.name for o in schema.stats if o.keys == s.keys) for s in schema.stats}

    def _target(self, stat: StatFeature) -> pl.Expr:
        if stat.stat == "count":
            return pl.lit(None, dtype=pl.Float64)
        if stat.target in self.schema.labels:
            return label_expr(self.schema.labels[stat.target])
        assert stat.target is not None  # rate / mean stats name their target (validated by StatFeature)
        return pl.col(stat.target).cast(pl.Float64)

    def _with_target(self, df: pl.DataFrame, stat: StatFeature) -> pl.DataFrame:
        """The key columns of ``stat`` and its target as ``__y``."""
        return df.select([pl.col(k) for k in stat.keys] + [self._target(stat).alias("__y")])

    def _lookup(self, frame: pl.DataFrame, stat: StatFeature) -> pl.DataFrame:
        """``frame`` left-joined with the accumulated totals of ``stat`` (columns n, s, m; null if unseen)."""
        table = self.tables[stat.name]
        cast = [pl.col(k).cast(table.schema[k], strict=False) for k in stat.keys]
        return frame.with_columns(cast).join(table, on=stat.keys, how="left", maintain_order="left")

    def _key_table(self, stat: StatFeature) -> pl.DataFrame:
        """The table whose dict index ``stat`` uses: that of the first statistic with the same keys."""
        return self.tables[self._key_owner[stat.name]]

    def _key_index(self, stat: StatFeature) -> tuple[list[pl.DataType], dict, np.ndarray] | None:
        """The dict index of the keys of ``stat`` (:func:`_key_rows`), shared by the statistics with the same keys,
        and the value of ``stat`` (:meth:`_value`) for each row of the table in its row order, the last for an
        unseen key (float64 [rows + 1], from :func:`_totals_in_order`), each built once per table; None when there
        is no such index."""
        first, table = self._key_table(stat), self.tables[stat.name]
        keys = self._index.get_for(f"keys {stat.keys}", lambda t: _key_rows(t, stat.keys), first)

        def values(f: pl.DataFrame, t: pl.DataFrame, _g0: float) -> np.ndarray | None:
            totals = _totals_in_order(f, t, stat.keys)
            return None if totals is None else self._value(stat, totals[:, 0], totals[:, 1], totals[:, 2])

        by_row = self._index.get_for(stat.name, values, first, table, self.global_mean[stat.name])
        return None if keys is None or by_row is None else (*keys, by_row)

    def build_lookups(self) -> None:
        """Build the dict index of every table now, not when the first small frame needs it."""
        for stat in self.schema.stats:
            self._key_index(stat)

    def frame_done(self) -> None:
        """Forget the key rows kept for the frame being encoded (see :meth:`_rows`): called before and after the
        statistics of a frame are looked up, so a frame changed in place in between is looked up again."""
        self._rows_memo = None

    def _rows(self, df: pl.DataFrame, stat: StatFeature, dtypes: list[pl.DataType], rows: dict) -> np.ndarray:
        """Row of each row's key of ``stat`` in the dict index ``rows`` (the table's row count where unseen or
        null), int64 [N]; kept for the other statistics with the same keys until :meth:`frame_done`."""
        memo = self._rows_memo
        if memo is None or memo[0] is not df:
            memo = self._rows_memo = (df, {})
        hit = memo[1].get(tuple(stat.keys))
        if hit is None or hit[0] is not rows:
            cols = [dict_values(df[k], d) for k, d in zip(stat.keys, dtypes, strict=True)]
            keys = cols[0] if len(cols) == 1 else zip(*cols, strict=True)
            unseen = self._key_table(stat).height
            hit = memo[1][tuple(stat.keys)] = (rows, np.fromiter((rows.get(k, unseen) for k in keys), dtype=np.int64,
                                                                 count=df.height))
        return hit[1]

    def _indexed(self, df: pl.DataFrame, stat: StatFeature) -> np.ndarray | None:
        """For evaluation rows, the value of ``stat`` (:meth:`_value` of the accumulated totals) per row of ``df``
        (float64 [N]), looked up in a dict of the table's keys built once per table; None when
        a join costs less (``df`` is neither a small frame nor small beside the table: a join hashes the whole
        table on every call) or the keys are not dict keys (floats). This keeps a served request of a few rows
        fast. Same values as :meth:`_value` of :meth:`totals` with nulls filled by 0 (tested)."""
        table = self.tables[stat.name]
        if df.height == 0 or not (small_frame(df.height) or df.height * INDEX_RATIO < table.height):
            return None
        index = self._key_index(stat)
        if index is None:
            return None
        dtypes, rows, by_row = index
        return by_row[self._rows(df, stat, dtypes, rows)]

    def totals(self, df: pl.DataFrame, stat: StatFeature, training: bool, with_history: bool = False) -> pl.DataFrame:
        """Per row of ``df``, the totals of the past rows ``stat`` may see: columns n (rows), s (sum of the
        target), m (rows with a target); null where the key was never seen. ``with_history`` (training only):
        add the accumulated table to the within-frame totals (online training: earlier periods count too).
        A ``realtime`` count of evaluation rows is computed the same way: the frame's earlier rows plus the table."""
        if not training and stat.realtime:
            training = with_history = True
        keys = stat.keys
        if not training:  # evaluation rows only look up the training statistics: no target column needed
            return self._lookup(df.select([pl.col(k) for k in keys]), stat)
        frame = self._with_target(df, stat)
        if self.schema.time:
            frame = frame.with_columns(__t=time_seconds(df[self.schema.time]))
            g = (
                frame.group_by([*keys, "__t"])
                .agg(n=pl.len(), s=pl.col("__y").sum(), m=pl.col("__y").count())
                .sort([*keys, "__t"])
                .with_columns([(pl.col(c).cum_sum().over(keys) - pl.col(c)).alias(c) for c in TOTALS])
            )
            agg = frame.join(g, on=[*keys, "__t"], how="left", maintain_order="left")
        else:  # leave-one-out totals: a row never sees its own label
            g = frame.group_by(keys).agg(n=pl.len(), s=pl.col("__y").sum(), m=pl.col("__y").count())
            agg = frame.join(g, on=keys, how="left", maintain_order="left").with_columns(
                n=pl.col("n") - 1,
                s=pl.col("s") - pl.col("__y").fill_null(0.0),
                m=pl.col("m") - pl.col("__y").is_not_null().cast(pl.UInt32),
            )
        if with_history:
            past = self._lookup(frame.select(keys), stat)
            agg = agg.with_columns([(pl.col(c).cast(pl.Float64) + past[c].fill_null(0).cast(pl.Float64)).alias(c)
                                    for c in TOTALS])
        return agg

    def raw(self, df: pl.DataFrame, stat: StatFeature, training: bool, with_history: bool = False) -> np.ndarray:
        """The un-bucketised statistic of every row of ``df`` (float64 [N]), from :meth:`totals`: log1p(count)
        for counts, the smoothed mean (``prior`` rows of the global mean) for rates and means. A few evaluation
        rows read the values from :meth:`_indexed`."""
        found = None if training or stat.realtime else self._indexed(df, stat)
        if found is not None:
            return found
        agg = self.totals(df, stat, training, with_history)
        n = agg["n"].fill_null(0).cast(pl.Float64).to_numpy()
        s = agg["s"].fill_null(0.0).cast(pl.Float64).to_numpy() if stat.stat != "count" else n
        m = agg["m"].fill_null(0).cast(pl.Float64).to_numpy() if stat.stat != "count" else n
        return self._value(stat, n, s, m)

    def _value(self, stat: StatFeature, n: np.ndarray, s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """The statistic from totals n (rows), s (sum of the target), m (rows with a target), float64 [N] each:
        log1p(n) for counts, the smoothed mean (``prior`` rows of the global mean) for rates and means."""
        if stat.stat == "count":
            return np.log1p(n)
        g0 = self.global_mean[stat.name]
        if stat.prior == 0:
            return np.where(m > 0, s / np.maximum(m, 1.0), g0)
        return (s + stat.prior * g0) / (m + stat.prior)

    def fit(self, df: pl.DataFrame, stat: StatFeature) -> np.ndarray:
        """Start the totals of ``stat`` from the training split ``df``; returns its training rows' values
        (:meth:`raw`)."""
        y = df.select(self._target(stat).alias("__y"))["__y"]
        # polars types Series.mean() as any scalar; a float column with values has a float mean
        self.global_mean[stat.name] = float(cast(float, y.mean())) if stat.stat != "count" and y.count() else 0.0
        self.tables[stat.name] = (
            self._with_target(df, stat)
            .group_by(stat.keys)
            .agg(n=pl.len(), s=pl.col("__y").sum(), m=pl.col("__y").count())
        )
        return self.raw(df, stat, training=True)

    def values(self, df: pl.DataFrame, training: bool = False) -> tuple[list[str], np.ndarray]:
        """Every statistic of the schema, un-bucketised and un-standardised: (names, float64 [N, S]).

        Counts are log1p(count), rates and means smoothed, exactly as the model's inputs are derived
        (``training`` as in :meth:`~pepnet.data.encoder.Encoder.transform`). For models that take raw numbers,
        e.g. gradient-boosted trees."""
        stats = self.schema.stats
        if any(s.name not in self.tables for s in stats):
            raise RuntimeError("PastStatistics.values called before fit")
        values = np.zeros((df.height, len(stats)), dtype=np.float64)
        self.frame_done()
        for j, spec in enumerate(stats):
            values[:, j] = self.raw(df, spec, training)
        self.frame_done()
        return [s.name for s in stats], values

    def earlier_rows(self, df: pl.DataFrame, column: str) -> np.ndarray:
        """For each row of ``df``, how many rows of ``df`` before it hold the same value of ``column`` (strictly
        earlier in time; without a time column, every other row): int [N]."""
        count = StatFeature(name=f"{column} (earlier rows)", keys=[column], stat="count")
        return self.totals(df, count, training=True)["n"].to_numpy()

    def update(self, df: pl.DataFrame) -> None:
        """Add the rows of ``df`` to the accumulated totals (and their global means)."""
        for stat in self.schema.stats:
            table = self.tables[stat.name]
            new = (
                self._with_target(df, stat)
                .with_columns([pl.col(k).cast(table.schema[k], strict=False) for k in stat.keys])
                .group_by(stat.keys)
                .agg(n=pl.len(), s=pl.col("__y").sum(), m=pl.col("__y").count())
            )
            self.tables[stat.name] = (
                pl.concat([table, new.cast(table.schema)])
                .group_by(stat.keys, maintain_order=True)
                .agg(pl.col("n").sum(), pl.col("s").sum(), pl.col("m").sum())
            )
            if stat.stat != "count":
                t = self.tables[stat.name]
                m = float(t["m"].sum())
                if m > 0:
                    self.global_mean[stat.name] = float(t["s"].sum()) / m

    # ------------------------------------------------------------------ persistence (inside the encoder's folder)
    def save(self, path: Path) -> dict[str, float]:
        """Write each table as ``stat.<name>.parquet`` into the folder ``path`` (atomically, with page checksums);
        returns the global means (stored in encoder.json by the encoder)."""
        for name, table in self.tables.items():
            write_parquet(table, path / f"stat.{name}.parquet")
        return self.global_mean

    @classmethod
    def load(cls, schema: SchemaConfig, path: Path, global_mean: dict[str, float]) -> PastStatistics:
        """The totals written by :meth:`save` into the folder ``path``, with their global means; a missing or
        damaged table raises DataError naming it."""
        from .sources import read_table

        past = cls(schema)
        past.global_mean = dict(global_mean)
        for spec in schema.stats:
            past.tables[spec.name] = read_table(path / f"stat.{spec.name}.parquet")
        return past
