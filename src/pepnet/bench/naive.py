"""The straightforward PEPNet that ``pepnet bench`` compares against (same function, plain PyTorch idioms).

One ``nn.Embedding`` per sparse field (dense gradients, looked up in a Python loop), one ``nn.Linear``
stack per gate and per task, one ``nn.Sequential``-style tower per task, fed by a standard
``torch.utils.data.DataLoader`` over a per-sample ``__getitem__`` with the default collate.
It computes exactly what :class:`pepnet.nn.PEPNet` computes: :func:`copy_weights` loads a PEPNet's
weights into it and the outputs agree to float tolerance (``tests/bench/test_naive.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..data.encoder import FieldInfo
from ..nn import ModelLayout, PEPNet
from ..train.loss import masked_bce

# model name -> (use_epnet, use_ppnet), as in pepnet.nn.registry
VARIANTS = {"pepnet": (True, True), "epnet_only": (True, False), "ppnet_only": (False, True)}


class _Gate(nn.Module):
    """gamma * sigmoid(Linear(ReLU(Linear(x)))), with ``n_heads`` output heads sharing the hidden layer
    (the split PPNet gate) or one head (``n_heads=1``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, gamma: float, n_heads: int = 1):
        super().__init__()
        self.gamma = gamma
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, out_dim) for _ in range(n_heads))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.hidden(x)
        return [self.gamma * torch.sigmoid(head(h)) for head in self.heads]


class NaivePEPNet(nn.Module):
    """sparse int64 [B, Fs] (per-field ids, NOT offset), dense float32 [B, Fd] -> logits [B, T]."""

    def __init__(self, field_sizes: list[int], layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        if cfg.name not in VARIANTS:
            raise ValueError(f"the straightforward reference implements {sorted(VARIANTS)}, not {cfg.name!r}")
        self.use_epnet, self.use_ppnet = VARIANTS[cfg.name]
        d, T = cfg.embedding_dim, layout.n_tasks
        self.d, self.cfg, self.n_tasks = d, cfg, T
        self.embeddings = nn.ModuleList(nn.Embedding(max(n, 1), d) for n in field_sizes)
        self.dense_vectors = nn.ParameterList(nn.Parameter(torch.zeros(d)) for _ in range(layout.n_dense))
        self.general, self.domain = layout.group("general"), layout.group("domain_side")
        self.prior = [i for g in cfg.ppnet_priors for i in layout.group(g)]
        n_gen = len(self.general) * d
        if self.use_epnet:
            out = n_gen if cfg.epnet_granularity == "element" else len(self.general)
            self.epnet_gate = _Gate((len(self.domain) + len(self.general)) * d, cfg.gate_hidden, out, cfg.gamma)
        dims = [n_gen, *cfg.hidden_units]
        self.towers = nn.ModuleList(
            nn.ModuleList([*(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)), nn.Linear(dims[-1], 1)])
            for _ in range(T)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        if self.use_ppnet:
            widths = dims[:-1] if cfg.ppnet_gate_on == "input" else dims[1:]
            gate_in = len(self.prior) * d + n_gen
            if cfg.ppnet_gate_mode == "split":   # one hidden layer per tower layer, one head per task
                self.ppnet_gates = nn.ModuleList(_Gate(gate_in, cfg.gate_hidden, w, cfg.gamma, n_heads=T) for w in widths)
            else:                                 # one whole gate per task and layer
                self.ppnet_gates = nn.ModuleList(
                    nn.ModuleList(_Gate(gate_in, cfg.gate_hidden, w, cfg.gamma) for _ in range(T)) for w in widths)

    def _layer_gates(self, layer: int, x: torch.Tensor) -> list[torch.Tensor]:
        gate = self.ppnet_gates[layer]
        if isinstance(gate, _Gate):
            return gate(x)
        return [g(x)[0] for g in gate]

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embs = [emb(sparse[:, j]) for j, emb in enumerate(self.embeddings)]
        embs += [dense[:, j:j + 1] * v for j, v in enumerate(self.dense_vectors)]
        general = torch.cat([embs[i] for i in self.general], dim=1)
        if self.use_epnet:
            domain = torch.cat([embs[i] for i in self.domain], dim=1)
            e_in = general.detach() if self.cfg.stop_gradient else general
            delta = self.epnet_gate(torch.cat([domain, e_in], dim=1))[0]
            if self.cfg.epnet_granularity == "field":
                delta = delta.repeat_interleave(self.d, dim=1)
            o_ep = delta * general
        else:
            o_ep = general
        gates = None
        if self.use_ppnet:
            parts = [embs[i] for i in self.prior] + [o_ep.detach() if self.cfg.stop_gradient else o_ep]
            x = torch.cat(parts, dim=1)
            gates = [self._layer_gates(layer, x) for layer in range(len(self.cfg.hidden_units))]
        logits = []
        for t, tower in enumerate(self.towers):
            h = o_ep
            for layer, linear in enumerate(tower[:-1]):
                g = gates[layer][t] if gates is not None else None
                if g is not None and self.cfg.ppnet_gate_on == "input":
                    h = h * g
                h = self.dropout(torch.relu(linear(h)))
                if g is not None and self.cfg.ppnet_gate_on == "output":
                    h = h * g
            logits.append(tower[-1](h))
        return torch.cat(logits, dim=1)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [e.weight for e in self.embeddings] + list(self.dense_vectors)


@torch.no_grad()
def copy_weights(src: PEPNet, dst: NaivePEPNet, sparse_fields: list[FieldInfo]) -> None:
    """Load ``src``'s weights into ``dst`` (fused table rows -> per-field tables, stacked tower and gate
    slices -> per-task Linear layers); afterwards both compute the same function."""
    table = src.embedding.table.weight
    for f, emb in zip(sparse_fields, dst.embeddings, strict=True):
        emb.weight.copy_(table[f.offset:f.offset + f.size])
    for j, v in enumerate(dst.dense_vectors):
        v.copy_(src.embedding.dense_vectors[j])

    def linear(lin: nn.Linear, w: torch.Tensor, b: torch.Tensor) -> None:  # w [in, out], b [out]
        lin.weight.copy_(w.t())
        lin.bias.copy_(b.reshape(-1))

    def gate(g: _Gate, gnu, group: int = 0, cols: slice | None = None) -> None:
        linear(g.hidden[0], gnu.w1[group], gnu.b1[group])
        for t, head in enumerate(g.heads):
            c = cols if cols is not None else slice(t * head.out_features, (t + 1) * head.out_features)
            linear(head, gnu.w2[group][:, c], gnu.b2[group][0, c])

    if dst.use_epnet:
        gate(dst.epnet_gate, src.epnet.gate, cols=slice(None))
    towers = src.ppnet.towers if src.ppnet is not None else src.towers
    for t, tower in enumerate(dst.towers):
        for layer, lin in enumerate(tower[:-1]):
            linear(lin, towers.weights[layer][t], towers.biases[layer][t])
        linear(tower[-1], towers.out_weight[t], towers.out_bias[t])
    if dst.use_ppnet:
        for layer, (g_dst, g_src) in enumerate(zip(dst.ppnet_gates, src.ppnet.gates, strict=True)):
            if isinstance(g_dst, _Gate):
                gate(g_dst, g_src)
            else:
                for t, g in enumerate(g_dst):
                    gate(g, g_src, group=t, cols=slice(None))


class RowDataset(torch.utils.data.Dataset):
    """One training row per ``__getitem__``: (per-field ids int64 [Fs], dense float32 [Fd], labels float32 [T])."""

    def __init__(self, sparse_local: np.ndarray, dense: np.ndarray, labels: np.ndarray):
        self.sparse, self.dense, self.labels = sparse_local, dense, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.sparse[i]), torch.from_numpy(self.dense[i]), torch.from_numpy(self.labels[i])


def local_ids(sparse: np.ndarray, sparse_fields: list[FieldInfo]) -> np.ndarray:
    """Fused-table ids int64 [N, Fs] -> per-field ids (the naive model's input)."""
    return sparse - np.asarray([f.offset for f in sparse_fields], dtype=sparse.dtype)


class NaiveTrainer:
    """The textbook loop: Adagrad on the embeddings (dense gradients), Adam on the rest, masked BCE."""

    def __init__(self, model: NaivePEPNet, embedding_lr: float, dense_lr: float, device: torch.device,
                 task_weights: torch.Tensor | None = None):
        self.model, self.device = model.to(device), device
        emb = {id(p) for p in model.embedding_parameters()}
        self.optimizers = [torch.optim.Adagrad(model.embedding_parameters(), lr=embedding_lr),
                           torch.optim.Adam([p for p in model.parameters() if id(p) not in emb], lr=dense_lr)]
        self.weights = task_weights

    def step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
        sparse, dense, labels = (t.to(self.device) for t in batch)
        for opt in self.optimizers:
            opt.zero_grad()
        loss, _ = masked_bce(self.model(sparse, dense), labels, self.weights)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        return loss.item()
