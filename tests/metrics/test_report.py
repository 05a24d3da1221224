"""Tests for pepnet.metrics.report: evaluate() and MetricsReport output formats."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pepnet.metrics import MetricsReport, auc, evaluate, gauc, logloss

TASKS = ["ctr", "cvr"]
DOMAINS = ["home", "search", "feed"]


@pytest.fixture()
def data() -> dict[str, np.ndarray]:
    """400 rows, 2 tasks, domains 0 and 1 present (2 = "feed" absent), some labels missing.

    In domain 1 every observed "cvr" label is 0, so its AUC / GAUC are undefined.
    """
    rng = np.random.default_rng(42)
    n = 400
    probs = rng.random((n, 2))
    labels = (rng.random((n, 2)) < probs).astype(float)
    domain = rng.integers(0, 2, n)
    user = rng.integers(0, 30, n)
    labels[domain == 1, 1] = 0.0
    labels[rng.random((n, 2)) < 0.25] = np.nan
    return {"probs": probs, "labels": labels, "domain": domain, "user": user}


@pytest.fixture()
def report(data: dict[str, np.ndarray]) -> MetricsReport:
    return evaluate(data["probs"], data["labels"], data["domain"], data["user"], TASKS, DOMAINS)


def test_rows_and_metrics_exclude_missing_labels(data: dict[str, np.ndarray], report: MetricsReport) -> None:
    assert [(r["domain"], r["task"]) for r in report.rows] == [
        ("ALL", "ctr"), ("home", "ctr"), ("search", "ctr"),
        ("ALL", "cvr"), ("home", "cvr"), ("search", "cvr"),
    ]  # fmt: skip
    assert report.domain_names == ["home", "search"]  # only domains present
    for k, task in enumerate(TASKS):
        for code, name in [(None, "ALL"), (0, "home"), (1, "search")]:
            m = ~np.isnan(data["labels"][:, k])
            if code is not None:
                m &= data["domain"] == code
            y, p, u = data["labels"][m, k], data["probs"][m, k], data["user"][m]
            row = report.get(task, name)
            assert row["rows"] == int(m.sum()) < len(data["labels"])
            assert row["positive_rate"] == pytest.approx(y.mean())
            assert row["logloss"] == pytest.approx(logloss(y, p))
            np.testing.assert_allclose(row["auc"], auc(y, p))
            g, used = gauc(y, p, u)
            np.testing.assert_allclose(row["gauc"], g)
            assert row["gauc_users"] == used


def test_undefined_auc_is_nan_null_and_dash(report: MetricsReport, tmp_path: Path) -> None:
    row = report.get("cvr", "search")
    assert row["rows"] > 0 and row["positive_rate"] == 0.0
    assert math.isnan(row["auc"]) and math.isnan(row["gauc"]) and row["gauc_users"] == 0
    assert math.isfinite(row["logloss"])

    d = report.to_dict()
    (cell,) = [r for r in d["per_domain"] if (r["domain"], r["task"]) == ("search", "cvr")]
    assert cell["auc"] is None and cell["gauc"] is None
    text = report.to_json(tmp_path / "m.json")
    assert "NaN" not in text and json.loads(text) == d

    search_line = next(line for line in report.format_table().splitlines() if line.startswith("search"))
    assert search_line.split("|")[2].split()[:2] == ["—", "—"]
    assert "0.5000" not in search_line


def test_json_roundtrip(report: MetricsReport, tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    report.to_json(path)
    raw = json.loads(path.read_text())
    assert set(raw["overall"]) == set(TASKS)
    assert len(raw["per_domain"]) == len(TASKS) * 2
    back = MetricsReport.from_dict(raw)
    assert back.task_names == report.task_names and back.domain_names == report.domain_names
    assert len(back.rows) == len(report.rows)
    for a, b in zip(report.rows, back.rows, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                np.testing.assert_allclose(a[key], b[key])  # NaN == NaN here
            else:
                assert a[key] == b[key]
    assert MetricsReport.from_json(path).to_dict() == report.to_dict()


def test_csv_one_row_per_domain_and_task(report: MetricsReport, tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    report.to_csv(path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["domain", "task", "rows", "positive_rate", "auc", "gauc", "gauc_users", "logloss"]
    assert len(rows) == len(TASKS) * (1 + 2)
    assert {(r["domain"], r["task"]) for r in rows} == {(d, t) for d in ["ALL", "home", "search"] for t in TASKS}
    bad = next(r for r in rows if (r["domain"], r["task"]) == ("search", "cvr"))
    assert bad["auc"] == "" and bad["gauc"] == ""
    good = next(r for r in rows if (r["domain"], r["task"]) == ("ALL", "ctr"))
    assert float(good["auc"]) == pytest.approx(report.get("ctr")["auc"])
    assert int(good["rows"]) == report.get("ctr")["rows"]


def test_summary(report: MetricsReport) -> None:
    s = report.summary()
    assert s["mean_auc"] == pytest.approx(np.mean([report.get(t)["auc"] for t in TASKS]))
    assert s["mean_gauc"] == pytest.approx(np.mean([report.get(t)["gauc"] for t in TASKS]))


def test_format_table_layout(report: MetricsReport) -> None:
    lines = report.format_table().splitlines()
    assert "ctr" in lines[0] and "cvr" in lines[0]
    assert lines[1].split() == ["domain", "|", "AUC", "GAUC", "rows", "|", "AUC", "GAUC", "rows"]
    body = lines[3:]
    assert [line.split()[0] for line in body] == ["ALL", "home", "search"]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width, aligned
    first = body[0].split("|")[1].split()
    assert first[0] == f"{report.get('ctr')['auc']:.4f}"
    assert first[2] == str(report.get("ctr")["rows"])
    assert "LogLoss" in report.format_table("logloss")
    assert "users" in report.format_table("all")
    with pytest.raises(ValueError, match="unknown metric"):
        report.format_table("accuracy")


def test_format_overall(report: MetricsReport) -> None:
    lines = report.format_overall().splitlines()
    assert len(lines) == len(TASKS)
    for line, task in zip(lines, TASKS, strict=True):
        row = report.get(task)
        assert line.startswith(task)
        for key in ("auc", "gauc", "logloss", "positive_rate"):
            assert f"{row[key]:.4f}" in line
        assert line.endswith(str(row["rows"]))


def test_domain_codes_without_names_and_single_task() -> None:
    probs = np.array([0.9, 0.2, 0.6, 0.4, 0.7, 0.1])
    labels = np.array([1.0, 0.0, 1.0, np.nan, 1.0, 1.0])
    domain = np.array(["b", "a", "b", "a", "b", "a"])
    rep = evaluate(probs, labels, domain, np.zeros(6, dtype=int), ["click"])
    assert rep.domain_names == ["a", "b"]
    assert rep.get("click")["rows"] == 5
    assert rep.get("click", "a")["rows"] == 2 and rep.get("click", "a")["auc"] == 0.0
    assert math.isnan(rep.get("click", "b")["auc"])
    assert "—" in rep.format_table()


def test_evaluate_validates_input() -> None:
    probs = np.zeros((3, 2))
    with pytest.raises(ValueError, match="task names"):
        evaluate(probs, probs, np.zeros(3, dtype=int), np.zeros(3, dtype=int), ["a"])
    with pytest.raises(ValueError, match="domain codes"):
        evaluate(probs, probs, np.array([0, 1, 5]), np.zeros(3, dtype=int), ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="reserved"):
        evaluate(probs, probs, np.array(["ALL"] * 3), np.zeros(3, dtype=int), ["a", "b"])
