"""Online training: vocabulary growth into reserved rows, statistics that keep accumulating, progressive
validation per period, and `pepnet fit --resume --data` continuing a stream exactly."""
from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from pepnet.cli import app
from pepnet.config import parse_config
from pepnet.data.encoder import Encoder
from pepnet.datasets.synthetic import SyntheticSpec, generate, write
from pepnet.stream import STREAM_CSV, STREAM_PNG, OnlineRun, stream
from pepnet.train.checkpoint import load_checkpoint

SPEC = SyntheticSpec(n_rows=3000, n_users=300, n_items=400, n_authors=40, n_dense=1, drift=0.5, n_periods=3, seed=2)


def _config(tiny_config_tree, reserve: int = 60, count_stat: bool = False):
    tree = copy.deepcopy(tiny_config_tree(["unused.parquet"]))
    tree["schema"]["features"][0]["reserve"] = reserve   # user_id
    tree["schema"]["features"][1]["reserve"] = reserve   # item_id
    if count_stat:
        tree["schema"]["stats"].append({"name": "user_n", "keys": ["user_id"], "stat": "count"})
    return parse_config(tree)


@pytest.fixture(scope="module")
def periods(tmp_path_factory):
    return write(SPEC, tmp_path_factory.mktemp("periods"), files="periods", progress=False)


def _field(enc: Encoder, name: str):
    return enc.fields[enc.field_index(name)]


def test_growth_keeps_ids_and_stays_inside_the_field(tiny_config_tree):
    df = generate(SPEC)
    p0, p1, p2 = df[:1000], df[1000:2000], df[2000:]
    cfg = _config(tiny_config_tree, reserve=25)
    enc = Encoder(cfg.schema_).fit(p0)
    f = _field(enc, "user_id")
    base = len(enc.vocabs["user_id"])
    assert f.size == base + 1 + 25
    before = enc.transform(p0).sparse[:, 0]
    unseen = ~p1["user_id"].is_in(p0["user_id"].implode()).to_numpy()
    assert unseen.any() and (enc.transform(p1).sparse[unseen, 0] == f.offset).all()  # OOV before growth

    added = enc.grow(p1)
    assert added["user_id"] == 25  # more than 25 new users: the reserve fills up
    assert (enc.transform(p0).sparse[:, 0] == before).all()  # known values keep their rows
    ids = enc.transform(p2).sparse[:, 0] - f.offset
    assert ids.min() >= 1 and ids.max() < f.size  # full: new values hash into the field's rows, never past them
    new2 = ~p2["user_id"].is_in(enc.vocabs["user_id"].implode()).to_numpy()
    assert new2.any() and (ids[new2] > base).all()  # ... into the reserved rows, not the base vocabulary
    grown = enc.vocabs["user_id"][base:].to_list()
    counts = p1.filter(pl.col("user_id").is_in(grown))["user_id"].value_counts()
    others = p1.filter(~pl.col("user_id").is_in(enc.vocabs["user_id"].implode()))["user_id"].value_counts()
    assert counts["count"].min() >= others["count"].max()  # the most frequent new values were served first


def test_statistics_accumulate_like_one_fit_on_all_periods(tiny_config_tree):
    df = generate(SPEC)
    p0, p1 = df[:1500], df[1500:]
    cfg = _config(tiny_config_tree, count_stat=True)
    online = Encoder(cfg.schema_).fit(p0)
    stat = next(s for s in cfg.schema_.stats if s.name == "user_n")
    seen_online = online.past.raw(p1, stat, training=True, with_history=True)
    online.partial_fit(p1)
    full = Encoder(cfg.schema_).fit(df)
    # training rows of period 1 see period 0 plus their own earlier rows, as one fit on both periods would
    np.testing.assert_array_equal(seen_online, full.past.raw(df, stat, training=True)[1500:])
    for name in ("user_n", "user_click", "domain_click"):
        a = online.past.tables[name].sort(pl.all()).with_columns(pl.col("n", "m").cast(pl.Int64))
        b = full.past.tables[name].sort(pl.all()).with_columns(pl.col("n", "m").cast(pl.Int64))
        assert a.equals(b), name
        assert online.past.global_mean[name] == pytest.approx(full.past.global_mean[name])


def test_stream_evaluates_then_trains_and_resume_continues_exactly(tmp_path, periods, tiny_config_tree):
    cfg = _config(tiny_config_tree)
    full = stream(periods, tmp_path / "all", cfg, log=lambda _: None)
    hist = pl.read_csv(tmp_path / "all" / STREAM_CSV)
    assert hist["period"].to_list() == [0, 1, 2]
    assert hist["mean_auc"][0] is None  # the first period has no model to evaluate yet
    assert all(0.0 < v < 1.0 for v in hist["mean_auc"][1:].to_list())
    assert hist["new_values"][1] > 0  # users / items first seen in period 1 got rows
    assert (tmp_path / "all" / STREAM_PNG).stat().st_size > 0
    assert full.trainer.state.step == hist["steps"].sum()  # one optimiser, stepping across periods
    assert full.encoder.num_embeddings == Encoder.load(tmp_path / "all" / "encoder").num_embeddings

    # the same periods in two goes: stream the first two, then `pepnet fit --resume --data` the third
    stream(periods[:2], tmp_path / "split", cfg, log=lambda _: None)
    res = CliRunner().invoke(app, ["fit", "--resume", "--out", str(tmp_path / "split"), "--data", str(periods[2])])
    assert res.exit_code == 0, res.output
    split_hist = pl.read_csv(tmp_path / "split" / STREAM_CSV)
    assert split_hist.drop("file").equals(hist.drop("file"))
    w_all = load_checkpoint(tmp_path / "all" / "model.pt")
    w_split = load_checkpoint(tmp_path / "split" / "model.pt")
    for k in w_all:
        assert torch.equal(w_all[k], w_split[k]), k
    # streaming the folder again skips the periods already learnt
    again = stream(periods, tmp_path / "split", log=lambda _: None)
    assert len(again.history) == 3


def test_frozen_run_only_evaluates(tmp_path, periods, tiny_config_tree):
    cfg = _config(tiny_config_tree)
    run = OnlineRun.create(cfg, pl.read_parquet(periods[0]), tmp_path / "frozen", log=lambda _: None)
    run.period(str(periods[0]), fitted_on_it=True)
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    rec = run.period(str(periods[1]), learn=False)
    assert "train_loss" not in rec and 0.0 < rec["mean_auc"] < 1.0
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
