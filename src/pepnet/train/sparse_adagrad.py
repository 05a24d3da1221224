"""Adagrad whose sparse (row-wise) update avoids ``Tensor.coalesce``.

``torch.optim.Adagrad`` coalesces each sparse gradient first; on CUDA its coalesce kernel took a quarter
of a whole PEPNet training step at batch 65,536 (BENCHMARKS.md). Here the rows of the batch are made
unique with ``torch.unique`` (a radix sort), their gradients summed with ``index_add_``, and only those
rows of the accumulator and the parameter are read and written. Same update, same state (``step``,
``sum``) and same ``state_dict`` as ``torch.optim.Adagrad`` (checked in tests/bench/test_sparse_adagrad.py);
dense gradients take the ordinary dense Adagrad update. Supports lr_decay, weight_decay (dense only,
as torch), eps and initial_accumulator_value; not maximize, not foreach/fused options.
"""
from __future__ import annotations

import torch


class RowWiseAdagrad(torch.optim.Adagrad):
    """Drop-in ``torch.optim.Adagrad`` with a faster update for sparse gradients (see module docstring)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, lr_decay, eps, wd = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                clr = lr / (1 + (state["step"].item() - 1) * lr_decay)
                grad, acc = p.grad, state["sum"]
                if grad.is_sparse:
                    if wd != 0:
                        raise RuntimeError("weight_decay is not supported with sparse gradients")
                    idx = grad._indices()[0]
                    vals = grad._values()
                    rows, inverse = torch.unique(idx, return_inverse=True)
                    g = torch.zeros((rows.numel(), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
                    g.index_add_(0, inverse, vals)                       # summed gradient of each row
                    s = acc.index_select(0, rows).addcmul_(g, g)
                    acc.index_copy_(0, rows, s)
                    p.index_add_(0, rows, g.div_(s.sqrt_().add_(eps)), alpha=-clr)
                else:
                    if wd != 0:
                        grad = grad.add(p, alpha=wd)
                    acc.addcmul_(grad, grad, value=1)
                    p.addcdiv_(grad, acc.sqrt().add_(eps), value=-clr)
        return loss
