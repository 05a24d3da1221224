"""`pepnet report` and `pepnet inspect`: a self-contained page whose numbers are metrics.json's, images that
decode, a page that renders in headless Chromium at 1280 px, and one request's scores and gates."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import polars as pl
import pytest
from typer.testing import CliRunner

from pepnet.cli import app
from pepnet.config import parse_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config_tree):
    from pepnet.run import fit

    out = tmp_path_factory.mktemp("run") / "run"
    fit(parse_config(tiny_config_tree(epochs=2, n_rows=2500, n_domains=3)), out, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def page(run_dir):
    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    return (run_dir / "report.html").read_text(encoding="utf-8")


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_page_is_self_contained_and_every_image_decodes(run_dir, page):
    import matplotlib.image

    assert not re.search(r'(src|href)="(http|//)', page) and "<script" not in page  # nothing fetched at view time
    images = _images(page)
    assert len(images) == 5  # curves, heat map, calibration, scores, gates
    for png in images:
        arr = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert arr.ndim == 3 and arr.shape[0] > 100 and arr.shape[1] > 300
    assert {p.name for p in run_dir.glob("report_*.png")} == {
        "report_curves.png", "report_heatmap.png", "report_calibration.png", "report_scores.png", "report_gates.png"}


def test_numbers_on_the_page_equal_metrics_json(run_dir, page):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shown = {(m, d, t): v for m, d, t, v in re.findall(
        r'data-metric="(\w+)" data-domain="([^"]+)" data-task="([^"]+)">([^<]+)<', page)}
    expected = {("auc", "ALL", t): v["auc"] for t, v in metrics["overall"].items()}
    expected |= {("gauc", "ALL", t): v["gauc"] for t, v in metrics["overall"].items()}
    expected |= {(m, r["domain"], r["task"]): r[m] for r in metrics["per_domain"] for m in ("auc", "gauc")}
    assert set(shown) == set(expected)
    for key, value in expected.items():
        assert shown[key] == ("—" if value is None else f"{value:.4f}"), key
    # the 95% interval under each overall value holds it
    for task, v in metrics["overall"].items():
        low, high = map(float, re.search(rf"<td>{task}</td><td>[\d.]+</td><td>\[([\d.]+), ([\d.]+)\]", page).groups())
        assert low <= v["auc"] <= high


@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium installed (Debian: apt-get install chromium)")
def test_page_renders_in_headless_chromium_at_laptop_width(run_dir, page, tmp_path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'u'}",
                    "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
                    (run_dir / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (2400, 1280)
    ink = (img[..., :3].mean(-1) < 0.5).mean(0)  # dark pixels per column
    assert ink[60:1220].sum() > 0 and ink[:20].sum() == 0  # content inside the page margins, nothing cut at the left
    assert img[..., :3].std() > 0.05  # not a blank page


def test_inspect_prints_the_scores_predict_gives_and_the_gates(run_dir, tmp_path):
    from pepnet.run import Run

    run = Run.load(run_dir)
    schema = run.encoder.schema
    cols = sorted({f.source for f in schema.features} | {schema.domain, schema.user, schema.time} - {None})
    data = run.config.data
    from pepnet.data.sources import load_data

    row = load_data(data).df.select(cols).row(5, named=True)
    pl.DataFrame([row]).write_parquet(tmp_path / "one.parquet")
    expected = run.predict(str(tmp_path / "one.parquet"))
    res = CliRunner().invoke(app, ["inspect", str(run_dir), "--row", json.dumps(row, default=str)])
    assert res.exit_code == 0, res.output
    for t in run.encoder.task_names:
        shown = float(re.search(rf"p_{t} = ([\d.]+)", res.output).group(1))
        assert shown == pytest.approx(expected[f"p_{t}"][0], abs=1e-4)
    assert "EPNet gate per general field" in res.output and "layer 0:" in res.output
    gates = [float(x) for x in re.findall(r"^\s+\S+\s+([\d.]+)$", res.output, flags=re.MULTILINE)]
    assert len(gates) == len(run.encoder.group("general")) and all(0 <= g <= 2 for g in gates)
    bad = CliRunner().invoke(app, ["inspect", str(run_dir), "--row", "{not json"])
    assert bad.exit_code == 2 and "error: --row: not valid JSON" in bad.output


def test_compare_report_shows_paired_differences_and_warnings(tmp_path, tiny_config_tree):
    from pepnet.compare import compare

    res = compare(parse_config(tiny_config_tree(epochs=1, n_rows=1500)), tmp_path / "cmp", models=["pepnet", "gbdt"],
                  seeds=2, overrides=["gbdt.max_iter=10"], log=lambda _: None)
    out = CliRunner().invoke(app, ["report", str(tmp_path / "cmp"), "--out", str(tmp_path / "c.html")])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "Difference from gbdt, per domain" in text and "fitted once" in text
    assert "too small to tell models apart" in text  # 225 test rows
    cell = res["paired"]["models"]["pepnet"]["ALL|click|auc"]
    assert f"{cell['value']:+.4f} [{cell['low']:+.4f}, {cell['high']:+.4f}]" in text
    mean = res["models"]["pepnet"]["aggregate"]["ALL|click|auc"]["mean"]
    assert f"{mean:.4f}" in text
    assert len(_images(text)) == 1 and (tmp_path / "c_results.png").is_file()
    # a per-seed run of the comparison has its own report
    seed_run = tmp_path / "cmp" / "runs" / "pepnet" / "seed3"
    assert CliRunner().invoke(app, ["report", str(seed_run)]).exit_code == 0
    assert len(_images((seed_run / "report.html").read_text(encoding="utf-8"))) == 5
