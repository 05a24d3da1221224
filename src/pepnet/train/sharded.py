"""Training with sharded embedding tables (``train.embedding_sharding``, TorchRec optional extra).

:class:`ShardedEmbeddings` turns a built model (fused :class:`~pepnet.nn.embedding.FeatureEmbedding`) into the
module the trainer steps: a copy whose table is split into per-field TorchRec tables
(:class:`~pepnet.nn.torchrec_embedding.TorchRecFeatureEmbedding`), given TorchRec's fused Adagrad
(``apply_optimizer_in_backward``: the tables are updated inside the backward pass, lr = ``train.embedding_lr``)
and wrapped in ``DistributedModelParallel`` (tables sharded, the dense part in DDP, which averages its
gradients: no manual gradient sync). The original model stays a plain fused-table model: :meth:`plain_model`
loads the gathered weights into it, so checkpoints, evaluation and ``model.pt`` use pepnet's normal
state_dict layout (``Run.load`` needs no TorchRec).
"""
from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..config import TrainConfig
from ..nn import torchrec_embedding as trec
from .distributed import DistContext, broadcast_parameters
from .optim import make_optimizers

if TYPE_CHECKING:
    from torchrec.distributed.model_parallel import DistributedModelParallel

# the planner's choices for ``auto``: not data_parallel (replicated tables; pepnet's own data-parallel path is
# embedding_sharding=none), whose training did not match the unsharded run (docs/distributed.md)
MODEL_PARALLEL = ["table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise"]
EPS = inspect.signature(torch.optim.Adagrad).parameters["eps"].default  # pepnet's (torch's) Adagrad eps: 1e-10


def shard_model(model: nn.Module, device: torch.device, sharding_type: str | list[str] | None = None,
                batch_size: int = 1024) -> DistributedModelParallel:
    """Wrap ``model`` (with a :class:`TorchRecFeatureEmbedding` as ``model.embedding``) in
    ``DistributedModelParallel`` on the current process group. ``sharding_type`` (``table_wise``,
    ``column_wise``, ``row_wise``, ...) forces one layout for every table, a list lets TorchRec's planner choose
    among those, None among all. The dense part is wrapped in DDP."""
    trec.require()
    import torch.distributed as dist
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv

    world = dist.get_world_size()
    keys = cast(trec.TorchRecFeatureEmbedding, model.embedding).keys
    types = [sharding_type] if isinstance(sharding_type, str) else sharding_type
    constraints = {k: ParameterConstraints(sharding_types=list(types)) for k in keys} if types else None
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device=device.type),
                                       batch_size=batch_size, constraints=constraints, debug=False)
    pg = dist.GroupMember.WORLD
    plan = planner.collective_plan(model, None, pg)
    return DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), device=device, plan=plan)


def gather_full_state(sharded: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded copies of every tensor of a DistributedModelParallel model's state_dict (a collective: every
    rank must call it); keys as the plain model's."""
    import torch.distributed as dist
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out = {}
    for key, value in sharded.state_dict().items():
        name = key.removeprefix("module.")
        if isinstance(value, ShardedTensor):
            full = torch.zeros(value.size(), dtype=value.dtype) if dist.get_rank() == 0 else None
            value.gather(0, full)
            obj = [full]
            dist.broadcast_object_list(obj, 0)
            assert obj[0] is not None  # rank 0's gathered tensor, broadcast to every rank
            out[name] = obj[0]
        elif hasattr(value, "full_tensor"):  # DTensor
            out[name] = value.full_tensor()
        else:
            out[name] = value
    return out


def load_full_state(sharded: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy an unsharded state_dict (keys of the plain model) into the local shards of a sharded model."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        for key, value in sharded.state_dict().items():
            full = state[key.removeprefix("module.")]
            if isinstance(value, ShardedTensor):
                for shard in value.local_shards():
                    (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(full[r0:r0 + nr, c0:c0 + nc])
            elif hasattr(value, "to_local"):  # DTensor
                raise NotImplementedError(f"{key}: loading DTensor shards is not supported")
            else:
                value.copy_(full)



class ShardedEmbeddings:
    """``model`` (a fused-table model) with its tables sharded over the ranks of ``ctx``; ``field_sizes``: the
    rows of each sparse field, in field order (the encoder's ``FieldInfo.size``)."""

    def __init__(self, model: nn.Module, field_sizes: list[int], cfg: TrainConfig, device: torch.device,
                 ctx: DistContext):
        if not trec.available():
            raise RuntimeError(
                f"train.embedding_sharding={cfg.embedding_sharding!r} needs TorchRec, which is not "
                "installed; install it with scripts/install-torchrec.sh or set train.embedding_sharding=none"
            )
        if not ctx.active:
            raise RuntimeError(
                f"train.embedding_sharding={cfg.embedding_sharding!r} shards the tables across "
                "processes; run under torchrun with 2 or more (pepnet fit --nproc N), or set "
                "train.embedding_sharding=none"
            )
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

        self.sizes = [int(n) for n in field_sizes]
        self.plain = model.to(device)
        broadcast_parameters(self.plain)  # every rank starts from rank 0's weights, as in data-parallel training
        trec_model = trec.use_torchrec_embedding(copy.deepcopy(self.plain).cpu(), self.sizes)
        # fbgemm's EXACT_ADAGRAD = torch's Adagrad update; its default eps (1e-8) is not torch's (1e-10), which moves
        # the loss curve visibly (the embedding gradients are small), so torch's is passed
        apply_optimizer_in_backward(
            torch.optim.Adagrad,
            cast(trec.TorchRecFeatureEmbedding, trec_model.embedding).ebc.parameters(),
            {"lr": cfg.embedding_lr, "eps": EPS},
        )
        start = {k: v.clone() for k, v in trec_model.state_dict().items()}
        kind = cfg.embedding_sharding if cfg.embedding_sharding != "auto" else MODEL_PARALLEL
        self.module = shard_model(trec_model, device, kind, batch_size=max(cfg.batch_size // ctx.world, 1))
        load_full_state(self.module, start)  # sharding allocates fresh tables: give them the model's weights
        self.plan = sorted({s.sharding_type for p in self.module.plan.plan.values() for s in p.values()})

    def optimizers(self, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
        """Adagrad for the dense-field vectors and Adam for the dense weights; the tables' Adagrad is fused."""
        inner = self.module.module
        embedding = cast(trec.TorchRecFeatureEmbedding, inner.embedding)
        return make_optimizers(inner, cfg, fused=embedding.ebc.parameters())

    def full_state(self) -> dict[str, torch.Tensor]:
        """The plain model's state_dict (fused table) from the shards; a collective: every rank must call it."""
        state = gather_full_state(self.module)
        fields = [
            state.pop(f"embedding.ebc.embedding_bags.{trec.table_name(i)}.weight")[:n] for i, n in enumerate(self.sizes)
        ]
        state["embedding.table.weight"] = torch.cat(fields)
        reference = self.plain.state_dict()
        return {k: state[k].to(v.device) for k, v in reference.items()}

    def plain_model(self) -> nn.Module:
        """The plain (fused-table) model holding the current weights (a collective, see :meth:`full_state`)."""
        self.plain.load_state_dict(self.full_state())
        return self.plain


__all__ = ["ShardedEmbeddings", "gather_full_state", "load_full_state", "shard_model"]
