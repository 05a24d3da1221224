"""STAR: Star Topology Adaptive Recommender (Sheng et al., CIKM 2021), with task towers on top.

Three pieces of the paper: partitioned normalisation (PN), the star topology fully connected network
(every layer's weight is the element-wise product of a shared weight and the row's domain weight, the bias
their sum), and an auxiliary network on the domain features whose logit is added to the main one. Multi-task:
the star FCN is the shared bottom of TaskTowers, and the auxiliary network has one small tower per task.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...config import ModelConfig
from ..fields import FieldSelect
from ..layout import ModelLayout
from ..towers import TaskTowers
from .common import EmbeddedInput, model_options, split_units

DEFAULTS = {"star_units": None, "tower_units": None, "aux_units": [64], "pn_momentum": 0.1}
"""model.options: ``star_units`` (star FCN widths, default ``hidden_units[:-1]``), ``tower_units`` (default
``hidden_units[-1:]``), ``aux_units`` (auxiliary network hidden widths, [64]), ``pn_momentum`` (0.1, of the
per-domain running statistics)."""


def domain_index(sparse: torch.Tensor, layout: ModelLayout) -> torch.Tensor:
    """Domain of each row, int64 [B] in [0, n_domains] (0 = a domain unseen in training)."""
    return (sparse[:, layout.domain_field] - layout.domain_offset).clamp(0, layout.n_domains)


class PartitionedNorm(nn.Module):
    """PN: ``z = (gamma * gamma_p) * (x - mu) / sqrt(var + eps) + (beta + beta_p)`` for a row of domain p.

    x float [B, D], domain int64 [B] in [0, n_parts) -> float [B, D]. Training: mu / var are the batch
    statistics of the row's domain (the whole batch's when its domain has fewer than 2 rows in the batch);
    evaluation: the domain's running statistics (the global running ones for a domain never trained on).
    """
    running_mean: torch.Tensor  # buffer (register_buffer)
    running_var: torch.Tensor  # buffer (register_buffer)
    seen: torch.Tensor  # buffer (register_buffer)

    def __init__(self, dim: int, n_parts: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.gamma_p = nn.Parameter(torch.ones(n_parts, dim))
        self.beta_p = nn.Parameter(torch.zeros(n_parts, dim))
        self.register_buffer("running_mean", torch.zeros(n_parts + 1, dim))  # last row: global
        self.register_buffer("running_var", torch.ones(n_parts + 1, dim))
        self.register_buffer("seen", torch.zeros(n_parts + 1, dtype=torch.bool))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        n_parts = self.gamma_p.shape[0]
        if self.training:
            count = torch.bincount(domain, minlength=n_parts).to(x.dtype)                      # [P]
            mean_p = torch.zeros(n_parts, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, domain, x)
            mean_p = mean_p / count.clamp(min=1).unsqueeze(1)
            sq = torch.zeros_like(mean_p).index_add_(0, domain, (x - mean_p[domain]) ** 2)
            var_p = sq / count.clamp(min=1).unsqueeze(1)
            g_mean, g_var = x.mean(0), x.var(0, unbiased=False)
            own = count >= 2
            mean_p = torch.where(own.unsqueeze(1), mean_p, g_mean)
            var_p = torch.where(own.unsqueeze(1), var_p, g_var)
            with torch.no_grad():
                upd = torch.cat([own, own.new_ones(1)])
                m = self.momentum
                new_mean = torch.cat([mean_p, g_mean.unsqueeze(0)]).detach()
                new_var = torch.cat([var_p, g_var.unsqueeze(0)]).detach()
                self.running_mean.copy_(
                    torch.where(upd.unsqueeze(1), (1 - m) * self.running_mean + m * new_mean, self.running_mean)
                )
                self.running_var.copy_(
                    torch.where(upd.unsqueeze(1), (1 - m) * self.running_var + m * new_var, self.running_var)
                )
                self.seen |= upd
            mu, var = mean_p[domain], var_p[domain]
        else:
            idx = torch.where(self.seen[domain], domain, torch.full_like(domain, n_parts))
            mu, var = self.running_mean[idx], self.running_var[idx]
        z = (x - mu) / torch.sqrt(var + self.eps)
        return (self.gamma * self.gamma_p[domain]) * z + (self.beta + self.beta_p[domain])


class StarFCN(nn.Module):
    """Star-topology MLP: layer l of a row in domain p uses ``W_l * W_l,p`` and ``b_l + b_l,p`` (ReLU after each).

    x float [B, in_dim], domain int64 [B] in [0, n_parts) -> float [B, units[-1]]. Domain weights start at 1
    and domain biases at 0, so a fresh network is the shared one.
    """

    def __init__(self, in_dim: int, units: list[int], n_parts: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, *units]
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.shared_w = nn.ParameterList(nn.Parameter(torch.empty(a, b)) for a, b in pairs)
        self.shared_b = nn.ParameterList(nn.Parameter(torch.empty(b)) for b in dims[1:])
        self.domain_w = nn.ParameterList(nn.Parameter(torch.ones(n_parts, a, b)) for a, b in pairs)
        self.domain_b = nn.ParameterList(nn.Parameter(torch.zeros(n_parts, b)) for b in dims[1:])
        for w, b in zip(self.shared_w, self.shared_b, strict=True):
            bound = 1.0 / math.sqrt(w.shape[0])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        present = torch.unique(domain).tolist()
        rows = {p: (domain == p).nonzero(as_tuple=True)[0] for p in present}
        h = x
        for w, b, wp, bp in zip(self.shared_w, self.shared_b, self.domain_w, self.domain_b, strict=True):
            out = h.new_empty(h.shape[0], w.shape[1])
            for p, r in rows.items():
                out[r] = torch.addmm(b + bp[p], h[r], w * wp[p])
            h = self.dropout(torch.relu(out))
        return h


class STAR(nn.Module):
    """sparse int64 [B, Fs], dense float32 [B, Fd] -> logits float [B, T].

    ``logits = towers(StarFCN(PN(E), p)) + aux_towers(E(F_d))`` where p is the row's domain (layout.domain_field).
    """
    def __init__(self, layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        if layout.domain_field is None:
            raise ValueError("model 'star' needs the domain column declared as a sparse feature (layout.domain_field)")
        opts = model_options(cfg, DEFAULTS)
        units, tower = split_units(cfg, opts, "star_units")
        self.layout = layout
        n_parts = layout.n_domains + 1
        self.input = EmbeddedInput(layout, cfg.embedding_dim)
        self.domain_side = FieldSelect(layout.group("domain_side"))
        self.pn = PartitionedNorm(self.input.out_dim, n_parts, float(opts["pn_momentum"]))
        self.fcn = StarFCN(self.input.out_dim, units, n_parts, cfg.dropout)
        self.towers = TaskTowers(units[-1], tower, layout.n_tasks, cfg.dropout)
        self.aux = TaskTowers(
            len(layout.group("domain_side")) * cfg.embedding_dim, [int(u) for u in opts["aux_units"]], layout.n_tasks
        )

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        domain = domain_index(sparse, self.layout)
        emb = self.input.embed(sparse, dense)
        main = self.towers(self.fcn(self.pn(self.input.select(emb), domain), domain))
        return main + self.aux(self.domain_side(emb).flatten(1))

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.input.embedding_parameters()
