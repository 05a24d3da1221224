"""Train / validation / test splits: chronological by the time column, random with a seed, or explicit files."""
from __future__ import annotations

import numpy as np
import polars as pl

from ..config import DataConfig, SchemaConfig
from ..errors import DataError
from .sources import Frame, load_data


def _cut(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    a = int(round(n * fractions[0]))
    b = int(round(n * (fractions[0] + fractions[1])))
    return a, b


def split_frame(frame: Frame, cfg: DataConfig, schema: SchemaConfig) -> dict[str, Frame]:
    """Split rows into train / valid / test Frames; every split must be non-empty."""
    method = cfg.split.method
    if method == "files":
        parts = {
            "train": frame,
            "valid": load_data(cfg, files=cfg.split.valid_files),
            "test": load_data(cfg, files=cfg.split.test_files),
        }
    else:
        df = frame.df
        if method == "chronological":
            if not schema.time:
                raise DataError(
                    "split.method 'chronological' needs schema.time; use 'random' or declare the time column"
                )
            df = df.sort(schema.time, maintain_order=True)
        else:
            order = np.random.default_rng(cfg.split.seed).permutation(df.height)
            df = df[order]
        a, b = _cut(df.height, cfg.split.fractions)
        parts = {
            "train": Frame(df[:a], frame.files),
            "valid": Frame(df[a:b], frame.files),
            "test": Frame(df[b:], frame.files),
        }
    for name, part in parts.items():
        if part.df.height == 0:
            raise DataError(
                f"the {name} split is empty (split method {method!r}, fractions {list(cfg.split.fractions)}, "
                f"{frame.df.height} rows); expected at least one row in each split",
                file=", ".join(part.files) if part.files else None,
            )
    return parts


def time_seconds(s: pl.Series) -> pl.Series:
    """A time column as int64 unix seconds (integers are taken as seconds already)."""
    if s.dtype.is_temporal():
        return s.cast(pl.Datetime("us")).dt.epoch("s")
    return s.cast(pl.Int64)
