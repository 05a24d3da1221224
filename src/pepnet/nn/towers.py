"""TaskTowers: one MLP per task, stored as stacked weights so all towers run in one batched matmul.

Tower t owns slice t of every weight tensor: no two tasks share a weight.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TaskTowers(nn.Module):
    """T independent MLPs ``in_dim -> hidden_units... -> 1``.

    forward(x, gates): x float [B, in_dim] (the same input for every task) or [T, B, in_dim];
    gates (optional) is one tensor per hidden layer, float [B, T, w], multiplying that layer's input
    (``gate_on="input"``, w = the layer's input width) or its output (``"output"``, w = its width).
    Returns logits float [B, T].
    """

    def __init__(self, in_dim: int, hidden_units: list[int], n_tasks: int, dropout: float = 0.0,
                 gate_on: str = "input"):
        super().__init__()
        self.n_tasks, self.gate_on = n_tasks, gate_on
        dims = [in_dim, *hidden_units]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            self.weights.append(nn.Parameter(torch.empty(n_tasks, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.empty(n_tasks, 1, fan_out)))
        self.out_weight = nn.Parameter(torch.empty(n_tasks, dims[-1], 1))
        self.out_bias = nn.Parameter(torch.empty(n_tasks, 1, 1))
        for w, b in zip([*self.weights, self.out_weight], [*self.biases, self.out_bias], strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])  # nn.Linear's default, per task slice
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def gate_widths(self) -> list[int]:
        """Width each layer's gate must have, per task."""
        if self.gate_on == "input":
            return [w.shape[1] for w in self.weights]
        return [w.shape[2] for w in self.weights]

    def forward(self, x: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.n_tasks, -1, -1) if x.dim() == 2 else x  # [T, B, D]
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            g = gates[layer].transpose(0, 1) if gates is not None else None      # [T, B, w]
            if g is not None and self.gate_on == "input":
                h = h * g
            h = self.dropout(torch.relu(torch.baddbmm(b, h, w)))
            if g is not None and self.gate_on == "output":
                h = h * g
        return torch.baddbmm(self.out_bias, h, self.out_weight).squeeze(-1).transpose(0, 1)
