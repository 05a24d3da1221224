"""Shared-Bottom: one MLP shared by every task, then one tower per task (Caruana 1997)."""
from __future__ import annotations

import torch
from torch import nn

from ...config import ModelConfig
from ..layout import ModelLayout
from ..towers import TaskTowers
from .common import EmbeddedInput, Experts, model_options, split_units

DEFAULTS = {"bottom_units": None, "tower_units": None}
"""model.options: ``bottom_units`` (default ``hidden_units[:-1]``), ``tower_units`` (default ``hidden_units[-1:]``)."""


class SharedBottom(nn.Module):
    """sparse int64 [B, Fs], dense float32 [B, Fd] -> logits float [B, T]: E -> shared MLP -> T towers."""

    def __init__(self, layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        bottom, tower = split_units(cfg, model_options(cfg, DEFAULTS), "bottom_units")
        self.input = EmbeddedInput(layout, cfg.embedding_dim)
        self.bottom = Experts(1, self.input.out_dim, bottom, cfg.dropout)
        self.towers = TaskTowers(bottom[-1], tower, layout.n_tasks, cfg.dropout)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.towers(self.bottom(self.input(sparse, dense))[0])

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.input.embedding_parameters()
