"""EPNet: embedding personalisation by domain (PEPNet, Sec. 3.3)."""
from __future__ import annotations

import torch
from torch import nn

from .gates import GateNU


class EPNet(nn.Module):
    """``delta_domain = GateNU(E(F_d) ++ stopgrad(E))``, ``O_ep = delta_domain * E``.

    forward(general, domain_side): general E float [B, Fg, d]; domain_side E(F_d) float [B, Fdom, d].
    Returns (O_ep float [B, Fg, d], delta float [B, Fg, d] or [B, Fg, 1] with per-field gates).
    ``stop_gradient``: the gate reads a detached copy of E, so no gradient reaches the general
    embeddings through the gate (they still learn through ``delta * E``).
    """

    def __init__(self, n_general: int, n_domain: int, dim: int, hidden: int = 64, gamma: float = 2.0,
                 granularity: str = "element", stop_gradient: bool = True):
        super().__init__()
        self.n_general, self.dim, self.granularity, self.stop_gradient = n_general, dim, granularity, stop_gradient
        out = n_general * dim if granularity == "element" else n_general
        self.gate = GateNU((n_domain + n_general) * dim, out, hidden=hidden, gamma=gamma)

    def forward(self, general: torch.Tensor, domain_side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        domain = domain_side.flatten(1)
        width = self.dim if self.granularity == "element" else 1
        if self.stop_gradient:  # the gate's first layer then computes no gradient for E
            delta = self.gate(domain, general.detach().flatten(1))
        else:
            delta = self.gate(torch.cat([domain, general.flatten(1)], dim=1))
        delta = delta.view(-1, self.n_general, width)
        return delta * general, delta
