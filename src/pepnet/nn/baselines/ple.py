"""PLE: Progressive Layered Extraction, CGC layers stacked (Tang et al., RecSys 2020)."""
from __future__ import annotations

import torch
from torch import nn

from ...config import ModelConfig
from ..layout import ModelLayout
from ..towers import TaskTowers
from .common import EmbeddedInput, Experts, SoftmaxGate, mix, model_options, split_units

DEFAULTS = {"n_levels": 2, "task_experts": 1, "shared_experts": 1, "expert_units": None, "tower_units": None}
"""model.options: ``n_levels`` (2 extraction layers), ``task_experts`` (1 per task), ``shared_experts`` (1),
``expert_units`` (default ``hidden_units[:-1]``, every level), ``tower_units`` (default ``hidden_units[-1:]``)."""


class CGC(nn.Module):
    """One Customized Gate Control layer.

    forward(task_in float [T, B, D], shared_in float [B, D]) -> (task_out [T, B, h], shared_out [B, h] or None,
    gate weights). Task t's gate (reading task_in[t]) mixes task t's own experts and the shared experts;
    unless ``last``, a shared gate (reading shared_in) mixes all experts into the next level's shared input.
    """

    def __init__(
        self, n_tasks: int, in_dim: int, units: list[int], m_task: int, m_shared: int, dropout: float, last: bool
    ):
        super().__init__()
        self.n_tasks, self.m_task = n_tasks, m_task
        self.task_experts = Experts(n_tasks * m_task, in_dim, units, dropout)
        self.shared_experts = Experts(m_shared, in_dim, units, dropout)
        self.task_gates = nn.ModuleList(SoftmaxGate(in_dim, m_task + m_shared) for _ in range(n_tasks))
        self.shared_gate = None if last else SoftmaxGate(in_dim, n_tasks * m_task + m_shared)

    def forward(self, task_in: torch.Tensor, shared_in: torch.Tensor):
        own = self.task_experts(task_in.repeat_interleave(self.m_task, dim=0))  # [T*m, B, h]
        shared = self.shared_experts(shared_in)  # [S, B, h]
        weights, outs = [], []
        for t, gate in enumerate(self.task_gates):
            w = gate(task_in[t])
            weights.append(w)
            outs.append(mix(torch.cat([own[t * self.m_task : (t + 1) * self.m_task], shared]), w))
        shared_out = None
        if self.shared_gate is not None:
            w = self.shared_gate(shared_in)
            weights.append(w)
            shared_out = mix(torch.cat([own, shared]), w)
        return torch.stack(outs), shared_out, weights


class PLE(nn.Module):
    """sparse int64 [B, Fs], dense float32 [B, Fd] -> logits float [B, T]: E -> n_levels CGC layers -> T towers."""

    def __init__(self, layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        opts = model_options(cfg, DEFAULTS)
        units, tower = split_units(cfg, opts, "expert_units")
        levels, m_task, m_shared = int(opts["n_levels"]), int(opts["task_experts"]), int(opts["shared_experts"])
        if levels < 1 or m_task < 1 or m_shared < 0:
            raise ValueError(f"model.options: need n_levels >= 1, task_experts >= 1, shared_experts >= 0; got {opts}")
        self.n_tasks = layout.n_tasks
        self.input = EmbeddedInput(layout, cfg.embedding_dim)
        dims = [self.input.out_dim] + [units[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            CGC(layout.n_tasks, d, units, m_task, m_shared, cfg.dropout, last=(i == levels - 1))
            for i, d in enumerate(dims)
        )
        self.towers = TaskTowers(units[-1], tower, layout.n_tasks, cfg.dropout)

    def forward_with_gates(
        self, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [B, T] and every gate's weights ``level.l.gate.g`` float [B, n_experts] (rows sum to 1;
        g = T is the shared gate)."""
        x = self.input(sparse, dense)
        task_in, shared_in = x.unsqueeze(0).expand(self.n_tasks, -1, -1), x
        gates: dict[str, torch.Tensor] = {}
        for i, level in enumerate(self.levels):
            task_in, shared_in, weights = level(task_in, shared_in)
            gates.update({f"level.{i}.gate.{g}": w for g, w in enumerate(weights)})
        return self.towers(task_in), gates

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(sparse, dense)[0]

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.input.embedding_parameters()
