"""Pieces the baselines share: the embedded input, a batch of independent MLPs (experts), softmax gates
and the model-option parser. The embedding table is always nn/embedding.py's FeatureEmbedding and the task
towers always nn/towers.py's TaskTowers; nothing here re-implements them."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...config import ModelConfig
from ..embedding import FeatureEmbedding
from ..fields import FieldSelect
from ..layout import GROUPS, ModelLayout


def model_options(cfg: ModelConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """``cfg.options`` merged over ``defaults``; an unknown key raises ValueError naming the valid ones."""
    unknown = sorted(set(cfg.options) - set(defaults))
    if unknown:
        raise ValueError(f"model.options for {cfg.name!r}: unknown key(s) {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **cfg.options}


def split_units(cfg: ModelConfig, opts: dict[str, Any], bottom_key: str) -> tuple[list[int], list[int]]:
    """(bottom / expert units, tower units). Defaults: ``hidden_units[:-1]`` below, ``hidden_units[-1:]`` in the
    towers (with one hidden layer, it is used by both)."""
    h = list(cfg.hidden_units)
    bottom = opts[bottom_key] if opts[bottom_key] is not None else (h[:-1] or h)
    tower = opts["tower_units"] if opts["tower_units"] is not None else h[-1:]
    if not bottom or any(int(u) <= 0 for u in [*bottom, *tower]):
        raise ValueError(
            f"model.options for {cfg.name!r}: {bottom_key} / tower_units must be non-empty lists of positive ints"
        )
    return [int(u) for u in bottom], [int(u) for u in tower]


class EmbeddedInput(nn.Module):
    """FeatureEmbedding plus the field selection every baseline starts from: every field of every group, the
    ``general`` fields first, then each field that only a prior or the domain-side group holds (in
    ``layout.GROUPS`` order). A baseline has no gate to feed PEPNet's prior features to, so it reads them as
    inputs: every model sees the same fields, whatever the groups.

    forward(sparse int64 [B, Fs], dense float32 [B, Fd]) -> float [B, Fin * d] (the fields, flattened).
    """
    def __init__(self, layout: ModelLayout, dim: int):
        super().__init__()
        self.embedding = FeatureEmbedding(layout.num_embeddings, layout.n_dense, dim, oov_dropout=layout.oov_dropout)
        idx = list(dict.fromkeys(i for g in GROUPS for i in layout.group(g)))
        self.fields = FieldSelect(idx)
        self.out_dim = len(idx) * dim

    def embed(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """All fields: float [B, F, d]."""
        return self.embedding(sparse, dense)

    def select(self, emb: torch.Tensor) -> torch.Tensor:
        """float [B, F, d] -> the input fields, float [B, Fin * d]."""
        return self.fields(emb).flatten(1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.select(self.embed(sparse, dense))

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.embedding.embedding_parameters()


class Experts(nn.Module):
    """``n`` independent ReLU MLPs ``in_dim -> units...`` computed together (stacked weights, one baddbmm per layer).

    forward(x): float [B, in_dim] (every expert reads the same input) or [n, B, in_dim] (one input each).
    Returns float [n, B, units[-1]].
    """

    def __init__(self, n: int, in_dim: int, units: list[int], dropout: float = 0.0):
        super().__init__()
        self.n, self.out_dim = n, units[-1]
        dims = [in_dim, *units]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n, a, b)) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n, 1, b)) for b in dims[1:])
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])  # nn.Linear's default, per expert
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.n, -1, -1) if x.dim() == 2 else x
        for w, b in zip(self.weights, self.biases, strict=True):
            h = self.dropout(torch.relu(torch.baddbmm(b, h, w)))
        return h


def mix(experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of experts: experts float [K, B, h], weights float [B, K] -> float [B, h]."""
    return torch.einsum("kbh,bk->bh", experts, weights)


class SoftmaxGate(nn.Module):
    """x float [B, in_dim] -> weights float [B, n_experts], a softmax (each row sums to 1)."""

    def __init__(self, in_dim: int, n_experts: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, n_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)
