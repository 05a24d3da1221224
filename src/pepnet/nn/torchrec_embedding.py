"""Model-parallel embeddings with TorchRec (optional extra ``pepnet[torchrec]``; install: scripts/install-torchrec.sh).

:class:`TorchRecFeatureEmbedding` is a drop-in for :class:`~pepnet.nn.embedding.FeatureEmbedding`: the same
inputs (sparse int64 [B, Fs] ids offset into the fused table, dense float32 [B, Fd]) and output
(float [B, Fs + Fd, d]), but the fused table is split into one TorchRec table per sparse field, held in an
``EmbeddingBagCollection`` (one id per bag, sum pooling = a plain lookup).
:func:`pepnet.train.sharded.shard_model` then wraps the whole model in ``DistributedModelParallel``: the tables
are sharded across the ranks (table-wise or
column-wise on CPU with gloo, row-wise on GPU, or whatever TorchRec's planner picks), the dense part (gates,
towers, dense-field vectors) is replicated with DDP.

TorchRec is imported lazily, so pepnet works without it; :func:`available` says whether it is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from .embedding import FeatureEmbedding, drop_to_oov, register_oov_dropout


def available() -> bool:
    """True if TorchRec (and its fbgemm kernels) can be imported."""
    if importlib.util.find_spec("torchrec") is None:
        return False
    try:
        import torchrec  # noqa: F401
    except Exception:  # a broken install (e.g. fbgemm built for another torch) counts as absent
        return False
    return True


def require():
    if not available():
        raise ImportError(
            "TorchRec is not installed; install the optional extra with scripts/install-torchrec.sh "
            "(torchrec==1.8.0 --no-deps, fbgemm-gpu-cpu==1.8.0, tensordict, pyre-extensions)"
        )
    import torchrec

    return torchrec


def table_name(field: int) -> str:
    return f"field_{field}"


class TorchRecFeatureEmbedding(nn.Module):
    """One TorchRec table per sparse field. ``field_sizes``: rows of each field (the encoder's
    ``FieldInfo.size``, in field order); ids arrive offset into the fused table and are made local here.

    forward(sparse int64 [B, Fs], dense float32 [B, Fd]) -> float [B, Fs + Fd, d]. ``oov_dropout`` as in
    :class:`~pepnet.nn.embedding.FeatureEmbedding` (training mode only).
    """
    offsets: torch.Tensor  # buffer (register_buffer)
    drop_fields: torch.Tensor  # buffer (register_buffer)
    drop_rows: torch.Tensor  # buffer (register_buffer)
    drop_probs: torch.Tensor  # buffer (register_buffer)

    def __init__(
        self,
        field_sizes: Iterable[int],
        n_dense: int,
        dim: int,
        init_std: float = 0.05,
        device: torch.device | str | None = None,
        oov_dropout: list[tuple[int, int, float]] | tuple = (),
    ):
        super().__init__()
        torchrec = require()
        sizes = [int(s) for s in field_sizes]
        self.dim, self.n_sparse = dim, len(sizes)
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.keys = [table_name(i) for i in range(len(sizes))]
        tables = [torchrec.EmbeddingBagConfig(name=k, embedding_dim=dim, num_embeddings=max(n, 1), feature_names=[k],
                                              pooling=torchrec.PoolingType.SUM)
                  for k, n in zip(self.keys, sizes, strict=True)]
        self.ebc = torchrec.EmbeddingBagCollection(tables=tables, device=torch.device(device or "cpu"))
        if str(device) != "meta":
            with torch.no_grad():
                for w in self.ebc.embedding_bags.values():
                    w.weight.normal_(std=init_std)
        self.dense_vectors = nn.Parameter(torch.randn(n_dense, dim) * init_std) if n_dense else None
        register_oov_dropout(self, oov_dropout)  # ids (fused-table rows) replaced before they are made local

    @classmethod
    def from_fused(cls, fused: FeatureEmbedding, field_sizes: Iterable[int]) -> TorchRecFeatureEmbedding:
        """The same embeddings as a fused :class:`FeatureEmbedding`: its rows copied field by field, and its
        ``oov_dropout`` (the same fields, OOV rows and probabilities)."""
        sizes = list(field_sizes)
        n_dense = 0 if fused.dense_vectors is None else fused.dense_vectors.shape[0]
        drops = list(zip(fused.drop_fields.tolist(), fused.drop_rows.tolist(), fused.drop_probs.tolist(), strict=True))
        out = cls(sizes, n_dense, fused.dim, oov_dropout=drops)
        with torch.no_grad():
            start = 0
            for k, n in zip(out.keys, sizes, strict=True):
                out.ebc.embedding_bags[k].weight.copy_(fused.table.weight[start:start + n])
                start += n
            if n_dense:
                assert out.dense_vectors is not None and fused.dense_vectors is not None  # n_dense > 0
                out.dense_vectors.copy_(fused.dense_vectors)
        return out

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if self.training and self.drop_fields.numel():
            sparse = drop_to_oov(sparse, self.drop_fields, self.drop_rows, self.drop_probs)
        b = sparse.shape[0]
        local = (sparse - self.offsets).t().reshape(-1)  # field-major: all of field 0, then field 1, ...
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.keys, values=local, lengths=torch.ones(b * self.n_sparse, dtype=torch.int32, device=sparse.device)
        )
        pooled = self.ebc(kjt).to_dict()
        emb = torch.stack([pooled[k] for k in self.keys], dim=1)  # [B, Fs, d]
        if self.dense_vectors is not None:
            emb = torch.cat([emb, dense.unsqueeze(-1).to(emb.dtype) * self.dense_vectors], dim=1)
        return emb

    def embedding_parameters(self) -> list[torch.Tensor]:
        return [p for p in (*self.ebc.parameters(), self.dense_vectors) if p is not None]


def use_torchrec_embedding(model: nn.Module, field_sizes: Iterable[int]) -> nn.Module:
    """Replace ``model.embedding`` (a fused FeatureEmbedding) by the equivalent TorchRec one, weights kept."""
    model.embedding = TorchRecFeatureEmbedding.from_fused(cast(FeatureEmbedding, model.embedding), field_sizes)
    return model


__all__ = ["TorchRecFeatureEmbedding", "available", "use_torchrec_embedding"]
