"""Batches: slices of pre-built contiguous tensors; no per-row Python, no per-sample collate."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .encoder import EncodedData


@dataclass
class Batch:
    """One mini-batch. sparse int64 [B, Fs] (fused-table ids), dense float32 [B, Fd], labels float32 [B, T]
    (NaN = missing)."""

    sparse: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.sparse, self.dense, self.labels)))

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in (self.sparse, self.dense, self.labels)))

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
        if isinstance(index, torch.Tensor) and index.device != self.sparse.device:
            index = index.to(self.sparse.device, non_blocking=True)
        return Batch(self.sparse[index], self.dense[index], self.labels[index])

    def to(self, device: torch.device | str) -> TensorData:
        """The same rows on ``device`` (e.g. the whole split on the GPU, so batches are device-side slices)."""
        out = TensorData.__new__(TensorData)
        out.sparse, out.dense, out.labels = (t.to(device) for t in (self.sparse, self.dense, self.labels))
        return out


class BatchLoader:
    """Iterates over mini-batches of a TensorData.

    With ``shuffle`` a new permutation is drawn each epoch from a generator seeded with
    ``seed + epoch`` (so a resumed run sees the same order); ``start_batch`` skips the batches
    already done in the current epoch. ``rank`` / ``world`` give each process its own shard.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
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


class Prefetcher:
    """Prepares the batches of ``batches`` ahead in a background thread, at most ``depth`` in flight.

    On CUDA each batch is pinned and copied to ``device`` non-blocking on a side stream, so the copy
    overlaps the training step; the consumer's stream waits for the copy before using the batch.
    On other devices the thread only runs ``batches`` ahead (slicing / gathering rows).
    Errors in the thread are re-raised in the consumer; leaving the loop early stops the thread.
    """

    _END = object()

    def __init__(self, batches: Iterable[Batch], device: torch.device | str, depth: int = 2):
        self.batches, self.device, self.depth = batches, torch.device(device), max(1, depth)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        item: object = self._END
        try:
            for b in self.batches:
                event = None
                if cuda:
                    b = b if b.sparse.is_cuda else b.pin_memory()
                    with torch.cuda.stream(stream):
                        b = b.to(self.device, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(stream)
                while not stop.is_set():
                    try:
                        q.put((b, event), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # re-raised in the consumer
            item = exc
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Batch]:
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(q, stop), daemon=True, name="pepnet-prefetch")
        worker.start()
        try:
            while True:
                item = q.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                b, event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for t in (b.sparse, b.dense, b.labels):
                        t.record_stream(current)
                yield b
        finally:
            stop.set()
            worker.join()
