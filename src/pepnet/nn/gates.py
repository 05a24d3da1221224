"""Gate NU (Gate Neural Unit) of PEPNet: ``delta = gamma * sigmoid(W2 ReLU(W1 x + b1) + b2)``."""
from __future__ import annotations

import math

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            h = torch.relu(torch.addmm(self.b1[0], x, self.w1[0]))
            return self.gamma * torch.sigmoid(torch.addmm(self.b2[0], h, self.w2[0]))
        # first layers of all groups read the same x: one GEMM against [in, G * hidden]
        G, H = self.groups, self.hidden
        h = torch.relu(torch.addmm(self.b1.reshape(-1), x, self.w1.permute(1, 0, 2).reshape(self.in_dim, G * H)))
        h = h.view(-1, G, H).transpose(0, 1)                        # [G, B, hidden] view
        out = self.gamma * torch.sigmoid(torch.baddbmm(self.b2, h, self.w2))  # [G, B, out]
        return out.permute(1, 0, 2).reshape(x.shape[0], self.groups * self.out_dim)

    def extra_repr(self) -> str:
        return f"in={self.in_dim}, out={self.out_dim}, hidden={self.hidden}, gamma={self.gamma}, groups={self.groups}"
