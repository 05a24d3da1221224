"""TaskTowers: one MLP per task, stored as stacked weights so all towers run in one batched matmul.

Tower t owns slice t of every weight tensor: no two tasks share a weight. Where every tower reads the same
input (the first layer, unless a gate scales its input), the T layers run as one plain GEMM against the
weights laid side by side ([in, T * w]), instead of a batched one on T stride-0 copies of the input.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .dropout import FastDropout


class TaskTowers(nn.Module):
    """T independent MLPs ``in_dim -> hidden_units... -> 1``.

    forward(x, gates): x float [B, in_dim] (the same input for every task) or [T, B, in_dim];
    gates (optional) is one tensor per hidden layer, float [B, T, w], multiplying that layer's input
    (``gate_on="input"``, w = the layer's input width) or its output (``"output"``, w = its width);
    with ``gate_output_layer`` (input gating only) one more, [B, T, hidden_units[-1]], multiplies the
    output layer's input. Returns logits float [B, T].
    """

    def __init__(self, in_dim: int, hidden_units: list[int], n_tasks: int, dropout: float = 0.0,
                 gate_on: str = "input", gate_output_layer: bool = False):
        super().__init__()
        self.n_tasks, self.gate_on = n_tasks, gate_on
        self.gate_output_layer = gate_output_layer and gate_on == "input"  # "output" already gates that input
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
        self.dropout = FastDropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def gate_widths(self) -> list[int]:
        """Width each layer's gate must have, per task."""
        if self.gate_on == "input":
            return [w.shape[1] for w in self.weights] + ([self.out_weight.shape[1]] if self.gate_output_layer else [])
        return [w.shape[2] for w in self.weights]

    def forward(self, x: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = x
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            g = gates[layer].transpose(0, 1) if gates is not None else None      # [T, B, w]
            if h.dim() == 2 and (g is None or self.gate_on == "output"):          # shared input: one GEMM
                T, fan_in, fan_out = w.shape
                z = torch.addmm(b.reshape(-1), h, w.permute(1, 0, 2).reshape(fan_in, T * fan_out))
                z = z.view(-1, T, fan_out).transpose(0, 1)                        # [T, B, w] view
            else:
                h = h.unsqueeze(0).expand(self.n_tasks, -1, -1) if h.dim() == 2 else h  # [T, B, D]
                if g is not None and self.gate_on == "input":
                    h = h * g
                z = torch.baddbmm(b, h, w)
            h = self.dropout(torch.relu(z))
            if g is not None and self.gate_on == "output":
                h = h * g
        if gates is not None and self.gate_output_layer:
            h = h * gates[-1].transpose(0, 1)
        return torch.baddbmm(self.out_bias, h, self.out_weight).squeeze(-1).transpose(0, 1)
