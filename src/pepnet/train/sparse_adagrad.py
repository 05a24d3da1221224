"""Adagrad whose sparse (row-wise) update avoids ``Tensor.coalesce``.

``torch.optim.Adagrad`` coalesces each sparse gradient first; on CUDA its coalesce kernel took a quarter
of a whole PEPNet training step at batch 65,536 (BENCHMARKS.md). Here a sparse gradient takes one of two
routes, both the same update as torch's:

* a large table (more rows than ``whole_table_ratio`` times the gradient's), and every table off the CPU: the
  rows of the batch are made unique with ``torch.unique`` (a radix sort), their gradients summed with
  ``index_add_``, and only those rows of the accumulator and the parameter are read and written;
* a small table on CPU: the gradient is summed into a dense zero tensor of the table's shape and the whole table
  takes the dense update. A row outside the batch has gradient 0, which leaves its accumulator and its
  weights exactly as they were, so the result is the row-wise one; this skips the sort and runs torch's fused
  Adagrad kernel (Ciao's 31,752-row table at batch 1024: 1.1 instead of 2.5 ms a step).

Same state (``step``, ``sum``) and same ``state_dict`` as ``torch.optim.Adagrad`` (checked in
tests/bench/test_sparse_adagrad.py); dense gradients take the dense update (torch's fused kernel on CPU).
Supports lr_decay, weight_decay (dense only, as torch), eps and initial_accumulator_value; not maximize, not
foreach/fused options.
"""
from __future__ import annotations

import torch

WHOLE_TABLE_RATIO = 8


def takes_whole_table(rows: int, grad_rows: int, device: torch.device, ratio: float = WHOLE_TABLE_RATIO) -> bool:
    """Whether RowWiseAdagrad applies a sparse gradient of ``grad_rows`` rows on a table of ``rows`` rows on
    ``device`` to the whole table (see :class:`RowWiseAdagrad`; the memory plan asks the same question)."""
    return device.type == "cpu" and rows <= ratio * grad_rows


class RowWiseAdagrad(torch.optim.Adagrad):
    """Drop-in ``torch.optim.Adagrad`` with a faster update for sparse gradients (see module docstring).

    ``whole_table_ratio``: on CPU, a sparse gradient of a table with at most this many times its number of gradient
    rows is applied to the whole table (2 threads, 20,480 gradient rows of width 16: the whole table was faster up
    to about 15 times as many rows, and 5 times slower at 50 times). On other devices (not measured) every table
    takes the row-wise route."""

    whole_table_ratio = WHOLE_TABLE_RATIO

    def __init__(self, params, *args, **kwargs):  # torch.optim.Adagrad's arguments
        super().__init__(params, *args, **kwargs)
        self._table_buffers: dict[torch.Tensor, torch.Tensor] = {}  # parameter -> its dense gradient (small tables)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                grad, acc = p.grad, state["sum"]
                if grad.is_sparse:
                    if wd != 0:
                        raise RuntimeError("weight_decay is not supported with sparse gradients")
                    idx, vals = grad._indices()[0], grad._values()
                    if not takes_whole_table(p.shape[0], idx.numel(), p.device, self.whole_table_ratio):
                        self._rows_update(p, idx, vals, acc, self._lr(group, state["step"]), eps)
                        continue
                    grad = self._table_buffer(p).zero_().index_add_(0, idx, vals)   # rows outside the batch: 0
                self._dense_update(p, grad, acc, state["step"], group)
        return loss

    def _table_buffer(self, p: torch.Tensor) -> torch.Tensor:
        """A tensor of p's shape kept from step to step for p's dense gradient (a fresh one each step comes from
        fresh pages of memory, whose first touch cost a fifth of the update on Ciao)."""
        if p not in self._table_buffers:
            self._table_buffers[p] = torch.empty_like(p)
        return self._table_buffers[p]

    @staticmethod
    def _lr(group: dict, step: torch.Tensor) -> float:
        """The learning rate of this step (``step`` counts it), decayed as torch's Adagrad does."""
        return group["lr"] / (1 + (step.item() - 1) * group["lr_decay"])

    @staticmethod
    def _rows_update(p: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, acc: torch.Tensor, clr: float,
                     eps: float) -> None:
        """Adagrad on the rows ``idx`` [n] of p [N, ...] with gradients vals [n, ...] (repeated rows summed)."""
        rows, inverse = torch.unique(idx, return_inverse=True)
        g = torch.zeros((rows.numel(), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
        g.index_add_(0, inverse, vals)                       # summed gradient of each row
        s = acc.index_select(0, rows).addcmul_(g, g)
        acc.index_copy_(0, rows, s)
        p.index_add_(0, rows, g.div_(s.sqrt_().add_(eps)), alpha=-clr)

    @classmethod
    def _dense_update(cls, p: torch.Tensor, grad: torch.Tensor, acc: torch.Tensor, step: torch.Tensor,
                      group: dict) -> None:
        """Adagrad on all of p with the dense gradient grad (``step`` already counts this step)."""
        lr, lr_decay, eps, wd = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        if p.device.type == "cpu":  # torch's fused Adagrad kernel is CPU-only (torch 2.13)
            torch._fused_adagrad_([p], [grad], [acc], [step], lr=lr, lr_decay=lr_decay, weight_decay=wd, eps=eps,
                                  maximize=False)
            return
        if wd != 0:
            grad = grad.add(p, alpha=wd)
        acc.addcmul_(grad, grad, value=1)
        p.addcdiv_(grad, acc.sqrt().add_(eps), value=-cls._lr(group, step))
