"""Batches: slices of pre-built contiguous tensors; no per-row Python, no per-sample collate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .encoder import EncodedData


@dataclass
class Batch:
    """One mini-batch. sparse int64 [B, Fs] (fused-table ids), dense float32 [B, Fd], labels float32 [B, T] (NaN = missing)."""

    sparse: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.sparse, self.dense, self.labels)))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class TensorData:
    """An EncodedData as torch tensors (zero-copy views of the numpy arrays)."""

    def __init__(self, data: EncodedData):
        self.sparse = torch.from_numpy(np.ascontiguousarray(data.sparse))
        self.dense = torch.from_numpy(np.ascontiguousarray(data.dense))
        self.labels = torch.from_numpy(np.ascontiguousarray(data.labels))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | slice) -> Batch:
        return Batch(self.sparse[index], self.dense[index], self.labels[index])


class BatchLoader:
    """Iterates over mini-batches of a TensorData.

    With ``shuffle`` a new permutation is drawn each epoch from a generator seeded with
    ``seed + epoch`` (so a resumed run sees the same order); ``start_batch`` skips the batches
    already done in the current epoch. ``rank`` / ``world`` give each process its own shard.
    """

    def __init__(self, data: TensorData, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world: int = 1):
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world = drop_last, rank, world
        self.epoch, self.start_batch = 0, 0

    def _order(self) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.data), generator=g)

    def __len__(self) -> int:
        n = len(self.data) // self.world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        n = len(self.data)
        per_rank = n // self.world if self.world > 1 else n
        lo = self.rank * per_rank
        for b in range(self.start_batch, len(self)):
            start = lo + b * self.batch_size
            stop = min(start + self.batch_size, lo + per_rank)
            yield self.data.batch(slice(start, stop) if order is None else order[start:stop])
        self.start_batch = 0
