"""The reference PEPNet that ``pepnet bench`` compares against, written from the paper (arXiv 2302.01115)
in the plain PyTorch idiom of industrial recommenders: what one would write without pepnet.

* one ``nn.Embedding(sparse=True)`` per sparse field, looked up field by field, trained with
  ``torch.optim.Adagrad`` on its sparse gradients; a learned vector per dense field (``value * v_j``);
* Gate NU (Sec. 3.2) as ``gamma * sigmoid(Linear(ReLU(Linear(x))))``;
* EPNet (Sec. 3.3): ``O_ep = GateNU(E(F_d) ++ stopgrad(E)) * E``;
* PPNet (Sec. 3.4): per task an ``nn.Linear`` tower; every hidden layer has its own gate(s) reading
  ``prior ++ stopgrad(O_ep)``, multiplying the layer's input or output; dropout after each hidden layer;
* Adam on every dense weight, the masked multi-task BCE, batches sliced from tensors already in memory
  (no DataLoader).

It takes the same :class:`~pepnet.config.ModelConfig` as pepnet's model (layers, gates, dropout) and,
with :func:`copy_weights`, computes the same function (``tests/bench/test_reference.py``), so the bench
compares speed alone.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..data.encoder import FieldInfo
from ..nn import ModelLayout, PEPNet
from ..train.loss import masked_bce

# model name -> (use_epnet, use_ppnet), as in pepnet.nn.registry
VARIANTS = {"pepnet": (True, True), "epnet_only": (True, False), "ppnet_only": (False, True)}


class Gate(nn.Module):
    """Gate NU: x float [B, in] -> gamma * sigmoid(W2 relu(W1 x + b1) + b2), float [B, out]."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))


class ReferencePEPNet(nn.Module):
    """sparse int64 [B, Fs] (per-field ids, NOT offset into a fused table), dense float32 [B, Fd] -> logits [B, T]."""

    def __init__(self, field_sizes: list[int], layout: ModelLayout, cfg: ModelConfig):
        super().__init__()
        if cfg.name not in VARIANTS:
            raise ValueError(f"the reference implements {sorted(VARIANTS)}, not {cfg.name!r}")
        self.use_epnet, self.use_ppnet = VARIANTS[cfg.name]
        d, T = cfg.embedding_dim, layout.n_tasks
        self.d, self.cfg = d, cfg
        self.embeddings = nn.ModuleList(nn.Embedding(max(n, 1), d, sparse=True) for n in field_sizes)
        self.dense_vectors = nn.ParameterList(nn.Parameter(torch.zeros(d)) for _ in range(layout.n_dense))
        self.general, self.domain = layout.group("general"), layout.group("domain_side")
        self.prior = [i for g in cfg.ppnet_priors for i in layout.group(g)]
        n_gen = len(self.general) * d
        if self.use_epnet:
            out = n_gen if cfg.epnet_granularity == "element" else len(self.general)
            self.epnet_gate = Gate((len(self.domain) + len(self.general)) * d, cfg.gate_hidden, out, cfg.gamma)
        dims = [n_gen, *cfg.hidden_units]
        self.towers = nn.ModuleList(
            nn.ModuleList([*(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)),
                           nn.Linear(dims[-1], 1)])
            for _ in range(T))
        self.dropout = nn.Dropout(cfg.dropout)
        if self.use_ppnet:
            widths = dims[:-1] if cfg.ppnet_gate_on == "input" else dims[1:]
            gate_in = len(self.prior) * d + n_gen
            # "split": one gate per layer whose output is cut into T slices; "per_task": T gates per layer
            n_gates, n_out = (1, T) if cfg.ppnet_gate_mode == "split" else (T, 1)
            self.ppnet_gates = nn.ModuleList(
                nn.ModuleList(Gate(gate_in, cfg.gate_hidden, n_out * w, cfg.gamma) for _ in range(n_gates))
                for w in widths)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embs = [emb(sparse[:, j]) for j, emb in enumerate(self.embeddings)]
        embs += [dense[:, j:j + 1] * v for j, v in enumerate(self.dense_vectors)]
        general = torch.cat([embs[i] for i in self.general], dim=1)               # E: [B, Fg * d]
        o_ep = general
        if self.use_epnet:
            domain = torch.cat([embs[i] for i in self.domain], dim=1)
            e_in = general.detach() if self.cfg.stop_gradient else general
            delta = self.epnet_gate(torch.cat([domain, e_in], dim=1))
            if self.cfg.epnet_granularity == "field":
                delta = delta.repeat_interleave(self.d, dim=1)
            o_ep = delta * general
        n_tasks = len(self.towers)
        gates: list[list[torch.Tensor]] = []  # gates[layer][task]: [B, w]
        if self.use_ppnet:
            x = torch.cat([embs[i] for i in self.prior] + [o_ep.detach() if self.cfg.stop_gradient else o_ep], dim=1)
            for layer_gates in self.ppnet_gates:
                outs = [g(x) for g in layer_gates]
                gates.append(list(outs[0].chunk(n_tasks, dim=1)) if len(outs) == 1 else outs)
        on_input = self.cfg.ppnet_gate_on == "input"
        logits = []
        for t, tower in enumerate(self.towers):
            h = o_ep
            for layer, linear in enumerate(tower[:-1]):
                if gates and on_input:
                    h = h * gates[layer][t]
                h = self.dropout(torch.relu(linear(h)))
                if gates and not on_input:
                    h = h * gates[layer][t]
            logits.append(tower[-1](h))
        return torch.cat(logits, dim=1)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [e.weight for e in self.embeddings] + list(self.dense_vectors)


@torch.no_grad()
def copy_weights(src: PEPNet, dst: ReferencePEPNet, sparse_fields: list[FieldInfo]) -> None:
    """Load pepnet's ``src`` weights into ``dst`` (fused table rows -> per-field tables, stacked tower and
    gate slices -> per-task Linear layers); afterwards both compute the same function."""
    table = src.embedding.table.weight
    for f, emb in zip(sparse_fields, dst.embeddings, strict=True):
        emb.weight.copy_(table[f.offset:f.offset + f.size])
    for j, v in enumerate(dst.dense_vectors):
        v.copy_(src.embedding.dense_vectors[j])

    def linear(lin: nn.Linear, w: torch.Tensor, b: torch.Tensor) -> None:  # w [in, out], b [out]
        lin.weight.copy_(w.t())
        lin.bias.copy_(b.reshape(-1))

    def gate(g: Gate, gnu, group: int) -> None:
        linear(g.net[0], gnu.w1[group], gnu.b1[group])
        linear(g.net[2], gnu.w2[group], gnu.b2[group])

    if dst.use_epnet:
        gate(dst.epnet_gate, src.epnet.gate, 0)
    towers = src.ppnet.towers if src.ppnet is not None else src.towers
    for t, tower in enumerate(dst.towers):
        for layer, lin in enumerate(tower[:-1]):
            linear(lin, towers.weights[layer][t], towers.biases[layer][t])
        linear(tower[-1], towers.out_weight[t], towers.out_bias[t])
    if dst.use_ppnet:
        for g_dst, g_src in zip(dst.ppnet_gates, src.ppnet.gates, strict=True):
            for group, g in enumerate(g_dst):
                gate(g, g_src, group)


def local_ids(sparse: np.ndarray, sparse_fields: list[FieldInfo]) -> np.ndarray:
    """Fused-table ids int64 [N, Fs] -> per-field ids (the reference model's input)."""
    return sparse - np.asarray([f.offset for f in sparse_fields], dtype=sparse.dtype)


def shuffled_batches(tensors: tuple[torch.Tensor, ...], batch_size: int,
                     seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless shuffled mini-batches of in-memory tensors (same first dimension N), one permutation per
    epoch, the last partial batch dropped: tuples of ``t[idx]``."""
    n = tensors[0].shape[0]
    if n < batch_size:
        raise ValueError(f"the training split has {n} rows, fewer than one batch of {batch_size}; lower --batch-size")
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = perm[start:start + batch_size]
            yield tuple(t[idx] for t in tensors)


class ReferenceTrainer:
    """The textbook step: torch.optim.Adagrad on the embeddings (sparse gradients), Adam on the rest,
    masked BCE weighted per task; ``amp``: the forward pass under bf16 autocast, as ``train.amp=bf16``."""

    def __init__(self, model: ReferencePEPNet, embedding_lr: float, dense_lr: float, device: torch.device,
                 task_weights: torch.Tensor | None = None, amp: bool = False):
        self.model, self.device, self.amp = model.to(device), device, amp
        emb = {id(p) for p in model.embedding_parameters()}
        torch.sparse.check_sparse_tensor_invariants.disable()  # as pepnet's make_optimizers: no per-step warning
        self.optimizers = [torch.optim.Adagrad(model.embedding_parameters(), lr=embedding_lr),
                           torch.optim.Adam([p for p in model.parameters() if id(p) not in emb], lr=dense_lr)]
        self.weights = task_weights

    def step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
        """batch: (per-field ids int64 [B, Fs], dense float32 [B, Fd], labels float32 [B, T]); returns the loss."""
        sparse, dense, labels = (t.to(self.device) for t in batch)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(sparse, dense)
        loss, _ = masked_bce(logits, labels, self.weights)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        return loss.item()
