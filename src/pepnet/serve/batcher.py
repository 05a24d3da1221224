"""Micro-batching: concurrent score requests coalesced into one encoding and one forward pass.

Requests wait in a queue. The batch loop takes the first, then keeps collecting for at most ``max_wait_s``
(only while other requests are still being read, so a lone request is not delayed) or until the next request
would take the batch over ``max_rows`` rows (that request opens the next batch; a batch stays within the row
count that small-frame encoding covers, see :mod:`pepnet.data.keyindex`), and scores the batch in one worker
thread. While that thread works, new requests queue
up and form the next batch, so under load the batches grow by themselves.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..errors import DataError
from ..export.serving import ExportedModel, frame_of


@dataclass
class Job:
    """One request's rows, the model version that parsed them, and where its result goes."""

    model: ExportedModel
    df: pl.DataFrame
    future: asyncio.Future


@dataclass
class Scored:
    """The outcome of one batch: per job, probabilities float32 [n_job, T] or the DataError it raised; and the
    out-of-vocabulary (or null) ids per sparse field over the batch."""

    results: list[np.ndarray | DataError]
    oov: dict[str, int] = field(default_factory=dict)


def _oov(model: ExportedModel, sparse: np.ndarray) -> dict[str, int]:
    """Ids on each vocabulary field's row 0 (out of vocabulary, unseen, or null) in encoded rows [N, Fs]."""
    vocab_fields = set(model.encoder.vocabs)
    return {f.name: int((sparse[:, j] == f.offset).sum()) for j, f in enumerate(model.encoder.sparse_fields)
            if f.name in vocab_fields}


def score_jobs(model: ExportedModel, frames: list[pl.DataFrame]) -> Scored:
    """Score the frames of one model: concatenated into one encoding + forward pass when the model's encoding is
    row-independent; one at a time otherwise, and when the batch raises (so that only the bad request fails)."""
    if len(frames) > 1 and model.row_independent:
        try:
            sparse, dense = model.encode(frame_of(pl.concat(frames, how="vertical")))
            probs = model.forward(sparse, dense)
            ends = np.cumsum([f.height for f in frames])[:-1]
            return Scored(list(np.split(probs, ends)), _oov(model, sparse.numpy()))
        except DataError:
            pass
    out = Scored([])
    for df in frames:
        try:
            sparse, dense = model.encode(frame_of(df))
        except DataError as exc:
            out.results.append(exc)
            continue
        out.results.append(model.forward(sparse, dense))
        for k, v in _oov(model, sparse.numpy()).items():
            out.oov[k] = out.oov.get(k, 0) + v
    return out


class MicroBatcher:
    """Coalesces :meth:`submit` calls; ``on_batch(rows, jobs, oov)`` is called after each batch (metrics)."""

    def __init__(self, max_wait_s: float, max_rows: int, on_batch=None):
        self.max_wait_s, self.max_rows, self.on_batch = max_wait_s, max_rows, on_batch
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.arriving = 0  # requests being read or parsed: worth waiting for
        self.held: Job | None = None  # the request that did not fit into the last batch: it opens the next one
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pepnet-score")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, model: ExportedModel, df: pl.DataFrame) -> np.ndarray:
        """Probabilities float32 [rows, T] of ``df`` scored by ``model``; raises the DataError of its rows."""
        job = Job(model, df, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _collect(self) -> list[Job]:
        first, self.held = self.held or await self.queue.get(), None
        jobs, rows = [first], first.df.height
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_rows:
            if self.queue.empty():
                left = deadline - time.perf_counter()
                if left <= 0 or not self.arriving:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), min(left, 0.0005))
                except TimeoutError:
                    continue
            else:
                job = self.queue.get_nowait()
            if rows + job.df.height > self.max_rows:
                self.held = job
                break
            jobs.append(job)
            rows += job.df.height
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            jobs = [j for j in jobs if not j.future.done()]  # a request that timed out is not scored
            by_model: dict[int, list[Job]] = {}
            for j in jobs:
                by_model.setdefault(id(j.model), []).append(j)
            for group in by_model.values():
                try:
                    scored = await loop.run_in_executor(self.executor, score_jobs, group[0].model,
                                                        [j.df for j in group])
                except Exception as exc:  # noqa: BLE001 - an unexpected failure fails its requests, not the loop
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                for j, r in zip(group, scored.results, strict=True):
                    if j.future.done():
                        continue
                    if isinstance(r, Exception):
                        j.future.set_exception(r)
                    else:
                        j.future.set_result(r)
                if self.on_batch:
                    self.on_batch(sum(j.df.height for j in group), len(group), scored.oov)
