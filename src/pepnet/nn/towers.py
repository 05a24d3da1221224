"""TaskTowers: one MLP per task, its weights stored stacked ([T, in, out] per layer).

Tower t owns slice t of every weight tensor: no two tasks share a weight. The towers run one after the other,
each through all its layers, so that a tower's activations ([B, w], a few MB) stay in the CPU's cache between
the GEMM, the ReLU, the dropout and the gate product; all T towers stacked ([T, B, w]) outgrow it and every
element-wise pass goes to memory (``pepnet bench --ablations`` times both). For the same reason the first layers
are T GEMMs, not one against the weights laid side by side ([in, T * w]), even where every tower reads the same
input: that GEMM's [B, T * w] output left the cache (matched config of BENCHMARKS.md, batch 4096: inference 2%
and training 1-2% slower with it, in-process A/B).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .dropout import FastDropout


class TaskTowers(nn.Module):
    """T independent MLPs ``in_dim -> hidden_units... -> 1``.

    forward(x, gate): x float [B, in_dim], the same input for every task, or [T, B, in_dim], one per task;
    ``gate`` (optional) is called as ``gate(layer, t)`` for task t's gate of each hidden layer, float [B, w],
    multiplying that layer's input (``gate_on="input"``, w = the layer's input width) or its output
    (``"output"``, w = its width); with
    ``gate_output_layer`` (input gating only) ``gate(len(hidden_units), t)``, [B, hidden_units[-1]], multiplies
    the output layer's input. Returns logits float [B, T], or [B, len(tasks)] after :meth:`select_tasks`.
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
        self.dropout = FastDropout(dropout)
        self.tasks: tuple[int, ...] = tuple(range(n_tasks))  # the towers forward runs, in output order

    def select_tasks(self, tasks: Sequence[int]) -> None:
        """From now on run only the towers of ``tasks`` (indices, in the order forward returns their logits); the
        other towers are not computed at all (an export that serves the reported tasks skips the auxiliary ones)."""
        if not tasks or any(not 0 <= t < self.n_tasks for t in tasks) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct indices in [0, {self.n_tasks}); got {list(tasks)}")
        self.tasks = tuple(tasks)

    @property
    def gate_widths(self) -> list[int]:
        """Width each layer's gate must have, per task."""
        if self.gate_on == "input":
            return [w.shape[1] for w in self.weights] + ([self.out_weight.shape[1]] if self.gate_output_layer else [])
        return [w.shape[2] for w in self.weights]

    def forward(self, x: torch.Tensor, gate: Callable[[int, int], torch.Tensor] | None = None) -> torch.Tensor:
        weights = [w.unbind(0) for w in self.weights]                  # per layer: T x [in, out]
        biases = [b.unbind(0) for b in self.biases]                    # per layer: T x [1, out]
        logits = []
        for t in self.tasks:
            h = x if x.dim() == 2 else x[t]
            for layer in range(len(weights)):
                g = gate(layer, t) if gate is not None else None
                if g is not None and self.gate_on == "input":
                    h = h * g
                z = torch.addmm(biases[layer][t], h, weights[layer][t])
                h = self.dropout(torch.relu(z), z)  # the draw is made for z, in memory already
                if g is not None and self.gate_on == "output":
                    h = h * g
            if gate is not None and self.gate_output_layer:
                h = h * gate(len(weights), t)
            logits.append(torch.addmm(self.out_bias[t, 0], h, self.out_weight[t]))
        return torch.cat(logits, dim=1)


def select_tasks(model: nn.Module, tasks: Sequence[int]) -> None:
    """:meth:`TaskTowers.select_tasks` on every TaskTowers of ``model`` (every model of pepnet.nn ends in
    TaskTowers): its logits become [B, len(tasks)], the towers of the other tasks are skipped."""
    towers = [m for m in model.modules() if isinstance(m, TaskTowers)]
    if not towers:
        raise ValueError(f"{type(model).__name__} has no TaskTowers whose tasks could be selected")
    for m in towers:
        m.select_tasks(tasks)
