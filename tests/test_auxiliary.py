"""Auxiliary tasks (``schema.labels.NAME.auxiliary: true``): trained (own tower, loss counted) and predicted, but
not reported: left out of the metrics, the per-epoch validation record that selects the epoch, and compare."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import pepnet
from pepnet.compare import compare
from pepnet.config import ConfigError, parse_config
from pepnet.export import Predictor, export_run
from pepnet.export.serving import frame_of

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tree(tiny_config_tree, **kw):
    tree = tiny_config_tree(**kw)
    tree["schema"]["labels"]["like"]["auxiliary"] = True
    return tree


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory, tiny_config_tree):
    out = tmp_path_factory.mktemp("aux")
    return out, pepnet.fit(parse_config(_tree(tiny_config_tree, epochs=2)), out=out, log=lambda _: None)


def test_auxiliary_task_is_predicted(aux_run):
    out, run = aux_run
    assert run.encoder.task_names == ["click", "like"] and run.encoder.reported_tasks == ["click"]
    test = pepnet.prepare.prepare(run.config, encoder=run.encoder, log=lambda _: None, splits=("test",)).encoded["test"]
    assert run.model(torch.as_tensor(test.sparse), torch.as_tensor(test.dense)).shape == (len(test), 2)


def test_predictions_leave_auxiliary_tasks_out_unless_asked(aux_run, synthetic_parquet):
    out, run = aux_run
    loaded = pepnet.Run.load(out)
    default = loaded.predict(str(synthetic_parquet))
    every = loaded.predict(str(synthetic_parquet), auxiliary=True)
    assert "p_click" in default.columns and "p_like" not in default.columns
    assert every.columns == [*default.columns, "p_like"]
    assert every["p_click"].equals(default["p_click"]) and every["p_like"].n_unique() > 1


def test_auxiliary_loss_trains_its_tower(tmp_path, tiny_config_tree):
    towers = {}
    for weight in (0.0, 1.0):
        tree = _tree(tiny_config_tree)
        tree["schema"]["labels"]["like"]["weight"] = weight
        run = pepnet.fit(parse_config(tree), out=tmp_path / str(weight), log=lambda _: None)
        towers[weight] = run.model.state_dict()["ppnet.towers.out_weight"]  # [T, h, 1]
    # same seed and data (runs are reproducible, tests/test_reproducibility.py): only the auxiliary loss's weight
    # differs; with weight 0 its tower gets no gradient, with weight 1 it trains
    assert not torch.equal(towers[0.0][1], towers[1.0][1])


def test_auxiliary_task_is_not_reported(aux_run):
    out, run = aux_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["click"] and set(metrics["overall"]) == {"click"}
    history = pl.read_csv(out / "history.csv")
    assert "valid_click_auc" in history.columns and not any("like" in c for c in history.columns)
    assert history["valid_mean_auc"].to_list() == history["valid_click_auc"].to_list()  # the mean is over click only


def test_compare_reports_only_the_main_tasks(tmp_path, tiny_config_tree):
    result = compare(parse_config(_tree(tiny_config_tree)), tmp_path, models=["shared_bottom", "gbdt"], seeds=1,
                     overrides=["gbdt.max_iter=10"], log=lambda _: None)
    assert result["tasks"] == ["click"]
    for model in ("shared_bottom", "gbdt"):
        assert list(result["models"][model]["runs"][0]["report"]["overall"]) == ["click"]
    assert list(result["models"]["gbdt"]["runs"][0]["gbdt_rounds"]) == ["click"]


def test_at_least_one_task_is_reported(tiny_config_tree):
    tree = _tree(tiny_config_tree)
    tree["schema"]["labels"]["click"]["auxiliary"] = True
    with pytest.raises(ConfigError, match="at least one task must be reported"):
        parse_config(tree)


def test_export_scores_the_reported_tasks_unless_asked_for_every_task(aux_run, synthetic_parquet, tmp_path):
    """By default the exported program has the reported task's tower only (serving answers only that task); with
    ``auxiliary=True`` it keeps every tower. Both score as the run does."""
    out, _ = aux_run
    run, rows = pepnet.Run.load(out), pl.read_parquet(synthetic_parquet).drop(["click", "like"])
    every_task = run.predict(str(synthetic_parquet), auxiliary=True)
    lean = Predictor(export_run(out, tmp_path / "lean"))
    assert lean.model.tasks == ["click"] and lean.manifest["tasks"] == ["click"]
    assert lean.model.score(frame_of(rows.head(3))).shape == (3, 1)  # the program outputs the reported task only
    served = lean.predict(rows)
    assert served.columns == run.predict(str(synthetic_parquet)).columns
    np.testing.assert_allclose(served["p_click"].to_numpy(), every_task["p_click"].to_numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="--auxiliary"):
        lean.predict(rows, auxiliary=True)
    full = Predictor(export_run(out, tmp_path / "full", auxiliary=True))
    assert full.model.tasks == ["click", "like"]
    got = full.predict(rows, auxiliary=True)
    for task in ("click", "like"):
        np.testing.assert_allclose(got[f"p_{task}"].to_numpy(), every_task[f"p_{task}"].to_numpy(), rtol=0,
                                   atol=1e-6)
