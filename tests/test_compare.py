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
                                                    "n_domains": 3, "tasks": ["click", "like"], "n_dense": 1,
                                                    "seed": 0}},
    "schema": {
        "domain": "domain_id", "user": "user_id", "time": "time", "labels": {"click": "click", "like": "like"},
        "features": [{"name": "user_id"}, {"name": "item_id"}, {"name": "domain_id"}, {"name": "d0", "kind": "dense"}],
        "stats": [{"name": "user_click", "keys": ["user_id"], "stat": "rate", "target": "click"},
                  {"name": "dom_n", "keys": ["domain_id"], "stat": "count"}],
        "groups": {"general": ["user_id", "item_id", "domain_id", "d0", "user_click"],
                   "domain_side": ["domain_id", "dom_n"],
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
    assert any("[1/7 mmoe seed 42]" in ln for ln in lines)  # 3 models x 2 seeds + the GBDT once
    assert any("epoch 2" in ln and "time left <=" in ln for ln in lines)


def test_results_json_shape(result):
    out, res, _, _ = result
    data = json.loads((out / "results.json").read_text())
    assert list(data["models"]) == ["mmoe", "star", "pepnet", "gbdt"]
    assert data["tasks"] == ["click", "like"] and data["n_seeds"] == 2
    for label, entry in data["models"].items():
        n = 1 if label == "gbdt" else 2  # the deterministic GBDT is fitted once
        assert [r["seed"] for r in entry["runs"]] == [42, 43][:n]
        cell = entry["aggregate"]["ALL|click|auc"]
        assert cell["n"] == n and len(cell["values"]) == n
        assert 0.0 <= cell["mean"] <= 1.0 and cell["std"] >= 0.0
        assert abs(cell["mean"] - sum(cell["values"]) / n) < 1e-9
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
    assert "Difference from gbdt" in md and "| pepnet | " in md.split("Difference from gbdt")[1]


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
    assert sum("refit on training + validation rows" in ln for ln in lines) == 2  # gbdt: 2 tasks, fitted once
    assert all((tmp_path / "runs" / "pepnet" / f"seed{s}" / REFIT_DIR / "model.pt").is_file() for s in (42, 43))
    for label in ("pepnet", "gbdt"):
        for r in res["models"][label]["runs"]:
            assert np.isfinite(r["report"]["summary"]["mean_auc"])


def test_statistics_pair_with_the_gbdt_fitted_once_and_warn_on_a_small_test_split(result):
    out, res, _, lines = result
    data = json.loads((out / "results.json").read_text())
    paired = data["paired"]
    assert paired["reference"] == "gbdt" and paired["reference_fitted_once"] is True
    assert set(paired["models"]) == {"mmoe", "star", "pepnet"}
    for label, cells in paired["models"].items():
        cell = cells["ALL|click|auc"]
        assert cell["agreeing"] is None and cell["seeds"] == 2  # no "ahead on k/n" against a constant
        values = data["models"][label]["aggregate"]["ALL|click|auc"]["values"]
        ref = data["models"]["gbdt"]["aggregate"]["ALL|click|auc"]["values"][0]
        assert cell["value"] == pytest.approx(sum(v - ref for v in values) / 2)
        assert cell["low"] <= cell["value"] <= cell["high"]
        iv = data["intervals"][label]["ALL|click|auc"]
        assert iv["low"] < iv["value"] < iv["high"]
    # 1,500 rows -> 150 test rows: far too few to tell models apart
    assert len(data["warnings"]) == 2 and "too small to tell models apart" in data["warnings"][0]
    md = (out / "results.md").read_text()
    assert "warning: task 'click'" in md and "seeds agreeing" not in md and "fitted once" in md


def test_gbdt_trees_follow_the_gbdt_section(monkeypatch):
    """Every key of the config's ``gbdt`` section reaches scikit-learn, and the rounds chosen on validation never
    exceed ``gbdt.max_iter``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    built = spy(monkeypatch, HistGradientBoostingClassifier, "fit", lambda self, *a, **k: self.get_params())
    cfg = parse_config(dict(TREE), overrides=["gbdt.max_iter=7", "gbdt.learning_rate=0.2", "gbdt.max_leaf_nodes=5",
                                        "gbdt.min_samples_leaf=9", "gbdt.l2_regularization=0.5"])
    _, rounds, _ = GBDT(prepare_module.prepare(cfg, log=lambda _: None), cfg.gbdt).fit(42, log=lambda _: None)
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


def test_gbdt_auto_tunes_the_grid_on_validation(monkeypatch):
    """``gbdt: auto`` fits every grid point per task and keeps the best on validation AUC: never worse on
    validation than the default trees (a point of the grid)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    cfg = parse_config({**TREE, "gbdt": "auto"}, overrides=["gbdt.max_iter=15"])
    from pepnet.compare import gbdt as gbdt_module

    grid = gbdt_module.candidates(cfg.gbdt)
    assert cfg.gbdt.tune and len(grid) == 12 == len(set(map(str, grid)))
    assert gbdt_module.candidates(parse_config(dict(TREE)).gbdt) == [parse_config(dict(TREE)).gbdt]  # no tune: as is
    GBDT_GRID = {"learning_rate": (0.05, 0.1), "max_leaf_nodes": (31,), "min_samples_leaf": (20, 200)}  # 4 fits
    monkeypatch.setattr(gbdt_module, "GBDT_GRID", GBDT_GRID)  # the default trees are a point of it; a short test
    prep = prepare_module.prepare(cfg, log=lambda _: None)
    built = spy(monkeypatch, HistGradientBoostingClassifier, "fit", lambda self, *a, **k: self.get_params())
    tuned_log: list[str] = []
    _, chosen, probs = GBDT(prep, cfg.gbdt).fit(42, log=tuned_log.append)
    assert len(built) == 2 * 4 and probs.shape == (len(prep.encoded["test"]), 2)
    assert {(p["learning_rate"], p["max_leaf_nodes"], p["min_samples_leaf"]) for p in built} == \
        set(__import__("itertools").product(*GBDT_GRID.values()))
    default_log: list[str] = []
    GBDT(prep, parse_config(dict(TREE), overrides=["gbdt.max_iter=15"]).gbdt).fit(42, log=default_log.append)
    tuned_log, default_log = ([ln for ln in lg if "valid AUC" in ln] for lg in (tuned_log, default_log))
    for task, tuned, default in zip(("click", "like"), tuned_log, default_log, strict=True):
        assert chosen[task]["setting"]["max_leaf_nodes"] == 31 and 1 <= chosen[task]["rounds"] <= 15
        assert "tuned" in tuned
        auc_of = lambda line: float(line.split("valid AUC ")[1][:6])  # noqa: E731
        assert auc_of(tuned) >= auc_of(default)


def test_per_seed_runs_are_full_run_directories(result):
    """evaluate / gates / report read a compare's per-seed run as they read a `pepnet fit` run."""
    from pepnet.run import PREDICTIONS_FILE, Run

    out, res, _, _ = result
    run_dir = out / "runs" / "pepnet" / "seed43"
    for name in ("config.yaml", "encoder", "run.json", "metrics.json", "metrics.csv", PREDICTIONS_FILE):
        assert (run_dir / name).exists(), name
    run = Run.load(run_dir)
    assert run.config.train.seed == 43
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 43
    again = run.evaluate()
    stored = res["models"]["pepnet"]["runs"][1]["report"]["overall"]["click"]["auc"]
    assert again.get("click")["auc"] == pytest.approx(stored, abs=1e-6)
    assert CliRunner().invoke(app, ["gates", str(run_dir), "--out", str(out / "g")]).exit_code == 0


def test_default_chooses_the_epoch_on_validation_and_epochs_1_says_it_does_not(tmp_path):
    """Epochs for new data: the default chooses the epoch on validation; `epochs: 1` says that it chooses nothing."""
    from pathlib import Path

    from pepnet.config import TrainConfig
    from pepnet.run import fit

    assert TrainConfig().epochs > 1 and TrainConfig().patience > 0
    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    assert "epochs: 1 (ciao.yaml, where validation chose it) chooses nothing" in doc
    lines: list[str] = []
    fit(parse_config({**TREE, "train": {**TREE["train"], "epochs": 1}}), tmp_path / "one", log=lines.append)
    assert any("train.epochs is 1, so no epoch is chosen on validation" in ln for ln in lines)
    lines.clear()
    fit(parse_config(dict(TREE)), tmp_path / "two", log=lines.append)  # epochs 2
    assert not any("no epoch is chosen" in ln for ln in lines)
