"""The encoder: the only place that turns raw values into model inputs.

``Encoder.fit`` learns everything from the training split only (vocabularies, hashing, dense
statistics, statistics of the past and their buckets); ``Encoder.transform`` turns any frame into an
:class:`EncodedData` of contiguous numpy arrays. Training, evaluation, predict and export all call the
same saved encoder, so encodings cannot drift apart.

Fields are laid out sparse first, then dense. Sparse ids are offset into ONE fused embedding table
(row 0 of each field = out of vocabulary / null / unseen). A vocabulary field with ``reserve: R`` keeps R
more rows after its vocabulary: online training (``partial_fit``) gives them to values first seen later, and
once they are all given, further new values hash into them (never past the field's rows).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from ..config import FeatureSpec, SchemaConfig, StatFeature, TimeFeature
from ..errors import DataError, DataWarning
from ..fileio import DamagedFileError, atomic_write, read_json_as, write_parquet
from .keyindex import PerTable, dict_matches, small_frame
from .past_stats import PastStatistics
from .split import time_seconds
from .validate import label_matrix, required_columns

if TYPE_CHECKING:
    from .sources import Frame

MIN_STD = 1e-12  # a dense column with a smaller standard deviation in training is treated as constant

@dataclass(frozen=True)
class FieldInfo:
    """One model input field. ``size``: rows in the fused table (sparse) or 1 (dense); ``offset``:
    first row of the field in the fused table (sparse) or its column in the dense matrix (dense)."""

    name: str
    kind: Literal["sparse", "dense"]
    size: int
    offset: int


@dataclass
class EncodedData:
    """A split, encoded. N rows, Fs sparse and Fd dense fields, T tasks.

    sparse: int64 [N, Fs], ids already offset into the fused table
    dense:  float32 [N, Fd], standardised
    labels: float32 [N, T], NaN = label missing
    domain: int64 [N], codes into ``domain_names`` (the raw domain values as strings)
    user:   int64 [N], group codes of the user key (for GAUC)
    """

    sparse: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    domain: np.ndarray
    user: np.ndarray
    domain_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed, platform-stable 64-bit hash of uint64 values (vectorised)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _int_bits(s: pl.Series) -> np.ndarray:
    """Integer ids as uint64 [N] modulo 2**64 (the same value gives the same bits whatever its integer
    dtype: Int64, UInt64, or Int128 as polars reads big ids from CSV); null -> 0."""
    v = s.fill_null(0).to_frame("v")
    try:
        parts = v.select(neg=pl.when(pl.col("v") < 0).then(pl.col("v")).otherwise(0).cast(pl.Int64),
                         pos=pl.when(pl.col("v") >= 0).then(pl.col("v")).otherwise(0).cast(pl.UInt64))
    except pl.exceptions.PolarsError:
        raise DataError(f"integer ids of dtype {s.dtype} outside [-2**63, 2**64); expected 64-bit ids",
                        column=s.name) from None
    return parts["pos"].to_numpy() | parts["neg"].to_numpy().view(np.uint64)


def hash_ids(s: pl.Series, buckets: int) -> np.ndarray:
    """Ids 1..buckets from a stable hash of the values (integers: splitmix64 of the value mod 2**64;
    others: blake2b of str)."""
    if s.dtype.is_integer():
        out = (_splitmix64(_int_bits(s)) % np.uint64(buckets)).astype(np.int64) + 1
    else:
        uniq = s.cast(pl.String).unique().drop_nulls()
        codes = [
            int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") % buckets + 1 for v in uniq
        ]
        out = s.cast(pl.String).replace_strict(uniq, codes, default=0, return_dtype=pl.Int64).to_numpy()
    return np.where(s.is_null().to_numpy(), 0, out)


def _vocab_dict(vocab: pl.Series) -> dict:
    """value -> id (1..len(vocab)) of a vocabulary, for the dict lookups of small frames."""
    return {v: i for i, v in enumerate(vocab.to_list(), 1) if v is not None}


def _sorted_codes(s: pl.Series) -> tuple[np.ndarray, list] | None:
    """For a small frame's column of integers or text without nulls, the code of each value in the sorted distinct
    values (int64 [N]) and those values, as polars' sort orders them; None otherwise (polars computes them)."""
    numpy_ints = s.dtype.is_integer() and s.dtype not in (pl.Int128, pl.UInt128)
    if not small_frame(s.len()) or s.null_count() or not (s.dtype == pl.String or numpy_ints):
        return None
    uniq, codes = np.unique(s.to_numpy(), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), uniq.tolist()


def _time_part(s: pl.Series, part: str) -> pl.Series:
    dt = pl.from_epoch(time_seconds(s), time_unit="s")
    return {"hour": dt.dt.hour, "weekday": dt.dt.weekday, "month": dt.dt.month, "year": dt.dt.year}[part]().cast(
        pl.Int64
    )


class Encoder:
    """Learns encodings on the training split; encodes any split the same way."""

    def __init__(self, schema: SchemaConfig):
        self.schema = schema
        self.vocabs: dict[str, pl.Series] = {}  # sparse feature / time feature -> kept values
        self.dense_stats: dict[str, tuple[float, float]] = {}  # dense field -> (mean, std)
        self.past = PastStatistics(schema)  # statistics of the past: totals over the rows seen so far
        self._vocab_ids = PerTable()  # field name -> (vocabulary, value -> id) for small frames (see keyindex)
        self.stat_edges: dict[str, np.ndarray] = {}
        self.fields: list[FieldInfo] = []
        self.input_dtypes: dict[str, str] = {}  # column read when scoring -> its polars dtype in the training split
        self.fitted = False

    # ------------------------------------------------------------------ layout
    @property
    def sparse_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields if f.kind == "sparse"]

    @property
    def dense_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields if f.kind == "dense"]

    @property
    def num_embeddings(self) -> int:
        """Rows of the fused embedding table."""
        return sum(f.size for f in self.sparse_fields)

    @property
    def task_names(self) -> list[str]:
        return self.schema.task_names()

    @property
    def reported_tasks(self) -> list[str]:
        """The non-auxiliary tasks: those scored and reported."""
        return self.schema.reported_tasks()

    @property
    def reported_columns(self) -> list[int]:
        """Where the reported tasks sit among ``task_names`` (columns of labels and model outputs)."""
        return [self.task_names.index(t) for t in self.reported_tasks]

    def field_index(self, name: str) -> int:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(f"no field named {name!r}; fields: {[f.name for f in self.fields]}")

    def group(self, name: str) -> list[int]:
        """Indices (into ``fields``: sparse first, then dense) of the features of a schema group."""
        return [self.field_index(n) for n in getattr(self.schema.groups, name)]

    # ------------------------------------------------------------------ fit / transform
    def _sparse_specs(self) -> list[FeatureSpec | StatFeature | TimeFeature]:
        s = self.schema
        return (
            [f for f in s.features if f.kind == "sparse"]
            + [t for t in s.stats if not t.as_dense]
            + list(s.time_features)
        )

    def _dense_specs(self) -> list[FeatureSpec | StatFeature]:
        s = self.schema
        return [f for f in s.features if f.kind == "dense"] + [t for t in s.stats if t.as_dense]

    def _dense_raw(self, df: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
        v = df[spec.source].cast(pl.Float64).to_numpy()
        return np.log1p(v) if spec.log1p else v

    def fit(self, train: pl.DataFrame) -> Encoder:
        """Learn every encoding from the training split."""
        if train.height == 0:
            raise DataError("cannot fit the encoder on an empty training split")
        self.input_dtypes = {
            c: str(train.schema[c]) for c in required_columns(self.schema, labels=False) if c in train.columns
        }
        sizes: list[tuple[str, Literal["sparse", "dense"], int]] = []
        for spec in self._sparse_specs():
            if isinstance(spec, StatFeature):
                raw = self.past.fit(train, spec)
                qs = np.quantile(raw, np.arange(1, spec.buckets) / spec.buckets)
                self.stat_edges[spec.name] = np.unique(qs)
                sizes.append((spec.name, "sparse", len(self.stat_edges[spec.name]) + 2))
            elif isinstance(spec, FeatureSpec) and spec.hash_buckets:
                sizes.append((spec.name, "sparse", spec.hash_buckets + 1))
            else:
                col = (
                    train[spec.source]
                    if isinstance(spec, FeatureSpec)
                    else _time_part(train[self._time_column], spec.part)
                )
                min_count = spec.min_count if isinstance(spec, FeatureSpec) else 1
                vc = col.drop_nulls().value_counts(name="__count")
                kept = vc.filter(pl.col("__count") >= min_count)[vc.columns[0]]
                self.vocabs[spec.name] = kept.sort().rename("value")
                sizes.append((spec.name, "sparse", len(kept) + 1 + self._reserve(spec)))
        for spec in self._dense_specs():
            raw = self.past.fit(train, spec) if isinstance(spec, StatFeature) else self._dense_raw(train, spec)
            std = float(raw.std())
            # a spread below MIN_STD is a constant up to rounding: dividing by it would blow the rounding (and
            # any later value) up past float32's range (inf); such a column is only centred
            self.dense_stats[spec.name] = (float(raw.mean()), std if std > MIN_STD else 1.0)
            sizes.append((spec.name, "dense", 1))
        offset, dense_col = 0, 0
        for name, kind, size in sizes:
            if kind == "sparse":
                self.fields.append(FieldInfo(name, kind, size, offset))
                offset += size
        for name, kind, size in sizes:
            if kind == "dense":
                self.fields.append(FieldInfo(name, kind, size, dense_col))
                dense_col += 1
        self.fitted = True
        return self

    def _sparse_ids(self, df: pl.DataFrame, spec, training: bool, with_history: bool = False) -> np.ndarray:
        if isinstance(spec, StatFeature):
            raw = self.past.raw(df, spec, training, with_history)
            return np.searchsorted(self.stat_edges[spec.name], raw, side="right").astype(np.int64) + 1
        if isinstance(spec, FeatureSpec) and spec.hash_buckets:
            return hash_ids(df[spec.source], spec.hash_buckets)
        col = df[spec.source] if isinstance(spec, FeatureSpec) else _time_part(df[self._time_column], spec.part)
        vocab = self.vocabs[spec.name]
        if small_frame(len(col)) and dict_matches(col.dtype, vocab.dtype):
            ids_of = self._vocab_ids.get_for(spec.name, _vocab_dict, vocab)
            ids = np.fromiter((ids_of.get(v, 0) for v in col.to_list()), dtype=np.int64, count=len(col))
        else:
            ids = self._vocab_lookup(col, vocab)
        reserve = self._reserve(spec)
        if reserve and self._free_rows(spec) == 0:  # grown full: unseen values share the reserved rows by hash
            size = self.fields[self.field_index(spec.name)].size
            unseen = (ids == 0) & col.is_not_null().to_numpy()
            ids[unseen] = hash_ids(col.filter(pl.Series(unseen)), reserve) + (size - 1 - reserve)
        if training and isinstance(spec, FeatureSpec) and spec.oov_first_rows:
            ids[self.past.earlier_rows(df, spec.source) < spec.oov_first_rows] = 0
        return ids

    def build_lookups(self) -> None:
        """Build the dicts that encode small frames (vocabularies, statistics tables) now, not when the first small
        frame needs them (about 0.2 s for the Ciao model): a server does it before a model takes requests."""
        for name, vocab in self.vocabs.items():
            self._vocab_ids.get_for(name, _vocab_dict, vocab)
        self.past.build_lookups()

    @staticmethod
    def _vocab_lookup(col: pl.Series, vocab: pl.Series) -> np.ndarray:
        """Ids 1..len(vocab) of the values of ``col`` in ``vocab`` (0: null or not in it), int64 [N], with polars
        (a frame of any size and dtype; a dtype that cannot be matched to the vocabulary's raises DataError)."""
        key = col
        if col.dtype != vocab.dtype:
            both_int = col.dtype.is_integer() and vocab.dtype.is_integer()
            try:  # an integer beyond the range of the vocabulary's type cannot be in it: OOV (null -> 0)
                key = col.cast(vocab.dtype, strict=not both_int)
            except pl.exceptions.PolarsError:
                raise DataError(
                    f"values of dtype {col.dtype} cannot be matched to the training vocabulary of dtype "
                    f"{vocab.dtype}; expected the same type as in training",
                    column=col.name,
                ) from None
        return (
            key.replace_strict(vocab, np.arange(1, len(vocab) + 1, dtype=np.int64), default=0, return_dtype=pl.Int64)
            .fill_null(0)
            .to_numpy()
            .copy()
        )

    @property
    def _time_column(self) -> str:
        """schema.time, which a time feature needs (SchemaConfig checks that it is set)."""
        assert self.schema.time is not None
        return self.schema.time

    # ------------------------------------------------------------------ online growth
    @staticmethod
    def _reserve(spec) -> int:
        return spec.reserve if isinstance(spec, FeatureSpec) and not spec.hash_buckets else 0

    def _free_rows(self, spec: FeatureSpec) -> int:
        """Reserved rows of a vocabulary field not yet given to a value."""
        return self.fields[self.field_index(spec.name)].size - 1 - len(self.vocabs[spec.name])

    def grow(self, df: pl.DataFrame) -> dict[str, int]:
        """Give reserved rows to values of ``df`` not yet in the vocabularies (fields with ``reserve > 0``).

        A new value needs ``min_count`` rows in ``df``; the most frequent new values are served first. Ids of
        known values never change (new values are appended). When a field's reserve is used up, further new
        values are not added: they hash into the reserved rows (see ``_sparse_ids``). Returns name -> values added.
        """
        added: dict[str, int] = {}
        for spec in self._sparse_specs():
            # only a FeatureSpec has a reserve (_reserve is 0 otherwise)
            if not isinstance(spec, FeatureSpec) or not self._reserve(spec) or self._free_rows(spec) == 0:
                continue
            vocab = self.vocabs[spec.name]
            col = df[spec.source].drop_nulls()
            if col.dtype != vocab.dtype:
                col = col.cast(vocab.dtype, strict=False).drop_nulls()
            vc = col.filter(~col.is_in(vocab.implode())).value_counts(name="__count")
            new = vc.filter(pl.col("__count") >= spec.min_count).sort(
                ["__count", vc.columns[0]], descending=[True, False]
            )[vc.columns[0]]
            new = new.head(self._free_rows(spec)).rename("value")
            if len(new):
                self.vocabs[spec.name] = pl.concat([vocab, new])
                added[spec.name] = len(new)
        return added

    def partial_fit(self, df: pl.DataFrame) -> EncodedData:
        """Online training on one more period: grow the vocabularies, encode ``df`` as training data (statistics
        of the past = everything accumulated so far + earlier rows of ``df``), then add ``df`` to the statistics.
        Bucket edges and dense standardisation stay those of the first fit (the model's inputs keep their meaning)."""
        self.grow(df)
        encoded = self.transform(df, training=True, with_history=True)
        self.past.update(df)
        return encoded

    def transform(self, df: pl.DataFrame, training: bool = False, with_history: bool = False) -> EncodedData:
        """Encode a frame. ``training=True`` only for the training split itself: statistics of the past
        are then computed row by row from strictly earlier training rows (or leave-one-out); with
        ``with_history`` the accumulated statistics of earlier periods are added (see ``partial_fit``)."""
        if not self.fitted:
            raise RuntimeError("Encoder.transform called before fit")
        n = df.height
        self.past.frame_done()
        sparse = np.zeros((n, len(self.sparse_fields)), dtype=np.int64)
        for j, (spec, field) in enumerate(zip(self._sparse_specs(), self.sparse_fields, strict=True)):
            sparse[:, j] = self._sparse_ids(df, spec, training, with_history) + field.offset
        dense = np.zeros((n, len(self.dense_fields)), dtype=np.float32)
        for j, spec in enumerate(self._dense_specs()):
            raw = (
                self.past.raw(df, spec, training, with_history)
                if isinstance(spec, StatFeature)
                else self._dense_raw(df, spec)
            )
            mean, std = self.dense_stats[spec.name]
            dense[:, j] = (raw - mean) / std
        self.past.frame_done()
        dom, users = df[self.schema.domain], df[self.schema.user]
        fast = _sorted_codes(dom)
        if fast is not None:
            domain, names = fast
        else:
            uniq = dom.unique().sort()
            domain = dom.replace_strict(uniq, np.arange(len(uniq)), return_dtype=pl.Int64).to_numpy()
            names = uniq.to_list()
        fast = _sorted_codes(users)
        user = fast[0] if fast is not None else (users.rank("dense").cast(pl.Int64) - 1).to_numpy()
        return EncodedData(sparse, dense, label_matrix(df, self.schema), domain, user, [str(v) for v in names])

    def unseen_domains(self, df: pl.DataFrame) -> list[str]:
        """Domain values of ``df`` that the training split never had (scored with the OOV domain embedding)."""
        name = next(
            (f.name for f in self.schema.features if f.source == self.schema.domain and f.name in self.vocabs), None
        )
        if name is None:
            return []
        vocab = self.vocabs[name]
        vals = df[self.schema.domain].unique().cast(vocab.dtype, strict=False)
        return [str(v) for v in vals.filter(~vals.is_in(vocab.to_list())).to_list()]

    def warn_unseen_domains(self, df: pl.DataFrame, what: str) -> list[str]:
        """:meth:`unseen_domains` of ``df``, announced as a DataWarning naming ``what`` (e.g. "the test split");
        returns them."""
        unseen = self.unseen_domains(df)
        if unseen:
            warnings.warn(
                f"{what} has domains never seen in training: {unseen}; they are scored with the "
                "out-of-vocabulary domain embedding and reported under their own name",
                DataWarning,
                stacklevel=3,
            )
        return unseen

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the vocabularies and statistic tables (parquet with page checksums), then encoder.json, each
        atomically; encoder.json lists the vocabularies so that a missing one is an error on load."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, vocab in self.vocabs.items():
            write_parquet(pl.DataFrame({"value": vocab}), path / f"vocab.{name}.parquet")
        meta = {
            "vocabs": sorted(self.vocabs),
            "schema": self.schema.model_dump(mode="json"),
            "fields": [asdict(f) for f in self.fields],
            "dense_stats": self.dense_stats,
            "stat_global": self.past.save(path),
            "stat_edges": {k: v.tolist() for k, v in self.stat_edges.items()},
            "input_dtypes": self.input_dtypes,
        }
        atomic_write(path / "encoder.json", json.dumps(meta, indent=1))  # last: its presence marks a complete save

    @classmethod
    def _from_meta(cls, meta: dict) -> tuple[Encoder, list[str] | None, dict[str, float]]:
        """An encoder from encoder.json's content, before its vocabularies and statistic tables are read; the
        names of its vocabularies (None in encoders saved before the list was kept); the statistics' global
        means."""
        enc = cls(SchemaConfig.model_validate(meta["schema"]))
        enc.fields = [FieldInfo(**f) for f in meta["fields"]]
        enc.dense_stats = {k: tuple(v) for k, v in meta["dense_stats"].items()}
        enc.stat_edges = {k: np.asarray(v, dtype=np.float64) for k, v in meta["stat_edges"].items()}
        enc.input_dtypes = meta.get("input_dtypes", {})  # encoders saved before it was recorded have none
        return enc, meta.get("vocabs"), dict(meta["stat_global"])

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        """The encoder saved in ``path``; a missing, truncated or damaged file raises DamagedFileError naming it."""
        from .sources import read_table

        path = Path(path)
        enc, names, stat_global = read_json_as(path / "encoder.json", "encoder file", cls._from_meta)
        if names is None:
            names = [
                s.name
                for s in enc._sparse_specs()
                if isinstance(s, (FeatureSpec, TimeFeature)) and (path / f"vocab.{s.name}.parquet").exists()
            ]
        try:
            for name in names:
                enc.vocabs[name] = read_table(path / f"vocab.{name}.parquet")["value"]
            enc.past = PastStatistics.load(enc.schema, path, stat_global)
        except (DataError, pl.exceptions.ColumnNotFoundError) as exc:
            raise DamagedFileError(f"encoder {path}: {exc}") from None
        enc.fitted = True
        return enc


def transform(encoder: Encoder, frame: Frame, training: bool = False) -> EncodedData:
    """``encoder.transform(frame.df)``; an encoding error about a column (e.g. a dtype that differs from training)
    is raised again naming the file and the first row holding a value of that column."""
    try:
        return encoder.transform(frame.df, training=training)
    except DataError as exc:
        if exc.file is not None or exc.column not in frame.df.columns:
            raise
        file, row = frame.first_bad(frame.df[exc.column].is_not_null()) or (", ".join(frame.files), None)
        raise DataError(exc.detail, file=file, column=exc.column, row=row) from None
