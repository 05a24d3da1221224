"""Run by tests/nn/test_torchrec.py under torchrun (2 gloo processes on CPU): a PEPNet whose embeddings are
TorchRec tables, sharded with DistributedModelParallel, must give the outputs of the same unsharded model.

usage: torchrun --nproc_per_node 2 tests/nn/torchrec_worker.py SHARDING_TYPE[,SHARDING_TYPE...] OUT_DIR
(a sharding type of TorchRec, or ``planner`` to let TorchRec's planner choose); writes OUT_DIR/result.TYPE.txt:
max |sharded - plain| (outputs, and the gathered state_dict) after loading the plain weights, the same before
loading, world size, sharding types used.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pepnet.config import ModelConfig
from pepnet.nn import ModelLayout, build_model
from pepnet.nn.torchrec_embedding import use_torchrec_embedding
from pepnet.train.sharded import gather_full_state, load_full_state, shard_model

FIELD_SIZES = [7, 11, 5, 13, 9, 6]
GROUPS = {"general": [0, 1, 6], "domain_side": [2], "user_prior": [3], "item_prior": [4], "author_prior": [5]}


def main() -> None:
    out = Path(sys.argv[2])
    dist.init_process_group("gloo")
    for sharding in sys.argv[1].split(","):
        check(sharding, out)
    dist.barrier()  # no rank tears its connections down while the other still uses them
    dist.destroy_process_group()
    # The sharded modules keep references to gloo work; destroying them during interpreter finalisation
    # aborted a rank twice in ~8 full-suite runs ("terminate called without an active exception", after the
    # results were computed). The results are written; leave without finalising the interpreter.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def check(sharding: str, out: Path) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same plain model on every rank
    layout = ModelLayout(num_embeddings=sum(FIELD_SIZES), n_sparse=len(FIELD_SIZES), n_dense=1, tasks=("click", "like"),
                         groups=GROUPS, n_domains=4, domain_field=2, domain_offset=sum(FIELD_SIZES[:2]))
    plain = build_model(layout, ModelConfig(embedding_dim=8, hidden_units=[16, 8], gate_hidden=8))
    use_torchrec_embedding(plain, FIELD_SIZES)
    full = {k: v.clone() for k, v in plain.state_dict().items()}
    model = build_model(layout, ModelConfig(embedding_dim=8, hidden_units=[16, 8], gate_hidden=8))
    use_torchrec_embedding(model, FIELD_SIZES)
    sharded = shard_model(model, torch.device("cpu"), None if sharding == "planner" else sharding, batch_size=32)
    g = torch.Generator().manual_seed(100 + rank)  # every rank its own batch
    offsets = torch.tensor([0] + FIELD_SIZES[:-1]).cumsum(0)
    local = torch.stack([torch.randint(0, n, (32,), generator=g) for n in FIELD_SIZES], dim=1)
    sparse, dense = local + offsets, torch.randn(32, 1, generator=g)
    with torch.no_grad():
        expected = plain(sparse, dense)
        before = (sharded(sparse, dense) - expected).abs().max().item()  # other weights: must differ
        load_full_state(sharded, full)
        err = (sharded(sparse, dense) - expected).abs().max().item()
    gathered = gather_full_state(sharded)  # back to one unsharded state_dict: the plain weights again
    assert gathered.keys() == full.keys(), sorted(set(gathered) ^ set(full))
    err = max(err, max((gathered[k] - full[k]).abs().max().item() for k in full if full[k].numel()))
    kinds = sorted({s.sharding_type for p in sharded.plan.plan.values() for s in p.values()})
    result = torch.tensor([err, -before])
    dist.all_reduce(result, op=dist.ReduceOp.MAX)
    if rank == 0:
        line = f"{result[0].item()!r} {-result[1].item()!r} {world} {','.join(kinds)}\n"
        (out / f"result.{sharding}.txt").write_text(line)


if __name__ == "__main__":
    main()
