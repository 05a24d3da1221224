"""FeatureEmbedding: one fused table for every sparse field, plus a learned vector per dense field."""
from __future__ import annotations

import torch
from torch import nn


def register_oov_dropout(module: nn.Module, oov_dropout: list[tuple[int, int, float]] | tuple) -> None:
    """Give ``module`` the non-persistent buffers of :func:`drop_to_oov`: ``drop_fields`` int64 [K],
    ``drop_rows`` int64 [K], ``drop_probs`` float32 [K] from (sparse field index, OOV row, probability) triples."""
    fields, rows, probs = zip(*oov_dropout, strict=True) if oov_dropout else ((), (), ())
    module.register_buffer("drop_fields", torch.tensor(fields, dtype=torch.long), persistent=False)
    module.register_buffer("drop_rows", torch.tensor(rows, dtype=torch.long), persistent=False)
    module.register_buffer("drop_probs", torch.tensor(probs, dtype=torch.float32), persistent=False)


def drop_to_oov(sparse: torch.Tensor, fields: torch.Tensor, rows: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """sparse int64 [B, Fs] with each id of the sparse fields ``fields`` [K] replaced, with probability
    ``probs`` [K], by that field's OOV row ``rows`` [K] (a copy; the input is not modified)."""
    ids = sparse.index_select(1, fields)                                   # [B, K]
    hit = torch.rand(ids.shape, device=ids.device) < probs
    sparse = sparse.clone()
    sparse[:, fields] = torch.where(hit, rows.expand_as(ids), ids)
    return sparse


class FeatureEmbedding(nn.Module):
    """Embeds all fields of a batch.

    sparse: int64 [B, Fs] ids already offset into the fused table; dense: float32 [B, Fd].
    Returns float [B, Fs + Fd, d]: sparse rows looked up, dense field j as ``value * v_j``.
    With ``sparse_grad`` the table produces sparse (row-wise) gradients, so the optimiser touches
    only the rows of the batch.

    ``oov_dropout``: (sparse field index, that field's out-of-vocabulary row, probability) triples. In
    training mode each such id is replaced by the OOV row with that probability, so the OOV row learns
    what a new or rare id looks like (cold start) instead of staying at its initial value.
    """
    drop_fields: torch.Tensor  # buffer (register_buffer)
    drop_rows: torch.Tensor  # buffer (register_buffer)
    drop_probs: torch.Tensor  # buffer (register_buffer)

    def __init__(self, num_embeddings: int, n_dense: int, dim: int, sparse_grad: bool = True, init_std: float = 0.05,
                 oov_dropout: list[tuple[int, int, float]] | tuple = ()):
        super().__init__()
        self.dim = dim
        self.table = nn.Embedding(max(num_embeddings, 1), dim, sparse=sparse_grad)
        nn.init.normal_(self.table.weight, std=init_std)
        self.dense_vectors = nn.Parameter(torch.randn(n_dense, dim) * init_std) if n_dense else None
        register_oov_dropout(self, oov_dropout)

    def _drop_ids(self, sparse: torch.Tensor) -> torch.Tensor:
        """sparse int64 [B, Fs] with some ids of the configured fields replaced by their OOV row."""
        return drop_to_oov(sparse, self.drop_fields, self.drop_rows, self.drop_probs)

    # train.compile compiles the model's dense part only: inductor cannot compile the table's sparse gradient
    # ("Cannot access storage of SparseTensorImpl", torch 2.13 on CPU), so the lookup always runs eagerly
    @torch.compiler.disable
    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_fields.numel():
            sparse = self._drop_ids(sparse)
        emb = self.table(sparse)
        if self.dense_vectors is not None:
            emb = torch.cat([emb, dense.unsqueeze(-1).to(emb.dtype) * self.dense_vectors], dim=1)
        return emb

    def embedding_parameters(self) -> list[torch.Tensor]:
        """Parameters that the trainer optimises with Adagrad (the table and the dense-field vectors)."""
        return [p for p in (self.table.weight, self.dense_vectors) if p is not None]
