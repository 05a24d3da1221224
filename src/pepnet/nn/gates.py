"""Gate NU (Gate Neural Unit) of PEPNet: ``delta = gamma * sigmoid(W2 ReLU(W1 x + b1) + b2)``."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
from torch import nn


def _linear_init(weight: torch.Tensor, bias: torch.Tensor, fan_in: int) -> None:
    """nn.Linear's default initialisation, applied to each group slice."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


class GateNU(nn.Module):
    """x float [B, in_dim] -> delta float [B, groups * out_dim], each element in [0, gamma].

    ``groups`` independent gates (each with its own two layers) read the same input; ``groups=1``
    is the paper's single gate. A freshly initialised gate outputs about gamma / 2 = 1 on average,
    so an untrained network behaves as if ungated.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, gamma: float = 2.0, groups: int = 1):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden, self.gamma, self.groups = in_dim, out_dim, hidden, gamma, groups
        self.w1 = nn.Parameter(torch.empty(groups, in_dim, hidden))
        self.b1 = nn.Parameter(torch.empty(groups, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(groups, hidden, out_dim))
        self.b2 = nn.Parameter(torch.empty(groups, 1, out_dim))
        _linear_init(self.w1, self.b1, in_dim)
        _linear_init(self.w2, self.b2, hidden)

    def first_layer(self, x: torch.Tensor, const: torch.Tensor | None = None,
                    groups: Sequence[int] | None = None) -> torch.Tensor:
        """The first layers of the groups ``groups`` (default: all, in order), ``ReLU([x, const] W1 + b1)``: float
        [B, len(groups) * hidden], one GEMM against [in, len(groups) * hidden] (every group reads the same input).
        ``const`` (optional) float [B, C]: the last C input columns, taken apart because no gradient is wanted for
        them (a detached input): they meet their rows of W1 in a GEMM of their own, whose backward computes no
        input gradient for them, and x the first ``in_dim - C`` rows."""
        w1: torch.Tensor = self.w1
        b1: torch.Tensor = self.b1
        if groups is not None and list(groups) != list(range(self.groups)):
            w1, b1 = w1[list(groups)], b1[list(groups)]
        # one group: w1[0], whose gradient keeps w1's layout (a permuted view's would not, and DDP warns)
        w1 = w1[0] if len(w1) == 1 else w1.permute(1, 0, 2).reshape(self.in_dim, -1)
        b1 = b1.reshape(-1)
        if const is None:
            return torch.relu(torch.addmm(b1, x, w1))
        k = x.shape[1]
        return torch.relu(torch.addmm(torch.addmm(b1, const, w1[k:]), x, w1[:k]))

    def forward(self, x: torch.Tensor, const: torch.Tensor | None = None) -> torch.Tensor:
        """x float [B, in_dim - C] and const (optional, see :meth:`first_layer`) float [B, C] -> delta."""
        groups = [part() for part in self.parts(x, self.groups, const).values()]  # one per group, [B, out] each
        return groups[0] if self.groups == 1 else torch.cat(groups, dim=1)

    def parts(self, x: torch.Tensor, n_parts: int, const: torch.Tensor | None = None,
              only: Sequence[int] | None = None) -> dict[int, Callable[[], torch.Tensor]]:
        """The gate output of x float [B, in_dim] (or of x and const, as in :meth:`first_layer`) in n parts, each
        computed when its function is called: part s, float [B, w], equals ``forward(x).view(B, n_parts, w)[:, s]``.
        With one group per part (``groups == n_parts``) part s is group s (w = out_dim); with one group (the
        paper's split gate) it is columns [s*w, (s+1)*w) of its output, w = out_dim / n_parts. Returns
        {s: part s} for the parts ``only`` (default: all); with one group per part the others' first layers are not
        computed either (a model serving some of its tasks). The first layers run at once (one GEMM); computing the
        second layer one part at a time lets task tower s use its gate while it is in cache."""
        wanted = list(range(n_parts)) if only is None else list(only)
        operands: Iterable[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]
        if self.groups == n_parts:
            h = self.first_layer(x, const, wanted)
            w2, b2 = self.w2.unbind(0), self.b2.unbind(0)  # unbind: one backward (a stack), not one per group
            operands = zip(wanted, h.split(self.hidden, dim=1), [w2[s] for s in wanted], [b2[s] for s in wanted],
                           strict=True)
        elif self.groups == 1 and self.out_dim % n_parts == 0:
            h, w = self.first_layer(x, const), self.out_dim // n_parts
            w2, b2 = self.w2[0].split(w, dim=1), self.b2[0].split(w, dim=1)
            operands = ((s, h, w2[s], b2[s]) for s in wanted)
        else:
            raise ValueError(f"cannot cut {self.groups} group(s) of width {self.out_dim} into {n_parts} parts")
        return {s: partial(self._second_layer, *ops) for s, *ops in operands}

    def _second_layer(self, h: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(torch.addmm(b2, h, w2))

    def extra_repr(self) -> str:
        return f"in={self.in_dim}, out={self.out_dim}, hidden={self.hidden}, gamma={self.gamma}, groups={self.groups}"
