"""TorchRec embeddings (optional extra): the per-field TorchRec tables reproduce the fused table, and a model
sharded by DistributedModelParallel (2 gloo processes, table-wise and column-wise) gives the unsharded outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pepnet.nn.embedding import FeatureEmbedding
from pepnet.nn.torchrec_embedding import available

pytestmark = pytest.mark.skipif(not available(), reason="TorchRec is not installed (scripts/install-torchrec.sh)")

WORKER = Path(__file__).with_name("torchrec_worker.py")


def test_torchrec_tables_equal_the_fused_table():
    from pepnet.nn.torchrec_embedding import TorchRecFeatureEmbedding

    torch.manual_seed(0)
    sizes = [4, 9, 3]
    fused = FeatureEmbedding(sum(sizes), n_dense=2, dim=5)
    trec = TorchRecFeatureEmbedding.from_fused(fused, sizes)
    offsets = torch.tensor([0, 4, 13])
    sparse = torch.stack([torch.randint(0, n, (17,)) for n in sizes], dim=1) + offsets
    dense = torch.randn(17, 2)
    torch.testing.assert_close(trec(sparse, dense), fused(sparse, dense), rtol=0, atol=0)
    assert sum(p.numel() for p in trec.embedding_parameters()) == sum(p.numel() for p in fused.embedding_parameters())


def test_torchrec_tables_keep_the_fused_tables_oov_dropout():
    """``train.embedding_sharding`` converts the model with ``from_fused``: the OOV dropout of the fused table
    (fields, OOV rows, probabilities) carries over, so training drops the same ids (same random draws) and
    evaluation drops none."""
    from pepnet.nn.torchrec_embedding import TorchRecFeatureEmbedding

    torch.manual_seed(0)
    sizes = [4, 9, 3]
    fused = FeatureEmbedding(sum(sizes), n_dense=1, dim=5, oov_dropout=[(1, 4, 0.5)])
    trec = TorchRecFeatureEmbedding.from_fused(fused, sizes)
    sparse = torch.stack([torch.randint(1, 4, (64,)), torch.randint(5, 13, (64,)), torch.randint(14, 16, (64,))], 1)
    dense = torch.randn(64, 1)
    fused.train(), trec.train()
    torch.manual_seed(1)
    expected = fused(sparse, dense)
    torch.manual_seed(1)
    got = trec(sparse, dense)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    oov = fused.table.weight[4]
    dropped = (got[:, 1] == oov).all(dim=1)
    assert 10 < int(dropped.sum()) < 54                 # about half of field 1's ids became its OOV row
    assert torch.equal(got[:, 0], fused.table.weight[sparse[:, 0]])  # other fields untouched
    fused.eval(), trec.eval()
    assert not (trec(sparse, dense)[:, 1] == oov).all(dim=1).any()    # evaluation drops nothing


def test_sharded_model_matches_unsharded_on_two_processes(tmp_path):
    import torch.distributed as dist

    if not dist.is_gloo_available():
        pytest.skip("torch.distributed gloo is not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           "table_wise,column_wise", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for kind in ("table_wise", "column_wise"):
        err, before, world, used = (tmp_path / f"result.{kind}.txt").read_text().split()
        assert int(world) == 2 and used == kind
        assert float(before) > 1e-3      # the sharded model really held other weights before loading
        assert float(err) <= 1e-6, kind  # ... and after loading the plain weights, its outputs are the plain ones
