"""Faults: damaged checkpoints are named on load; a run killed with SIGKILL mid-epoch resumes to exactly the
metrics of an uninterrupted run; a non-finite loss stops (or skips) naming task and batch; training that
cannot fit in memory is refused before any weight is allocated."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.config import ModelConfig, TrainConfig, parse_config
from pepnet.data.batches import TensorData
from pepnet.data.encoder import EncodedData
from pepnet.nn import ModelLayout, build_model
from pepnet.nn.registry import MODELS
from pepnet.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pepnet.train.memory import FLOAT, MemoryPlanError, check_memory, plan_memory
from pepnet.train.trainer import CHECKPOINT, Trainer, TrainingError

SCHEMA = {
    "domain": "domain_id", "user": "user_id", "time": "time", "labels": {"click": "click", "like": "like"},
    "features": [{"name": "user_id"}, {"name": "item_id"}, {"name": "author_id"}, {"name": "domain_id"},
                 {"name": "d0", "kind": "dense"}],
    "stats": [{"name": "user_click", "keys": ["user_id"], "stat": "rate", "target": "click"}],
    "groups": {"general": ["user_id", "item_id", "author_id", "domain_id", "d0"], "domain_side": ["domain_id"],
               "user_prior": ["user_id", "user_click"], "item_prior": ["item_id"], "author_prior": ["author_id"]},
}


def tree(n_rows: int = 3000, **train) -> dict:
    """A small deterministic run on the synthetic generator (dropout on, so the dropout RNG matters)."""
    return {
        "data": {"dataset": "synthetic", "split": {"method": "chronological", "fractions": [0.8, 0.1, 0.1]},
                 "synthetic": {"n_rows": n_rows, "n_users": 300, "n_items": 500, "n_authors": 60, "n_dense": 1,
                               "seed": 5}},
        "schema": SCHEMA,
        "model": {"embedding_dim": 8, "hidden_units": [32, 16], "gate_hidden": 8, "dropout": 0.2},
        "train": {"epochs": 2, "batch_size": 48, "progress": False, "deterministic": True, "threads": 1,
                  "patience": 5, "seed": 11, **train},
    }


@pytest.fixture
def torch_globals():
    """pepnet.fit sets torch's thread count and deterministic mode for the process: restore them."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_one_file(tmp_path):
    obj = {"w": torch.arange(10.0), "step": 7}
    digest = save_checkpoint(obj, tmp_path / "ck.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # digest inside, no temp file left
    assert digest in (tmp_path / "ck.pt").read_bytes()[:100].decode()
    back = load_checkpoint(tmp_path / "ck.pt")
    assert back["step"] == 7 and torch.equal(back["w"], obj["w"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_damaged_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "ck.pt"
    save_checkpoint({"w": torch.randn(100)}, path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) - 50]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = raw[10:]
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg
    expected = "corrupted or truncated" if damage in ("flip", "truncate") else "truncated or not a pepnet checkpoint"
    assert expected in msg


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"v": 1}, path)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_truncated_model_weights_are_named_by_the_cli(tmp_path, torch_globals):
    run = tmp_path / "run"
    pepnet.fit(parse_config(tree(n_rows=600, epochs=1)), run, log=lambda _: None)
    raw = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(raw[:-10])
    result = CliRunner().invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"checkpoint {run / 'model.pt'} is corrupted or truncated" in errors[0]


# ----------------------------------------------------------------------------- SIGKILL and resume


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, torch_globals):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tree(checkpoint_every=3)))
    # reference: the same config, uninterrupted (in this process)
    pepnet.fit(cfg, tmp_path / "ref", log=lambda _: None)
    # interrupted: a real process, killed as soon as its first in-epoch checkpoint exists
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pepnet", "fit", str(cfg), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (run / CHECKPOINT).exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(run / CHECKPOINT)["state"]
    assert state["epoch"] == 0 and 0 < state["batch"] < 50, state  # killed mid-epoch 1 (50 batches per epoch)
    assert not (run / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "pepnet", "fit", str(cfg), "--out", str(run), "--resume"],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run / CHECKPOINT}: epoch 0, batch" in resumed.stdout
    for name in ("metrics.json", "history.csv"):  # test metrics and per-epoch train loss / valid metrics
        assert (run / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    ref, res = load_checkpoint(tmp_path / "ref" / "model.pt"), load_checkpoint(run / "model.pt")
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path, torch_globals):
    """Killed right after config.yaml was written: --resume trains from scratch and writes every run file."""
    run = tmp_path / "run"
    pepnet.fit(parse_config(tree(n_rows=600, epochs=1)), run, log=lambda _: None)
    expected = (run / "metrics.json").read_bytes()
    for p in sorted(run.rglob("*"), reverse=True):
        if p.name != "config.yaml":
            p.rmdir() if p.is_dir() else p.unlink()
    pepnet.fit(None, run, resume=True, log=lambda _: None)
    assert (run / "metrics.json").read_bytes() == expected
    assert (run / "run.json").is_file() and (run / "encoder" / "encoder.json").is_file()


# ----------------------------------------------------------------------------- non-finite loss


class NaNAt(torch.nn.Module):
    """A PEPNet whose ``at``-th training forward pass returns NaN logits for task 1 (``like``) only."""

    def __init__(self, layout: ModelLayout, cfg: ModelConfig, at: int):
        super().__init__()
        self.inner, self.at, self.calls = build_model(layout, cfg.model_copy(update={"name": "pepnet"})), at, 0

    def forward(self, sparse, dense):
        logits = self.inner(sparse, dense)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                logits = torch.cat([logits[:, :1], torch.full_like(logits[:, 1:], float("nan"))], dim=1)
        return logits

    def embedding_parameters(self):
        return self.inner.embedding_parameters()


@pytest.fixture
def nan_model():
    MODELS["nan_at_4"] = lambda layout, cfg: NaNAt(layout, cfg, at=4)
    yield "nan_at_4"
    MODELS.pop("nan_at_4")


def test_nan_loss_stops_naming_task_and_batch_and_keeps_checkpoint(tmp_path, nan_model, torch_globals):
    config = tree(n_rows=1200, checkpoint_every=1, epochs=1)
    config["model"]["name"] = nan_model
    with pytest.raises(TrainingError) as err:
        pepnet.fit(parse_config(config), tmp_path / "run", log=lambda _: None)
    msg = str(err.value)
    assert "non-finite loss (nan) at epoch 1, batch 4, task(s) ['like']" in msg and "train.on_nan=skip" in msg
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)  # the last good checkpoint: after batch 3
    assert (ck["state"]["step"], ck["state"]["batch"]) == (3, 3)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_nan_loss_skipped_with_on_nan_skip(tmp_path, nan_model, torch_globals):
    config = tree(n_rows=1200, on_nan="skip", epochs=1)
    config["model"]["name"] = nan_model
    lines: list[str] = []
    run = pepnet.fit(parse_config(config), tmp_path / "run", log=lines.append)
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)["state"]
    n_batches = -(-960 // 48)
    assert state["skipped_batches"] == 1 and state["step"] == n_batches - 1 and state["batch"] == 0
    assert any("skipping batch with non-finite loss at epoch 1, batch 4, task(s) ['like']" in ln for ln in lines)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert np.isfinite(run.report.summary()["mean_auc"])


class InfGrad(torch.autograd.Function):
    """Identity forward (finite loss); infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class InfGradAt(NaNAt):
    def forward(self, sparse, dense):
        logits = self.inner(sparse, dense)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                logits = InfGrad.apply(logits)
        return logits


def test_non_finite_weights_never_overwrite_the_last_good_checkpoint(tmp_path, torch_globals):
    """A finite loss with an infinite gradient poisons the weights: the next checkpoint is refused."""
    MODELS["inf_grad_at_5"] = lambda layout, cfg: InfGradAt(layout, cfg, at=5)
    try:
        config = tree(n_rows=1200, checkpoint_every=1, epochs=1)
        config["model"]["name"] = "inf_grad_at_5"
        with pytest.raises(TrainingError, match=r"became non-finite by optimiser step 5 .*the last good checkpoint"):
            pepnet.fit(parse_config(config), tmp_path / "run", log=lambda _: None)
    finally:
        MODELS.pop("inf_grad_at_5")
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ck["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_trainer_direct_nan_from_input(tmp_path):
    """The trainer alone: an inf in a dense input (bypassing validation) poisons one batch."""
    n, bs = 64, 16
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(n, 1)).astype(np.float32)
    data = EncodedData(sparse=rng.integers(0, 5, (n, 2)), dense=dense,
                       labels=rng.integers(0, 2, (n, 2)).astype(np.float32),
                       domain=np.zeros(n, np.int64), user=np.arange(n), domain_names=["d"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(7))  # the trainer's epoch-0 order (seed + 0)
    data.dense[int(order[2 * bs + 3]), 0] = np.inf                       # a row of the third batch
    layout = ModelLayout(num_embeddings=10, n_sparse=2, n_dense=1, tasks=("a", "b"),
                         groups={"general": [0, 1, 2], "domain_side": [0]})
    model = build_model(layout, ModelConfig(embedding_dim=4, hidden_units=[8], gate_hidden=4))
    cfg = TrainConfig(epochs=1, batch_size=bs, seed=7, progress=False, checkpoint_every=1)
    with pytest.raises(TrainingError, match=r"at epoch 1, batch 3, task\(s\) \['a', 'b'\]"):
        Trainer(model, cfg, ["a", "b"], run_dir=tmp_path, log=lambda _: None).fit(TensorData(data))
    assert load_checkpoint(tmp_path / CHECKPOINT)["state"]["step"] == 2


# ----------------------------------------------------------------------------- memory planning


LAYOUT = ModelLayout(num_embeddings=1000, n_sparse=3, n_dense=1, tasks=("click", "like"),
                     groups={"general": [0, 1, 2, 3], "domain_side": [2], "user_prior": [0], "item_prior": [1]})


@pytest.mark.parametrize("name", ["pepnet", "ppnet_only"])
def test_memory_plan_counts_the_real_model(name):
    mcfg, tcfg = ModelConfig(name=name, embedding_dim=8, hidden_units=[32, 16]), TrainConfig(batch_size=100)
    plan = plan_memory(LAYOUT, mcfg, tcfg, torch.device("cpu"))
    model = build_model(LAYOUT, mcfg)  # the real thing, to check the meta-device count
    emb = sum(p.numel() for p in model.embedding_parameters())
    dense = sum(p.numel() for p in model.parameters()) - emb
    assert (plan.embedding_params, plan.dense_params) == (emb, dense)
    assert plan.embedding_params == 1000 * 8 + 1 * 8  # table + one vector per dense field
    assert plan.embedding_bytes == emb * FLOAT * 2 and plan.dense_bytes == dense * FLOAT * 4
    # 1,000 rows <= 8 x 300 gradient rows: on CPU RowWiseAdagrad applies a dense gradient of the whole table
    assert plan.sparse_grad_bytes == 100 * 3 * (8 * 4 + 8) + 1000 * 8 * 4
    small_batch = plan_memory(LAYOUT, mcfg, TrainConfig(batch_size=10), torch.device("cpu"))
    assert small_batch.sparse_grad_bytes == 10 * 3 * (8 * 4 + 8)  # 1,000 > 8 x 30 rows: the row-wise update
    assert plan.total_bytes == plan.embedding_bytes + plan.dense_bytes + plan.sparse_grad_bytes + plan.checkpoint_bytes
    assert plan.available_source == "available RAM (psutil)" and plan.available_bytes > 0 and plan.fits
    with_data = plan_memory(LAYOUT, mcfg, tcfg, torch.device("cpu"), data_bytes=10**6)  # train.data_on_device on a GPU
    assert with_data.total_bytes - plan.total_bytes == 10**6 and "training data on the device" in with_data.describe()


def test_memory_plan_refuses_a_huge_table_without_allocating():
    huge = ModelLayout(**{**LAYOUT.__dict__, "num_embeddings": 3_000_000_000})
    t0 = time.perf_counter()
    plan = plan_memory(huge, ModelConfig(embedding_dim=64), TrainConfig(), torch.device("cpu"),
                       [("user_id", 2_999_000_000), ("item_id", 999_000), ("domain_id", 1_000)])
    assert time.perf_counter() - t0 < 5  # meta device: no 1.4 TB allocation was attempted
    assert plan.embedding_bytes == (3_000_000_000 * 64 + 64) * FLOAT * 2 and not plan.fits
    with pytest.raises(MemoryPlanError) as err:
        check_memory(plan)
    msg = str(err.value)
    assert "not enough memory" in msg and "available RAM (psutil)" in msg
    assert "user_id (2,999,000,000 rows)" in msg and "hash_buckets" in msg and "embedding_dim" in msg


def test_fit_refuses_over_memory_limit_before_building(tmp_path, torch_globals):
    config = parse_config(tree(n_rows=600, epochs=1, memory_limit_gb=0.0001))
    with pytest.raises(MemoryPlanError, match=r"not enough memory: .*available: 0.102 MiB \(train.memory_limit_gb\)"):
        pepnet.fit(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / CHECKPOINT).exists()
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tree(n_rows=600, epochs=1)))
    result = CliRunner().invoke(app, ["fit", str(cfg), "--out", str(tmp_path / "cli"),
                                      "--set", "train.memory_limit_gb=0.0001"])
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: not enough memory: training needs about")
    # the same run under a sufficient limit trains
    pepnet.fit(parse_config(tree(n_rows=600, epochs=1, memory_limit_gb=1)), tmp_path / "ok", log=lambda _: None)
    assert (tmp_path / "ok" / "metrics.json").is_file()
