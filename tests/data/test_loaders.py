"""The bundled KuaiRand and Ali-CCP configs read the samples in ../shared/data (the exact layout of the full sets)
from the folders named by PEPNET_KUAIRAND / PEPNET_ALICCP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pepnet
from pepnet.cli import resolve_config

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside the repository")


def _fit(name: str, tmp_path: Path, overrides: list[str]):
    base = ["train.epochs=1", "train.progress=false", "model.hidden_units=[16]"]
    return pepnet.fit(resolve_config(name), tmp_path / name, overrides=base + overrides, log=lambda _: None)


def test_kuairand_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PEPNET_KUAIRAND", str(DATA / "kuairand_sample"))
    run = _fit("kuairand", tmp_path, [])
    names = [f.name for f in run.encoder.fields]
    assert {"user_id", "video_id", "tab", "onehot_feat17", "duration_ms"} <= set(names)
    assert run.encoder.task_names == ["is_click"]
    # 200 rows, random 80/10/10 split: 20 test rows, every one scored
    assert run.report.get("is_click")["rows"] == 20
    preds = run.predict(str(DATA / "kuairand_sample" / "kuairand_sample.csv"))
    assert preds.height == 200 and np.all((preds["p_is_click"].to_numpy() > 0) & (preds["p_is_click"].to_numpy() < 1))


def test_aliccp_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PEPNET_ALICCP", str(DATA / "aliccp_sample"))
    run = _fit("aliccp", tmp_path, [])
    assert run.encoder.task_names == ["click", "purchase"]
    assert len(run.encoder.sparse_fields) == 24 and len(run.encoder.dense_fields) == 8  # 23 fields + scenario rate
    assert run.report.get("click")["rows"] == 50 and run.report.get("purchase")["rows"] == 50
    # the scenario field 301 is the domain: the sample has scenarios 1, 2, 3
    assert set(run.report.domain_names) <= {"1", "2", "3"} and len(run.report.domain_names) >= 2
