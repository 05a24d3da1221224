"""Data-parallel training: process group, per-rank shards of each global batch, gradient all-reduce,
gathered predictions.

Launch with ``torchrun --nproc_per_node N -m pepnet fit CONFIG --out RUN`` (or ``pepnet fit --nproc N``,
which runs torchrun itself). Backend: gloo on CPU, nccl on GPU (one GPU per process, ``cuda:LOCAL_RANK``).

* **Batches.** ``train.batch_size`` is the *global* batch: every rank walks the same shuffled order
  (same seed) and takes its own contiguous slice of each global batch (:class:`ShardedBatches`), so N
  processes make the same optimiser steps as one process with the same batch size.
* **Gradients.** Synchronised by hand after ``backward`` (:func:`sync_gradients`): dense gradients with an
  all-reduce, the embedding table's sparse (row-wise) gradients by all-gathering their (row, value)
  pairs — this works on gloo and nccl alike (nccl has no sparse all-reduce), and sends only the rows the
  batch touched. Each rank then takes the same optimiser step, so the replicas stay identical.
* **Evaluation.** Each rank scores a contiguous block of rows and the blocks are gathered in order, so
  every rank computes metrics on exactly the predictions a single process would make (and all ranks
  take the same early-stopping decision).
* **Files.** Only rank 0 writes checkpoints and run files.
* **Exit.** The process group that :func:`init_from_env` creates is destroyed at interpreter exit
  (:func:`leave`, registered with ``atexit``), before Python finalises: otherwise gloo's worker threads
  outlive the interpreter, and one that drops the last reference to a tensor then needs the GIL during
  finalisation, which ends the thread inside a C++ destructor and aborts the process
  (``terminate called without an active exception``, SIGABRT). Destroying the group joins those threads only
  if c10d held the last reference to it, so :func:`leave` first releases the two other holders a TorchRec-sharded
  fit leaves behind: its sharded modules refer to themselves (their state_dict hooks are bound methods and
  closures over the module), so only the cyclic garbage collector frees them and, with them, the ShardingEnv,
  ShardedTensors and fused optimisers that hold the group; and TorchRec imports ``torch.distributed.optim``
  after the group exists, whose ``_broadcast_object(group=dist.group.WORLD)`` default, evaluated at import,
  holds the group for the life of the interpreter (:func:`_drop_group_defaults`).
"""
from __future__ import annotations

import atexit
import gc
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..data.batches import Batch, BatchLoader, TensorData
from .runtime import resolve_device

STORE_FILE = "PEPNET_STORE_FILE"  # set by `launch`: the file store the workers' process group meets in


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, name: str) -> torch.device:
        """The device of this rank for ``train.device``: ``cuda:LOCAL_RANK`` for cuda / auto-with-GPU."""
        dev = resolve_device(name)
        if dev.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return dev

    def loader(self, data: TensorData, batch_size: int, seed: int) -> BatchLoader:
        """The training batches of this rank (all of them when not distributed)."""
        if not self.active:
            return BatchLoader(data, batch_size, shuffle=True, seed=seed)
        return ShardedBatches(data, batch_size, seed, self.rank, self.world)

    # ------------------------------------------------------------------ collectives (no-ops when world == 1)
    def comm_device(self) -> torch.device:
        """Where collectives put their tensors: ``cuda:LOCAL_RANK`` with nccl, else the cpu."""
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a plain single process gets ``DistContext()``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    ctx = DistContext(rank, world, local)
    if not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this build of torch")
        gpu = ctx.device(device).type == "cuda"
        if gpu:
            torch.cuda.set_device(local)
        backend = "nccl" if gpu else "gloo"
        if os.environ.get(STORE_FILE):  # launched by `launch`: meet in a file, not in a TCP store
            dist.init_process_group(backend, store=dist.FileStore(os.environ[STORE_FILE], world), rank=rank,
                                    world_size=world)
        else:
            dist.init_process_group(backend)
        atexit.register(leave)
    return ctx


def leave() -> None:
    """Destroy the default process group if one is initialised: joins the backend's worker threads while the
    interpreter can still run them (called at exit for the group :func:`init_from_env` created). Unreachable
    objects that hold the group (TorchRec's self-referencing sharded modules) are freed first, and default
    arguments that took it at import are dropped, so that c10d holds the last reference and the group's
    destructor runs here (module docstring, *Exit*)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        _drop_group_defaults(dist.group.WORLD)
        dist.destroy_process_group()


def _drop_group_defaults(group: object) -> None:
    """Replace ``group`` by None in the default arguments of the functions of the loaded ``torch.distributed``
    modules. A parameter ``group=dist.group.WORLD`` takes its default when the module is imported: None before
    the group exists, the group itself after, and then the function holds the group until the interpreter ends
    (``torch.distributed.optim.zero_redundancy_optimizer._broadcast_object``, which TorchRec imports while
    sharding). None is the default such a function has when imported first, and names the same default group."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "torch.distributed" or name.startswith("torch.distributed.")):
            continue
        for fn in list(vars(module).values()):
            if isinstance(fn, types.FunctionType) and fn.__defaults__ and any(d is group for d in fn.__defaults__):
                fn.__defaults__ = tuple(None if d is group else d for d in fn.__defaults__)


class ShardedBatches(BatchLoader):
    """Global batches of ``batch_size`` rows in the shared shuffled order; yields rank ``rank``'s contiguous
    share of each (``torch.tensor_split`` of the global batch into ``world`` parts)."""

    def __init__(self, data: TensorData, batch_size: int, seed: int, rank: int, world: int):
        super().__init__(data, batch_size, shuffle=True, seed=seed)
        self.shard_rank, self.shard_world = rank, world

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        assert order is not None  # always shuffled (shuffle=True above)
        n = len(self.data)
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size: min((b + 1) * self.batch_size, n)]
            yield self.data.batch(torch.tensor_split(idx, self.shard_world)[self.shard_rank])
        self.start_batch = 0


def broadcast_parameters(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical replicas at the start)."""
    with torch.no_grad():
        for t in model.state_dict().values():
            dist.broadcast(t, 0)


def _gather_varlen(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs between ranks."""
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    pad = torch.zeros((max(sizes_i) - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    full = torch.cat([t, pad])
    parts = [torch.empty_like(full) for _ in range(world)]
    dist.all_gather(parts, full.contiguous())
    return [p[:s] for p, s in zip(parts, sizes_i, strict=True)]


def sync_gradients(model: nn.Module, world: int) -> None:
    """Replace every gradient by its mean over the ranks (dense: all-reduce; sparse: gather rows and values)."""
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce()
            idx = _gather_varlen(g.indices().t().contiguous(), world)   # [nnz_r, 1] per rank
            val = _gather_varlen(g.values(), world)                     # [nnz_r, d] per rank
            p.grad = torch.sparse_coo_tensor(torch.cat(idx).t(), torch.cat(val) / world, g.shape).coalesce()
        else:
            dist.all_reduce(g)
            g.div_(world)


def gather_rows(local: np.ndarray, world: int, device: torch.device) -> np.ndarray:
    """Concatenate every rank's block of rows, in rank order."""
    parts = _gather_varlen(torch.from_numpy(np.ascontiguousarray(local)).to(device), world)
    return torch.cat(parts).cpu().numpy()


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m pepnet ARGV`` under torchrun with ``nproc`` processes on this machine; returns the exit code.

    Nothing listens on the network: torchrun's rendezvous and the workers' process group meet in files of a
    private temporary folder (mode 0700) instead of TCP stores, which have no authentication and listen on
    every interface whatever address they are given; gloo and NCCL use the loopback interface unless
    GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME say otherwise."""
    import subprocess
    import sys
    import tempfile
    import uuid

    loopback = "lo0" if sys.platform == "darwin" else "lo"
    with tempfile.TemporaryDirectory(prefix="pepnet-rendezvous-") as folder:
        env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", STORE_FILE: os.path.join(folder, "workers")}
        for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            env.setdefault(var, loopback)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={os.path.join(folder, 'rendezvous')}",
               "--rdzv-conf=store_type=file", f"--rdzv-id={uuid.uuid4().hex}", "--local-addr=127.0.0.1",
               "-m", "pepnet", *argv]
        return subprocess.call(cmd, env=env)


__all__ = ["DistContext", "ShardedBatches", "broadcast_parameters", "gather_rows", "init_from_env", "launch",
           "leave", "sync_gradients"]
