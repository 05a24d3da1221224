"""Data-parallel training: 2 gloo processes (torchrun) give the same run as 1 process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import pytest
import torch
import torch.distributed as dist

from pepnet.data.batches import BatchLoader, TensorData
from pepnet.metrics import MetricsReport
from pepnet.train.checkpoint import load_checkpoint
from pepnet.train.distributed import ShardedBatches

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _data(n: int) -> TensorData:
    td = TensorData.__new__(TensorData)
    td.sparse = torch.arange(n).unsqueeze(1)
    td.dense = torch.zeros(n, 0)
    td.labels = torch.zeros(n, 1)
    return td


@pytest.mark.parametrize("n,batch,world", [(103, 16, 2), (64, 16, 4), (10, 4, 3)])
def test_rank_shards_partition_each_global_batch(n, batch, world):
    """Rank r's k-th batch is its slice of the single-process k-th batch; together they are exactly that batch."""
    single = BatchLoader(_data(n), batch, shuffle=True, seed=7)
    single.epoch = 2
    shards = []
    for r in range(world):
        loader = ShardedBatches(_data(n), batch, seed=7, rank=r, world=world)
        loader.epoch = 2
        shards.append([b.sparse[:, 0].tolist() for b in loader])
    expected = [b.sparse[:, 0].tolist() for b in single]
    assert all(len(s) == len(expected) for s in shards)
    for k, rows in enumerate(expected):
        assert sum((shards[r][k] for r in range(world)), []) == rows


@needs_gloo
def test_two_processes_match_one(tmp_path, tiny_config_file):
    """torchrun --nproc_per_node 2 (gloo, CPU) reproduces the single-process loss curve, validation metrics and
    test metrics; only rank 0 writes the run files."""
    from pepnet.run import fit

    one = fit(tiny_config_file, tmp_path / "one", overrides=["train.epochs=2", "train.threads=1"], log=lambda _: None)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pepnet", "fit",
           str(tiny_config_file), "--out", str(tmp_path / "two"), "--set", "train.epochs=2", "--set", "train.threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 reports, rank 1 stays quiet

    h1 = pl.read_csv(tmp_path / "one" / "history.csv")
    h2 = pl.read_csv(tmp_path / "two" / "history.csv")
    assert h1.columns == h2.columns and h1.height == h2.height == 2
    for col in h1.columns:
        assert h2[col].to_list() == pytest.approx(h1[col].to_list(), rel=1e-5, abs=1e-6), col
    m1 = MetricsReport.from_json(tmp_path / "one" / "metrics.json")
    m2 = MetricsReport.from_json(tmp_path / "two" / "metrics.json")
    assert len(m1.rows) == len(m2.rows) > 0
    for ref, r in zip(m1.rows, m2.rows, strict=True):
        assert (r["domain"], r["task"], r["rows"]) == (ref["domain"], ref["task"], ref["rows"])
        for key in ("auc", "logloss"):
            if ref[key] == ref[key]:  # defined (not NaN)
                assert r[key] == pytest.approx(ref[key], abs=1e-5), (r["domain"], r["task"], key)
    w1 = load_checkpoint(tmp_path / "one" / "model.pt")
    w2 = load_checkpoint(tmp_path / "two" / "model.pt")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    assert one.report is not None


def test_fit_nproc_relaunches_itself_under_torchrun(monkeypatch, tmp_path, tiny_config_file):
    """`pepnet fit --nproc N` hands the same command (without --nproc) to torchrun with N processes."""
    from typer.testing import CliRunner

    import pepnet.train.distributed as distributed
    from pepnet.cli import app

    calls = []
    monkeypatch.setattr(distributed, "launch", lambda nproc, argv: calls.append((nproc, argv)) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = str(tmp_path / "run")
    cfg = str(tiny_config_file)
    res = CliRunner().invoke(app, ["fit", cfg, "--out", out, "--nproc", "3", "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    assert calls == [(3, ["fit", cfg, "--out", out, "--set", "train.epochs=1"])]


@needs_gloo
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="listening sockets are read from psutil on Linux")
def test_fit_nproc_listens_on_no_network_interface(tmp_path, tiny_config_file):
    """`pepnet fit --nproc 2`: while it runs, no process of its tree listens on an address other than loopback
    (torchrun's TCP stores, which have no authentication, are replaced by files; gloo uses the loopback)."""
    import contextlib
    import ipaddress
    import time

    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen([sys.executable, "-m", "pepnet", "fit", str(tiny_config_file), "--out", str(tmp_path / "r"),
                             "--nproc", "2", "--set", "train.epochs=2", "--set", "train.threads=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    listening: set[str] = set()
    try:
        while proc.poll() is None:
            try:
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    listening |= {c.laddr.ip for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            time.sleep(0.05)
        out = proc.communicate(timeout=240)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert listening, "gloo's own sockets should have been seen (the poll must work for this test to mean anything)"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in listening), listening


# after joining, the group gets the two kinds of holder a TorchRec-sharded fit leaves behind (module docstring of
# pepnet.train.distributed, *Exit*): a module imported now whose default argument is evaluated to the group
# (torch.distributed.optim, which TorchRec imports), and an unreachable object that refers to itself and holds the
# group (as TorchRec's sharded modules do), left to the exit handler (no automatic collection)
_JOIN_AND_HOLD = """
import gc
from pepnet.train.distributed import init_from_env
print(f"mean {init_from_env('cpu').mean(1.0)}", flush=True)
import torch.distributed.optim


class Holder:
    def __init__(self):
        self.me, self.group = self, dist.group.WORLD


gc.disable()
Holder()
"""


@needs_gloo
def test_process_group_is_destroyed_before_the_interpreter_exits(exit_probe):
    """A worker that joined the group through init_from_env leaves it at exit, and the group's gloo threads are joined
    then, even with other holders of the group left (so none is alive while Python finalises: such a thread that
    frees a tensor then aborts the process, SIGABRT under load)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(exit_probe(_JOIN_AND_HOLD))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mean 1.0") == 2
    assert proc.stdout.count("at exit: initialised False, gloo threads []") == 2, proc.stdout
