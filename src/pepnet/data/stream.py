"""Training data larger than RAM: parquet row groups read, encoded and sliced into batches on the fly.

:class:`ParquetStream` reads one row group at a time (pyarrow), encodes it with a fitted
:class:`~pepnet.data.encoder.Encoder` (``transform``, evaluation semantics: statistics come from the
encoder's tables) and yields :class:`~pepnet.data.batches.Batch` slices; a background thread keeps at
most ``prefetch`` encoded row groups ahead, so peak memory is bounded by the row-group size, not by the
number of rows. Rows are yielded in file order (shuffle within a row group with ``shuffle=True``).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow.parquet as pq
import torch

from .batches import Batch, Prefetcher, TensorData
from .encoder import Encoder


class ParquetStream:
    """Batches of ``batch_size`` rows from parquet ``files``, encoded chunk by chunk.

    A batch never straddles two row groups (the last batch of a group may be shorter).
    """

    def __init__(self, files: list[str | Path], encoder: Encoder, batch_size: int, prefetch: int = 2,
                 shuffle: bool = False, seed: int = 0):
        self.files, self.encoder, self.batch_size = [Path(f) for f in files], encoder, batch_size
        self.prefetch, self.shuffle, self.seed = prefetch, shuffle, seed

    def __len__(self) -> int:
        n = 0
        for f in self.files:
            meta = pq.ParquetFile(f).metadata
            n += sum(-(-meta.row_group(i).num_rows // self.batch_size) for i in range(meta.num_row_groups))
        return n

    def chunks(self) -> Iterator[TensorData]:
        """Encoded row groups, one at a time."""
        for f in self.files:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                df = cast(pl.DataFrame, pl.from_arrow(pf.read_row_group(i)))  # a Table gives a DataFrame
                yield TensorData(self.encoder.transform(df))

    def _batches(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed)
        for chunk in self.chunks():
            n = len(chunk)
            order = torch.randperm(n, generator=g) if self.shuffle else None
            for s in range(0, n, self.batch_size):
                yield chunk.batch(slice(s, s + self.batch_size) if order is None else order[s:s + self.batch_size])

    def __iter__(self) -> Iterator[Batch]:
        if self.prefetch > 0:
            return iter(Prefetcher(self._batches(), torch.device("cpu"), self.prefetch))
        return self._batches()
