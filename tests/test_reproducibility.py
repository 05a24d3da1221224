"""Reproducibility: the same config and seed give bit-identical results in deterministic mode on CPU, and every
run directory records what is needed to repeat it (config, versions, git revision, data fingerprints, seed)."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import polars as pl
import pytest
import torch
import yaml

import pepnet
from pepnet.config import parse_config
from pepnet.errors import DataError
from pepnet.train.checkpoint import load_checkpoint

SCHEMA = {
    "domain": "domain", "user": "user", "time": "ts", "labels": {"click": "click", "like": "like"},
    "features": [{"name": "user"}, {"name": "item", "hash_buckets": 64}, {"name": "domain"},
                 {"name": "price", "kind": "dense"}],
    "stats": [{"name": "user_click", "keys": ["user"], "stat": "rate", "target": "click"}],
    "groups": {"general": ["user", "item", "domain", "price"], "domain_side": ["domain", "user_click"],
               "user_prior": ["user", "user_click"], "item_prior": ["item"]},
}


@pytest.fixture
def data_file(tmp_path):
    n = 2000
    rng = np.random.default_rng(3)
    user, item = rng.integers(0, 80, n), rng.integers(0, 300, n)
    logit = (user % 5 - 2) * 0.6 + (item % 3 - 1) * 0.5
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    like = (click & (rng.random(n) < 0.5)).astype(np.int8)
    path = tmp_path / "logs.parquet"
    pl.DataFrame({"domain": rng.choice(["a", "b", "c"], n), "user": user, "item": item, "price": rng.normal(size=n),
                  "ts": np.sort(rng.integers(1_700_000_000, 1_700_900_000, n)), "click": click,
                  "like": like}).write_parquet(path)
    return path


def tree(path, seed: int = 7) -> dict:
    return {
        "data": {"files": [str(path)], "split": {"method": "chronological"}},
        "schema": SCHEMA,
        "model": {"embedding_dim": 8, "hidden_units": [32, 16], "gate_hidden": 8, "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "deterministic": True, "seed": seed, "threads": 1},
    }


@pytest.fixture(autouse=True)
def torch_globals():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def fit(path, out, seed=7):
    return pepnet.fit(parse_config(tree(path, seed)), out, log=lambda _: None)


def test_same_seed_bit_identical_other_seed_differs(tmp_path, data_file):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    fit(data_file, a)
    fit(data_file, b)
    fit(data_file, c, seed=8)
    for name in ("metrics.json", "metrics.csv", "history.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    wa, wb = load_checkpoint(a / "model.pt"), load_checkpoint(b / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the comparison can fail: a different seed gives different numbers
    ma, mc = json.loads((a / "metrics.json").read_text()), json.loads((c / "metrics.json").read_text())
    assert ma["overall"]["click"]["logloss"] != mc["overall"]["click"]["logloss"]


def test_run_json_records_what_repeats_the_run(tmp_path, data_file):
    out = tmp_path / "run"
    fit(data_file, out)
    info = json.loads((out / "run.json").read_text())
    assert info["seed"] == 7 and info["deterministic"] is True
    assert info["config"] == yaml.safe_load((out / "config.yaml").read_text())
    assert parse_config(info["config"]).to_dict() == parse_config(tree(data_file)).to_dict()
    assert info["versions"]["pepnet"] == pepnet.__version__
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["polars"] == pl.__version__
    assert info["python"] and info["platform"]
    rev = info["git_revision"]
    assert rev is None or re.fullmatch(r"[0-9a-f]{40}", rev)
    assert info["data_fingerprints"] == {str(data_file): hashlib.sha256(data_file.read_bytes()).hexdigest()}
    assert set(info["split_fingerprints"]) == {"train", "valid", "test"}
    assert len(set(info["split_fingerprints"].values())) == 3
    assert sum(info["rows"].values()) == 2000


def test_built_in_dataset_is_fingerprinted(tmp_path):
    config = {
        "data": {"dataset": "synthetic",
                 "synthetic": {"n_rows": 800, "n_users": 50, "n_items": 80, "n_dense": 0, "seed": 2}},
        "schema": {"domain": "domain_id", "user": "user_id", "time": "time", "labels": {"click": "click"},
                   "features": [{"name": "user_id"}, {"name": "item_id"}, {"name": "domain_id"}],
                   "groups": {"general": ["user_id", "item_id", "domain_id"], "domain_side": ["domain_id"]}},
        "model": {"embedding_dim": 4, "hidden_units": [8], "gate_hidden": 4},
        "train": {"epochs": 1, "progress": False, "threads": 1},
    }
    prints = []
    for seed in (2, 2, 3):
        config["data"]["synthetic"]["seed"] = seed
        out = tmp_path / f"run{len(prints)}"
        pepnet.fit(parse_config(config), out, log=lambda _: None)
        prints.append(json.loads((out / "run.json").read_text())["split_fingerprints"])
    assert prints[0] == prints[1] and prints[0]["train"] != prints[2]["train"]


def test_resume_refuses_changed_data(tmp_path, data_file):
    out = tmp_path / "run"
    fit(data_file, out)
    df = pl.read_parquet(data_file)
    df.with_columns(pl.col("price") + 1.0).write_parquet(data_file)
    with pytest.raises(DataError, match=r"--resume: the train, valid, test split\(s\) differ from those the run"):
        pepnet.fit(None, out, resume=True, log=lambda _: None)
