"""PPNet: parameter personalisation of every task tower layer by prior features (PEPNet, Sec. 3.4)."""
from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from .gates import GateNU
from .towers import TaskTowers


class PPNet(nn.Module):
    """Task towers whose every hidden layer is scaled by a Gate NU of the prior features.

    Gate input: ``prior ++ stopgrad(O_ep)`` (prior = E(F_u) ++ E(F_i) ++ E(F_a), flattened; it is
    NOT detached, so the prior embeddings learn through the gates). One Gate NU per layer, its output
    split into T slices of the layer's width (``gate_mode="split"``) or one Gate NU per task
    (``"per_task"``). Task t at layer l: ``O_t = delta_t * H_t``, ``H_t' = relu(O_t W_t + b_t)``; with
    ``gate_output_layer`` the output layer's input is gated too (one more Gate NU).

    forward(o_ep, prior, with_gates): o_ep float [B, D]; prior float [B, P] (P may be 0).
    Returns (logits float [B, T], gates): with ``with_gates`` a list of float [B, T, w_l], one per gate layer;
    otherwise an empty list. Task t's gate of a layer is computed when tower t reaches that layer
    (:meth:`GateNU.parts`), while the tower's activations are in cache.
    """

    def __init__(self, in_dim: int, prior_dim: int, hidden_units: list[int], n_tasks: int, gate_hidden: int = 64,
                 gamma: float = 2.0, gate_on: str = "input", gate_mode: str = "split", stop_gradient: bool = True,
                 dropout: float = 0.0, gate_output_layer: bool = False):
        super().__init__()
        self.n_tasks, self.stop_gradient = n_tasks, stop_gradient
        self.towers = TaskTowers(in_dim, hidden_units, n_tasks, dropout=dropout, gate_on=gate_on,
                                 gate_output_layer=gate_output_layer)
        gate_in = prior_dim + in_dim
        per_task = gate_mode == "per_task"
        self.gates = nn.ModuleList(
            GateNU(
                gate_in,
                w if per_task else n_tasks * w,
                hidden=gate_hidden,
                gamma=gamma,
                groups=n_tasks if per_task else 1,
            )
            for w in self.towers.gate_widths
        )

    def forward(self, o_ep: torch.Tensor, prior: torch.Tensor,
                with_gates: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # stop_gradient: O_ep enters the gates' first layer apart, which then computes no gradient for it
        x, const = (prior, o_ep.detach()) if self.stop_gradient else (torch.cat([prior, o_ep], dim=1), None)
        parts: dict[int, dict[int, Callable[[], torch.Tensor]]] = {}  # layer -> its gate's parts (GateNU.parts)
        deltas: dict[tuple[int, int], torch.Tensor] = {}      # (layer, task) -> delta [B, w]

        def gate(layer: int, t: int) -> torch.Tensor:
            if layer not in parts:
                parts[layer] = cast(GateNU, self.gates[layer]).parts(x, self.n_tasks, const, self.towers.tasks)
            deltas[layer, t] = delta = parts[layer][t]()
            return delta

        logits = self.towers(o_ep, gate)
        if not with_gates:
            return logits, []
        return logits, [torch.stack([deltas[layer, t] for t in self.towers.tasks], dim=1)
                        for layer in range(len(self.gates))]
