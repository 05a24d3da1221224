"""PEPNet = FeatureEmbedding -> EPNet -> PPNet (Chang et al., KDD 2023, arXiv 2302.01115)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .embedding import FeatureEmbedding
from .epnet import EPNet
from .fields import FieldSelect
from .layout import ModelLayout
from .ppnet import PPNet
from .towers import TaskTowers


class PEPNet(nn.Module):
    """sparse int64 [B, Fs], dense float32 [B, Fd] -> logits float [B, T].

    ``use_epnet=False`` gives the PPNet-only ablation (O_ep = E); ``use_ppnet=False`` the
    EPNet-only ablation (plain task towers on O_ep).
    """
    def __init__(self, layout: ModelLayout, cfg: ModelConfig, use_epnet: bool = True, use_ppnet: bool = True):
        super().__init__()
        d = cfg.embedding_dim
        self.layout = layout
        self.embedding = FeatureEmbedding(layout.num_embeddings, layout.n_dense, d, oov_dropout=layout.oov_dropout)
        self.general = FieldSelect(layout.group("general"))          # E
        self.domain_side = FieldSelect(layout.group("domain_side"))  # E(F_d)
        prior = [i for g in cfg.ppnet_priors for i in layout.group(g)]
        self.prior = FieldSelect(prior)                               # E(F_u) ++ E(F_i) ++ E(F_a)
        n_general = len(layout.group("general"))
        self.epnet = (
            EPNet(
                n_general,
                len(layout.group("domain_side")),
                d,
                cfg.gate_hidden,
                cfg.gamma,
                cfg.epnet_granularity,
                cfg.stop_gradient,
            )
            if use_epnet
            else None
        )
        self.ppnet = (
            PPNet(
                n_general * d,
                len(prior) * d,
                cfg.hidden_units,
                layout.n_tasks,
                cfg.gate_hidden,
                cfg.gamma,
                cfg.ppnet_gate_on,
                cfg.ppnet_gate_mode,
                cfg.stop_gradient,
                cfg.dropout,
                cfg.ppnet_gate_output_layer,
            )
            if use_ppnet
            else None
        )
        self.towers = None if use_ppnet else TaskTowers(n_general * d, cfg.hidden_units, layout.n_tasks, cfg.dropout)

    def forward_with_gates(
        self, sparse: torch.Tensor, dense: torch.Tensor, with_gates: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [B, T] and the gate outputs: ``epnet`` [B, Fg, d|1], ``ppnet.l`` [B, T, w_l] (those of PPNet
        only ``with_gates``: stacking them costs a copy that training does not need)."""
        emb = self.embedding(sparse, dense)  # [B, F, d]
        general = self.general(emb)  # E: [B, Fg, d]
        gates: dict[str, torch.Tensor] = {}
        if self.epnet is not None:
            o_ep, gates["epnet"] = self.epnet(general, self.domain_side(emb))
        else:
            o_ep = general
        o_ep = o_ep.flatten(1)  # [B, Fg * d]
        if self.ppnet is not None:
            prior = self.prior(emb).flatten(1)  # [B, P * d]
            logits, deltas = self.ppnet(o_ep, prior, with_gates)
            gates.update({f"ppnet.{i}": g for i, g in enumerate(deltas)})
        else:
            assert self.towers is not None  # built when PPNet is off
            logits = self.towers(o_ep)
        return logits, gates

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(sparse, dense, with_gates=False)[0]

    def embedding_parameters(self) -> list[torch.Tensor]:
        return self.embedding.embedding_parameters()
