"""FeatureEmbedding: one fused table for every sparse field, plus a learned vector per dense field."""
from __future__ import annotations

import torch
from torch import nn


class FeatureEmbedding(nn.Module):
    """Embeds all fields of a batch.

    sparse: int64 [B, Fs] ids already offset into the fused table; dense: float32 [B, Fd].
    Returns float [B, Fs + Fd, d]: sparse rows looked up, dense field j as ``value * v_j``.
    With ``sparse_grad`` the table produces sparse (row-wise) gradients, so the optimiser touches
    only the rows of the batch.
    """

    def __init__(self, num_embeddings: int, n_dense: int, dim: int, sparse_grad: bool = True, init_std: float = 0.05):
        super().__init__()
        self.dim = dim
        self.table = nn.Embedding(max(num_embeddings, 1), dim, sparse=sparse_grad)
        nn.init.normal_(self.table.weight, std=init_std)
        self.dense_vectors = nn.Parameter(torch.randn(n_dense, dim) * init_std) if n_dense else None

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        emb = self.table(sparse)
        if self.dense_vectors is not None:
            emb = torch.cat([emb, dense.unsqueeze(-1).to(emb.dtype) * self.dense_vectors], dim=1)
        return emb

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Parameters that the trainer optimises with Adagrad (the table and the dense-field vectors)."""
        return [p for p in (self.table.weight, self.dense_vectors) if p is not None]
