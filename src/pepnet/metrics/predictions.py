"""A run's test predictions on disk (``test_predictions.parquet``), for bootstrap intervals and reports.

Columns: ``domain`` (name), ``user`` (the encoder's user code; only equality matters), then per reported task
``y_<task>`` (0 / 1, null where the row has no label) and ``p_<task>`` (predicted probability), in test order.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pepnet.fileio import atomic_write

__all__ = ["Predictions", "read_predictions", "write_predictions"]


@dataclass
class Predictions:
    """Test rows of one run: labels and probs [N, T] (``nan`` = no label), domain codes [N] into
    ``domain_names``, user codes [N], and the task names."""

    labels: np.ndarray
    probs: np.ndarray
    domain: np.ndarray
    user: np.ndarray
    domain_names: list[str]
    tasks: list[str]


def write_predictions(path: str | Path, probs: np.ndarray, data, columns: list[int], tasks: list[str]) -> None:
    """Write ``probs`` [N, T] beside the labels (columns ``columns`` of ``data.labels``), domain and user of
    ``data`` (an :class:`pepnet.data.encoder.EncodedData`) to ``path``, atomically."""
    import polars as pl

    names = np.asarray(data.domain_names, dtype=object)[data.domain]
    df = pl.DataFrame({"domain": names.tolist(), "user": data.user.astype(np.int64)})
    df = df.with_columns([pl.Series(f"y_{t}", data.labels[:, c].astype(np.float64), nan_to_null=True)
                          for t, c in zip(tasks, columns, strict=True)]
                         + [pl.Series(f"p_{t}", probs[:, j].astype(np.float64)) for j, t in enumerate(tasks)])
    buf = io.BytesIO()
    df.write_parquet(buf)
    atomic_write(path, buf.getvalue())


def read_predictions(path: str | Path) -> Predictions:
    """Read a file written by :func:`write_predictions`."""
    import polars as pl

    df = pl.read_parquet(path)
    tasks = [c[2:] for c in df.columns if c.startswith("p_")]
    names, codes = np.unique(df["domain"].to_numpy().astype(str), return_inverse=True)
    return Predictions(labels=df.select([f"y_{t}" for t in tasks]).to_numpy().astype(np.float64),
                       probs=df.select([f"p_{t}" for t in tasks]).to_numpy().astype(np.float64),
                       domain=codes.reshape(-1), user=df["user"].to_numpy(), domain_names=names.tolist(), tasks=tasks)
