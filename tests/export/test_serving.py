"""Export for serving: the exported program reproduces the eager model; the Predictor needs no labels."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.datasets.synthetic import SyntheticSpec, generate
from pepnet.export import Predictor


@pytest.fixture(scope="module")
def run_dir(tiny_export):
    return tiny_export.run


def test_export_matches_eager_on_real_rows(tiny_export, tmp_path):
    manifest = json.loads((tiny_export.export / "manifest.json").read_text())
    assert manifest["tasks"] == ["click", "like"] and manifest["max_abs_diff_vs_eager"] <= 1e-5
    rows = generate(SyntheticSpec(n_rows=700, n_users=300, n_items=500, seed=5))
    rows.write_parquet(tmp_path / "rows.parquet")
    eager = pepnet.Run.load(tiny_export.run).predict(str(tmp_path / "rows.parquet"))
    served = Predictor(tiny_export.export).predict(rows.drop(["click", "like"]))  # serving rows carry no labels
    assert served.height == 700 and served.columns == eager.columns
    assert served.columns[:4] == ["domain_id", "user_id", "item_id", "time"]  # the synthetic config's keys
    kept = Predictor(tiny_export.export).predict(rows, keep=["author_id"])
    assert kept["author_id"].equals(rows["author_id"]) and kept["p_click"].equals(served["p_click"])
    for t in ("p_click", "p_like"):
        np.testing.assert_allclose(served[t].to_numpy(), eager[t].to_numpy(), atol=1e-6)
        assert served[t].n_unique() > 1


def test_exported_program_has_dynamic_batch(tiny_export):
    module = torch.export.load(tiny_export.export / "model.pt2").module()
    man = json.loads((tiny_export.export / "manifest.json").read_text())
    fs, fd = len(man["inputs"]["sparse"]), len(man["inputs"]["dense"])
    for b in (1, 5, 1000):
        out = module(torch.zeros(b, fs, dtype=torch.long), torch.zeros(b, fd))
        assert out.shape == (b, 2)


def test_export_cli_and_missing_dir(run_dir, tmp_path):
    res = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "model.pt2").is_file() and (tmp_path / "e" / "encoder" / "encoder.json").is_file()
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        Predictor(tmp_path / "nothing")


def test_gates_report(run_dir, tmp_path):
    res = CliRunner().invoke(app, ["gates", str(run_dir), "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    ep = pl.read_csv(tmp_path / "g" / "gates_epnet.csv")
    pp = pl.read_csv(tmp_path / "g" / "gates_ppnet.csv")
    assert ep.height == 3 and "domain_id" in ep.columns  # one row per domain, one column per general field
    values = ep.drop("domain").to_numpy()
    assert np.all((values > 0) & (values < 2))  # gamma = 2
    assert set(pp["layer"].to_list()) == {0, 1} and {"click", "like"} <= set(pp.columns)
    assert (tmp_path / "g" / "gates.png").stat().st_size > 1000
