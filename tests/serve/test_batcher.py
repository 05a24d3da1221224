"""MicroBatcher's batch forming: requests in arrival order, no batch over ``max_rows`` unless one request is."""
from __future__ import annotations

import asyncio

import polars as pl

from pepnet.serve.batcher import Job, MicroBatcher


def _batches(sizes: list[int], max_rows: int) -> list[list[int]]:
    """The row counts of the batches that :meth:`MicroBatcher._collect` forms from queued requests of ``sizes``."""

    async def go() -> list[list[int]]:
        batcher = MicroBatcher(max_wait_s=0.0, max_rows=max_rows)
        loop = asyncio.get_running_loop()
        for n in sizes:
            batcher.queue.put_nowait(Job(None, pl.DataFrame({"x": range(n)}), loop.create_future()))  # type: ignore[arg-type]
        out = []
        while batcher.held is not None or not batcher.queue.empty():
            out.append([job.df.height for job in await batcher._collect()])
        batcher.executor.shutdown()
        return out

    return asyncio.run(go())


def test_batches_stay_within_max_rows_and_keep_arrival_order():
    # 200-row ranking requests into batches of at most 1,000 rows: five per batch, the sixth opens the next one
    assert _batches([200] * 12, 1000) == [[200] * 5, [200] * 5, [200] * 2]
    # the request that does not fit is held over, not skipped or reordered
    assert _batches([600, 300, 200, 100], 1000) == [[600, 300], [200, 100]]


def test_a_request_over_max_rows_is_a_batch_of_its_own():
    assert _batches([50, 1500, 50], 1000) == [[50], [1500], [50]]
