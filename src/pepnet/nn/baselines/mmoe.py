"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018)."""
from __future__ import annotations

import torch
from torch import nn

from ...config import ModelConfig
from ..layout import ModelLayout
from ..towers import TaskTowers
from .common import EmbeddedInput, Experts, SoftmaxGate, mix, model_options, split_units

DEFAULTS = {"n_experts": 4, "expert_units": None, "tower_units": None}
"""model.options: ``n_experts`` (4), ``expert_units`` (default ``hidden_units[:-1]``), ``tower_units``
(default ``hidden_units[-1:]``)."""


class MMoE(nn.Module):
    """sparse int64 [B, Fs], dense float32 [B, Fd] -> logits float [B, T].

    K shared experts read E; task t's softmax gate g_t(E) [B, K] mixes them: ``f_t = sum_k g_t,k * expert_k(E)``;
    tower t reads f_t.
    """

    def __init__(self, layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        opts = model_options(cfg, DEFAULTS)
        units, tower = split_units(cfg, opts, "expert_units")
        k = int(opts["n_experts"])
        if k < 1:
            raise ValueError(f"model.options.n_experts must be >= 1; got {k}")
        self.input = EmbeddedInput(layout, cfg.embedding_dim)
        self.experts = Experts(k, self.input.out_dim, units, cfg.dropout)
        self.gates = nn.ModuleList(SoftmaxGate(self.input.out_dim, k) for _ in range(layout.n_tasks))
        self.towers = TaskTowers(units[-1], tower, layout.n_tasks, cfg.dropout)

    def forward_with_gates(
        self, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [B, T] and the gate weights ``gate.t`` float [B, K] (rows sum to 1)."""
        x = self.input(sparse, dense)
        experts = self.experts(x)  # [K, B, h]
        weights = [g(x) for g in self.gates]
        mixed = torch.stack([mix(experts, w) for w in weights])  # [T, B, h]
        return self.towers(mixed), {f"gate.{t}": w for t, w in enumerate(weights)}

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(sparse, dense)[0]

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.input.embedding_parameters()
