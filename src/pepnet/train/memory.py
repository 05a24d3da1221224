"""Memory planning: before any weight is allocated, estimate what training will hold and refuse early.

The estimate counts what training cannot do without (a lower bound; activations and the encoded data,
which is already loaded when the check runs, come on top):

* embedding parameters (the fused table and the dense-field vectors), trained with Adagrad:
  weights + Adagrad's accumulated squares = ``rows x dim x 4 bytes x 2``, plus the row-wise (sparse)
  gradient of one batch (``batch_size x sparse fields x dim`` values and their int64 row indices) and, on CPU
  for a table of at most ``WHOLE_TABLE_RATIO`` (8) times that many rows, the dense gradient of the
  whole table that RowWiseAdagrad applies there (``rows x dim x 4 bytes``);
* every other (dense) parameter, trained with Adam: weights + gradients + two moments = ``params x 4 bytes x 4``;
* one in-memory copy of weights and optimiser state while a checkpoint is serialised;
* the encoded training split when it is moved to the training device (``train.data_on_device`` on a GPU).

Parameter counts come from the configured model built on PyTorch's ``meta`` device (shapes only, no
storage), so every registered model is counted exactly, whatever its architecture.
"""
from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from ..config import ModelConfig, TrainConfig
from ..nn import ModelLayout, build_model
from .runtime import TrainingError
from .sparse_adagrad import takes_whole_table

FLOAT = 4   # bytes of a float32 value
INDEX = 8   # bytes of an int64 row index
GIB = 2**30


class MemoryPlanError(TrainingError):
    """The model and its optimiser state would not fit in the memory available for training."""


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated bytes of training state, and what is available. ``fields``: (name, rows) of the sparse fields."""

    embedding_rows: int
    embedding_dim: int
    embedding_params: int
    dense_params: int
    embedding_bytes: int     # weights + Adagrad state
    sparse_grad_bytes: int   # one batch's row-wise gradient (and the whole table's, where RowWiseAdagrad uses it)
    dense_bytes: int         # weights + gradients + Adam's two moments
    checkpoint_bytes: int    # serialised copy of weights + optimiser state
    data_bytes: int          # training split held on the device (train.data_on_device), else 0
    available_bytes: int
    available_source: str
    fields: tuple[tuple[str, int], ...] = ()

    @property
    def total_bytes(self) -> int:
        return (
            self.embedding_bytes + self.sparse_grad_bytes + self.dense_bytes + self.checkpoint_bytes + self.data_bytes
        )

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.available_bytes

    def describe(self) -> str:
        """One line: the estimate, its parts and what is available."""
        return (
            f"training needs about {_gib(self.total_bytes)} (embedding table {self.embedding_rows:,} rows x "
            f"{self.embedding_dim} with Adagrad state {_gib(self.embedding_bytes)}, {self.dense_params:,} dense "
            f"parameters with Adam state {_gib(self.dense_bytes)}, checkpoint copy {_gib(self.checkpoint_bytes)}"
            + (f", training data on the device {_gib(self.data_bytes)}" if self.data_bytes else "")
            + "); "
            f"available: {_gib(self.available_bytes)} ({self.available_source})"
        )

    def advice(self) -> str:
        """What to change, naming the largest sparse fields."""
        big = sorted(self.fields, key=lambda f: -f[1])[:3]
        names = ", ".join(f"{n} ({r:,} rows)" for n, r in big)
        return (
            f"largest embedding fields: {names}. Hash them (features[].hash_buckets), raise their min_count, "
            f"lower model.embedding_dim, or train on a machine with more memory"
        )


def _gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB" if n >= GIB / 100 else f"{n / 2**20:.3g} MiB"


def available_memory(cfg: TrainConfig, device: torch.device) -> tuple[int, str]:
    """(bytes, where the figure comes from): train.memory_limit_gb if set, else free GPU memory on a CUDA
    device, else the RAM the operating system reports available (psutil)."""
    if cfg.memory_limit_gb is not None:
        return int(cfg.memory_limit_gb * GIB), "train.memory_limit_gb"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    return int(psutil.virtual_memory().available), "available RAM (psutil)"


def plan_memory(
    layout: ModelLayout,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    fields: list[tuple[str, int]] | None = None,
    data_bytes: int = 0,
) -> MemoryPlan:
    """Estimate the training memory of the configured model on ``layout`` without allocating it.
    ``fields``: (name, rows) of the sparse fields, named in the advice; ``data_bytes``: size of the training
    arrays when ``train.data_on_device`` puts them on a GPU."""
    with torch.device("meta"):
        model = build_model(layout, model_cfg)
    # torch types nn.Module's dynamic attributes as Tensor | Module ("not callable"); hasattr guards the call
    emb = list(model.embedding_parameters()) if hasattr(model, "embedding_parameters") else []  # type: ignore[operator]
    emb_ids = {id(p) for p in emb}
    n_emb = sum(p.numel() for p in emb)
    n_dense = sum(p.numel() for p in model.parameters() if id(p) not in emb_ids)
    dim = model_cfg.embedding_dim
    grad_rows = train_cfg.batch_size * layout.n_sparse
    sparse_grad = grad_rows * (dim * FLOAT + INDEX)
    if takes_whole_table(layout.num_embeddings, grad_rows, device):
        sparse_grad += layout.num_embeddings * dim * FLOAT  # the whole table's gradient (RowWiseAdagrad, small tables)
    available, source = available_memory(train_cfg, device)
    return MemoryPlan(
        embedding_rows=layout.num_embeddings,
        embedding_dim=dim,
        embedding_params=n_emb,
        dense_params=n_dense,
        embedding_bytes=n_emb * FLOAT * 2,
        sparse_grad_bytes=sparse_grad,
        dense_bytes=n_dense * FLOAT * 4,
        checkpoint_bytes=(n_emb * 2 + n_dense * 3) * FLOAT,
        data_bytes=data_bytes,
        available_bytes=available,
        available_source=source,
        fields=tuple(fields or ()),
    )


def check_memory(plan: MemoryPlan) -> None:
    """Raise MemoryPlanError with the estimate and advice when the plan does not fit."""
    if not plan.fits:
        raise MemoryPlanError(f"not enough memory: {plan.describe()}. {plan.advice()}")


__all__ = ["MemoryPlan", "MemoryPlanError", "available_memory", "check_memory", "plan_memory"]
