"""`pepnet fit` with TorchRec-sharded embedding tables (train.embedding_sharding): 2 gloo processes, table-wise,
train the same model as the unsharded 2-process run, and the run directory is an ordinary one (Run.load, predict).
Both runs' workers leave the process group at exit with gloo's threads joined."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.distributed as dist

from pepnet.nn.torchrec_embedding import available
from pepnet.train.checkpoint import load_checkpoint

# `python -m pepnet` in a worker script that reports at exit whether the group and its gloo threads are gone
_PEPNET = """
import runpy
runpy.run_module("pepnet", run_name="__main__", alter_sys=True)
"""


def _torchrun_fit(worker: Path, config, out, *sets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), "fit",
           str(config), "--out", str(out), "--set", "train.epochs=2", "--set", "train.threads=1"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.skipif(not available(), reason="TorchRec is not installed (scripts/install-torchrec.sh)")
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed gloo is not available")
def test_sharded_fit_matches_unsharded_two_processes(tmp_path, tiny_config_file, synthetic_parquet, exit_probe):
    """Table-wise sharding with TorchRec's fused Adagrad gives the data-parallel run's loss curve, validation and
    test metrics and best weights (same Adagrad update and eps; only float summation order differs), and writes
    model.pt in the fused-table layout, so Run.load and predict work as for any run. In both runs every worker's
    exit handler destroys the group with nothing else holding it, so gloo's threads are joined before Python
    finalises (TorchRec's sharded modules and torch.distributed.optim hold the group: pepnet.train.distributed)."""
    from pepnet.run import Run

    worker = exit_probe(_PEPNET)
    sharded = _torchrun_fit(worker, tiny_config_file, tmp_path / "sharded", "train.embedding_sharding=table_wise")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "sharded over 2 processes by TorchRec: table_wise" in sharded.stdout
    assert sharded.stdout.count("at exit: initialised False, gloo threads []") == 2, sharded.stdout[-3000:]
    plain = _torchrun_fit(worker, tiny_config_file, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert plain.stdout.count("at exit: initialised False, gloo threads []") == 2, plain.stdout[-3000:]

    h_plain = pl.read_csv(tmp_path / "plain" / "history.csv")
    h_sharded = pl.read_csv(tmp_path / "sharded" / "history.csv")
    assert h_plain.columns == h_sharded.columns and h_plain.height == h_sharded.height == 2
    for col in h_plain.columns:
        assert h_sharded[col].to_list() == pytest.approx(h_plain[col].to_list(), rel=1e-5, abs=1e-6), col
    w_plain = load_checkpoint(tmp_path / "plain" / "model.pt")
    w_sharded = load_checkpoint(tmp_path / "sharded" / "model.pt")
    assert w_sharded.keys() == w_plain.keys()
    for k in w_plain:
        torch.testing.assert_close(w_sharded[k], w_plain[k], rtol=1e-4, atol=1e-5)

    run = Run.load(tmp_path / "sharded")
    ref = Run.load(tmp_path / "plain")
    assert run.report is not None and len(run.report.rows) == len(ref.report.rows) > 0
    for r, q in zip(run.report.rows, ref.report.rows, strict=True):
        assert (r["domain"], r["task"]) == (q["domain"], q["task"])
        if q["auc"] == q["auc"]:
            assert r["auc"] == pytest.approx(q["auc"], abs=1e-4)
    p, q = run.predict(str(synthetic_parquet)), ref.predict(str(synthetic_parquet))
    assert p.height == q.height == 3000
    for col in ("p_click", "p_like"):
        assert p[col].to_list() == pytest.approx(q[col].to_list(), abs=1e-4)


def test_sharding_needs_torchrun_and_torchrec(tmp_path, tiny_config_file):
    """A single process cannot shard: a clear error names what is missing instead of training unsharded."""
    from pepnet.run import fit

    with pytest.raises(RuntimeError, match="torchrun with 2 or more" if available() else "needs TorchRec"):
        fit(tiny_config_file, tmp_path / "one", overrides=["train.embedding_sharding=table_wise"], log=lambda _: None)
