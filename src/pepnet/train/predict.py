"""Inference over a whole split: :func:`predict_probs` (one process, or every rank scoring a block)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.batches import Batch, BatchLoader, TensorData
from .distributed import DistContext, gather_rows


class _RowBlock:
    """Rows ``[lo, hi)`` of a TensorData, with the same interface (``len``, ``batch``)."""

    def __init__(self, data: TensorData, lo: int, hi: int):
        self.data, self.lo, self.hi = data, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def batch(self, index: slice) -> Batch:
        return self.data.batch(slice(self.lo + index.start, self.lo + index.stop))


@torch.no_grad()
def _predict_local(model: nn.Module, data: TensorData | _RowBlock, batch_size: int,
                   device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    for batch in BatchLoader(data, batch_size):  # type: ignore[arg-type]  # _RowBlock has TensorData's interface
        b = batch.to(device)
        out.append(torch.sigmoid(model(b.sparse, b.dense).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def predict_probs(model: nn.Module, data: TensorData, batch_size: int, device: torch.device,
                  ctx: DistContext | None = None) -> np.ndarray:
    """Probabilities float32 [N, T] for every row of ``data`` in order (the model in eval mode); with several
    ranks in ``ctx`` each scores a contiguous block and the blocks are gathered, so the result equals a single
    process's."""
    if ctx is None or not ctx.active:
        return _predict_local(model, data, batch_size, device)
    n = len(data)
    lo, hi = ctx.rank * n // ctx.world, (ctx.rank + 1) * n // ctx.world
    local = _predict_local(model, _RowBlock(data, lo, hi), batch_size, device)
    if local.size == 0:
        local = np.zeros((0, int(data.labels.shape[1])), dtype=np.float32)
    return gather_rows(local, ctx.world, ctx.comm_device())


__all__ = ["predict_probs"]
