"""`pepnet compare`: one data preparation, every model x seed, results.json / .csv / .md / .png of the right shape."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pepnet import compare as cmp
from pepnet import prepare as prepare_module
from pepnet.cli import app
from pepnet.compare.gbdt import GBDT
from pepnet.config import parse_config
from pepnet.run import REFIT_DIR

TREE = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "synthetic": {"n_rows": 1500, "n_users": 100, "n_items": 300, "n_authors": 30,
                                                    "n_domains": 3, "tasks": ["click", "like"], "n_dense": 1, "seed": 0}},
    "schema": {
        "domain": "domain_id", "user": "user_id", "time": "time", "labels": {"click": "click", "like": "like"},
        "features": [{"name": "user_id"}, {"name": "item_id"}, {"name": "domain_id"}, {"name": "d0", "kind": "dense"}],
        "stats": [{"name": "user_click", "keys": ["user_id"], "stat": "rate", "target": "click"},
                  {"name": "dom_n", "keys": ["domain_id"], "stat": "count"}],
        "groups": {"general": ["user_id", "item_id", "domain_id", "d0", "user_click"], "domain_side": ["domain_id", "dom_n"],
                   "user_prior": ["user_id", "user_click"], "item_prior": ["item_id"]},
    },
    "model": {"embedding_dim": 4, "hidden_units": [8, 4], "gate_hidden": 4},
    "train": {"epochs": 2, "batch_size": 512, "progress": False, "patience": 0},
}


def spy(monkeypatch, owner, name: str, record=lambda *a, **k: 1) -> list:
    """Wrap ``owner.name`` so that each call first appends ``record(*args, **kwargs)`` to the returned list."""
    calls, real = [], getattr(owner, name)

    def wrapper(*a, **k):
        calls.append(record(*a, **k))
        return real(*a, **k)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    calls = []
    import pepnet.compare as module

    real = module.prepare

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    module.prepare = counting
    lines: list[str] = []
    try:
        res = cmp.compare(parse_config(dict(TREE)), out, models=["mmoe", "star", "pepnet", "gbdt"],
                          seeds=2, overrides=["gbdt.max_iter=20"], log=lines.append)
    finally:
        module.prepare = real
    return out, res, calls, lines


def test_data_prepared_once(result):
    _, _, calls, lines = result
    assert len(calls) == 1
    assert any("[1/8 mmoe seed 42]" in ln for ln in lines)
    assert any("epoch 2" in ln and "time left <=" in ln for ln in lines)


def test_results_json_shape(result):
    out, res, _, _ = result
    data = json.loads((out / "results.json").read_text())
    assert list(data["models"]) == ["mmoe", "star", "pepnet", "gbdt"]
    assert data["tasks"] == ["click", "like"] and data["n_seeds"] == 2
    for label, entry in data["models"].items():
        assert [r["seed"] for r in entry["runs"]] == [42, 43]
        cell = entry["aggregate"]["ALL|click|auc"]
        assert cell["n"] == 2 and len(cell["values"]) == 2
        assert 0.0 <= cell["mean"] <= 1.0 and cell["std"] >= 0.0
        assert abs(cell["mean"] - sum(cell["values"]) / 2) < 1e-9
        assert "ALL|mean|gauc" in entry["aggregate"]
        for d in data["domains"]:
            assert f"{d}|like|auc" in entry["aggregate"]
        if label != "gbdt":
            assert all(1 <= r["best_epoch"] <= 2 for r in entry["runs"])
    # different seeds give different neural models
    pep = data["models"]["pepnet"]["aggregate"]["ALL|click|auc"]["values"]
    assert pep[0] != pep[1]


def test_results_csv_png_md(result):
    out, res, _, _ = result
    rows = list(csv.DictReader((out / "results.csv").open()))
    n_domains = len(res["domains"])
    per_model = 2 * (2 * (1 + n_domains) + 1)  # metrics x (tasks x (ALL + domains) + task mean)
    assert len(rows) == 4 * per_model
    assert {r["metric"] for r in rows} == {"auc", "gauc"}
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (out / "results.md").read_text()
    assert md.count("**") >= 2 * 6  # the best of each overall column is bold
    assert "like AUC per domain" in md
    assert "Paired by seed against gbdt" in md and "| pepnet | " in md.split("Paired by seed")[1]


def test_best_is_marked_per_column():
    res = {"tasks": ["a"], "domains": [], "n_seeds": 1, "models": {
        "m1": {"aggregate": {"ALL|a|auc": {"mean": 0.6, "std": 0.0}, "ALL|a|gauc": {"mean": 0.7, "std": 0.0}}},
        "m2": {"aggregate": {"ALL|a|auc": {"mean": 0.8, "std": 0.0}, "ALL|a|gauc": {"mean": 0.5, "std": 0.0}}},
    }}
    table = cmp.format_tables(res, per_domain=False)
    m1 = next(ln for ln in table.splitlines() if ln.startswith("| m1"))
    m2 = next(ln for ln in table.splitlines() if ln.startswith("| m2"))
    assert "**0.7000 ± 0.0000**" in m1 and "**0.6000" not in m1
    assert "**0.8000 ± 0.0000**" in m2 and "**0.5000" not in m2


def test_ties_bold_every_best_and_a_column_of_equal_cells_none():
    cell = {"mean": 0.5, "std": 0.0}
    res = {"tasks": ["a"], "domains": [], "n_seeds": 1, "models": {
        "m1": {"aggregate": {"ALL|a|auc": {"mean": 0.7, "std": 0.0}, "ALL|a|gauc": cell}},
        "m2": {"aggregate": {"ALL|a|auc": {"mean": 0.7, "std": 0.0}, "ALL|a|gauc": cell}},
        "m3": {"aggregate": {"ALL|a|auc": {"mean": 0.6, "std": 0.0}, "ALL|a|gauc": cell}},
    }}
    rows = {ln.split(" |")[0][2:]: ln for ln in cmp.format_tables(res, per_domain=False).splitlines()
            if ln.startswith("| m")}
    assert "**0.7000" in rows["m1"] and "**0.7000" in rows["m2"] and "**" not in rows["m3"]
    assert all("**0.5000" not in ln for ln in rows.values())


def test_ablation_entries_flip_one_flag_each():
    rows = cmp.entries(["gbdt"], ablations=True)
    assert rows[0].label == "gbdt" and rows[1].label == "pepnet" and rows[1].overrides == {}
    abl = rows[2:]
    assert len(abl) == len(cmp.ABLATIONS) and all(e.model == "pepnet" and len(e.overrides) == 1 for e in abl)
    flags = {k for e in abl for k in e.overrides}
    assert flags == {"stop_gradient", "gamma", "gate_hidden", "epnet_granularity", "ppnet_gate_on",
                     "ppnet_gate_mode", "domain_stats", "ppnet_priors"}
    for e in abl:  # every ablation is a valid model config that differs from the default
        cfg = parse_config({**TREE, "model": {**TREE["model"], **e.overrides}})
        default = parse_config(dict(TREE))
        assert cfg.model != default.model


def test_unknown_model_is_a_clear_cli_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(TREE))
    res = CliRunner().invoke(app, ["compare", str(cfg), "--out", str(tmp_path / "o"), "--models", "pepnet,mmeo"])
    assert res.exit_code == 2
    assert "unknown model 'mmeo'" in res.output


def test_compare_refits_every_model_on_one_refit_encoding(tmp_path, monkeypatch):
    tree = {**TREE, "train": {**TREE["train"], "refit": True}}

    calls = spy(monkeypatch, prepare_module, "encode_splits")
    lines: list[str] = []
    res = cmp.compare(parse_config(tree), tmp_path, models=["pepnet", "gbdt"], seeds=2, overrides=["gbdt.max_iter=10"],
                      log=lines.append)
    assert len(calls) == 2  # the selection splits once, the refit splits once, for 2 models x 2 seeds
    assert sum("refit on training + validation rows" in ln for ln in lines) == 2 * 2  # gbdt: 2 tasks x 2 seeds
    assert all((tmp_path / "runs" / "pepnet" / f"seed{s}" / REFIT_DIR / "model.pt").is_file() for s in (42, 43))
    for label in ("pepnet", "gbdt"):
        for r in res["models"][label]["runs"]:
            assert np.isfinite(r["report"]["summary"]["mean_auc"])


def test_paired_table_differences_and_wins_per_seed():
    def model(values):
        return {"aggregate": {"ALL|a|auc": {"mean": float(np.nanmean(values)), "std": 0.0, "values": values},
                              "ALL|a|gauc": {"mean": 0.5, "std": 0.0, "values": [0.5] * len(values)}}}
    res = {"tasks": ["a"], "domains": [], "n_seeds": 3, "models": {
        "pepnet": model([0.71, 0.69, 0.72]), "gbdt": model([0.70, 0.70, 0.70]), "star": model([0.69, float("nan"), 0.68])}}
    rows = {ln.split(" |")[0][2:]: ln for ln in cmp.paired_table(res).splitlines() if ln.startswith("| ")}
    assert "against gbdt" in cmp.paired_table(res) and "gbdt" not in rows  # the GBDT is the reference
    assert rows["pepnet"] == "| pepnet | +0.0067 | 2 / 3 |"  # (0.01 - 0.01 + 0.02) / 3, ahead on seeds 1 and 3
    assert rows["star"] == "| star | -0.0150 | 0 / 2 |"  # the seed without a value is left out of the pairing
    del res["models"]["gbdt"]
    assert "against pepnet" in cmp.paired_table(res)  # no GBDT, no shared-bottom: the first model
    assert cmp.paired_table({**res, "n_seeds": 1}) is None
    assert "Paired by seed against pepnet" in cmp.format_tables(res, per_domain=False)


def test_gbdt_trees_follow_the_gbdt_section(monkeypatch):
    """Every key of the config's ``gbdt`` section reaches scikit-learn, and the rounds chosen on validation never
    exceed ``gbdt.max_iter``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    built = spy(monkeypatch, HistGradientBoostingClassifier, "fit", lambda self, *a, **k: self.get_params())
    cfg = parse_config(dict(TREE), overrides=["gbdt.max_iter=7", "gbdt.learning_rate=0.2", "gbdt.max_leaf_nodes=5",
                                        "gbdt.min_samples_leaf=9", "gbdt.l2_regularization=0.5"])
    _, rounds = GBDT(prepare_module.prepare(cfg, log=lambda _: None), cfg.gbdt).fit(42, log=lambda _: None)
    assert len(built) == 2  # one tree ensemble per reported task
    for p in built:
        assert (p["max_iter"], p["learning_rate"], p["max_leaf_nodes"], p["min_samples_leaf"],
                p["l2_regularization"], p["random_state"]) == (7, 0.2, 5, 9, 0.5, 42)
    assert set(rounds) == {"click", "like"} and all(1 <= r <= 7 for r in rounds.values())


def test_gbdt_reads_each_statistic_matrix_once_for_all_seeds(monkeypatch):
    """The statistics of the past are computed once per split (and once per refit split), not once per seed, and
    a second seed gets the same matrices (so the same trees, up to the seed)."""
    from pepnet.data.past_stats import PastStatistics

    calls = spy(monkeypatch, PastStatistics, "values", lambda self, df, *a, **k: len(df))
    cfg = parse_config(dict(TREE), overrides=["gbdt.max_iter=5", "train.refit=true"])
    prep = prepare_module.prepare(cfg, log=lambda _: None)
    gbdt = GBDT(prep, cfg.gbdt, refit_config=cfg)
    for seed in (42, 43):
        gbdt.fit(seed, log=lambda _: None)
    final = prep.for_refit(cfg)
    assert sorted(calls) == sorted([len(prep.frames["train"].df), len(prep.frames["valid"].df),
                                    len(final.frames["train"].df), len(final.frames["test"].df)])
    assert set(gbdt.x) == {"train", "valid"} and set(gbdt.x_final) == {"train", "test"}
