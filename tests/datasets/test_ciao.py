"""The vendored Ciao data and the bundled ciao config: the file is the published one, the config reads it as
the README describes (28 category domains, like = rating >= 4, the 34 rows of rating 0 dropped, helpful =
helpfulness >= 2, chronological 80/10/10), and ``train.refit`` gives the final model the vocabulary of every
row before the test period."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from pepnet.config import load_config
from pepnet.datasets.ciao import RATINGS_SHA256, ratings_path
from pepnet.prepare import prepare

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "ciao" / "ratings.parquet"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ciao():
    cfg = load_config("ciao.yaml", ["train.progress=false"])
    logged: list[str] = []
    return cfg, prepare(cfg, log=logged.append), prepare(cfg, log=lambda _: None, refit=True), logged


def test_vendored_file_is_the_published_one():
    path = ratings_path()  # raises on a checksum mismatch
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RATINGS_SHA256
    if SHARED.is_file():
        assert SHARED.read_bytes() == path.read_bytes()


def test_config_reads_ciao_as_documented(ciao):
    _, prep, _, logged = ciao
    n = 284_086 - 34  # the rows of rating 0 are dropped, and the log says so
    assert any(line.startswith("dropped 34 rows without a 'like' label") for line in logged)
    rows = {k: v.df.height for k, v in prep.frames.items()}
    assert sum(rows.values()) == n
    assert rows["train"] == round(0.8 * n) and rows["test"] == n - round(0.9 * n)
    times = [prep.frames[k].df["timestamp"] for k in ("train", "valid", "test")]
    assert times[0].max() <= times[1].min() and times[1].max() <= times[2].min()  # chronological
    cats = {k: set(v.df["category_id"].to_list()) for k, v in prep.frames.items()}
    assert len(set().union(*cats.values())) == 28 and len(cats["train"]) == 27  # category 25 starts after training
    for name, frame in prep.frames.items():
        labels, df = prep.encoded[name].labels, frame.df
        assert (df["rating"] != 0).all() and not np.isnan(labels).any()
        np.testing.assert_array_equal(labels[:, 0], (df["rating"].to_numpy() >= 4).astype(float))
        np.testing.assert_array_equal(labels[:, 1], (df["helpfulness"].to_numpy() >= 2).astype(float))


def test_refit_encoder_knows_more_of_the_test_items(ciao):
    cfg, prep, refit, _ = ciao
    assert cfg.train.refit and "valid" not in refit.frames
    assert refit.frames["train"].df.height == prep.frames["train"].df.height + prep.frames["valid"].df.height
    np.testing.assert_array_equal(refit.encoded["test"].labels, prep.encoded["test"].labels)  # the same test rows
    def known(p):  # fraction of test rows whose item has its own embedding row (not the OOV row 0 of the field)
        i = [f.name for f in p.encoder.sparse_fields].index("item_id")
        return float((p.encoded["test"].sparse[:, i] != p.encoder.sparse_fields[i].offset).mean())

    known = {"select": known(prep), "refit": known(refit)}
    # ids below min_count in the training rows map to the OOV row; the validation rows add test-period items
    assert known["refit"] > known["select"] + 0.05, known


def test_vendored_readme_lists_what_ships():
    """Each file the vendored README's table names is in the package, or is marked as not shipped."""
    folder = ratings_path().parent
    rows = re.findall(r"^\| `([^`]+)`( \(not shipped\))? \|", (folder / "README.md").read_text(), re.M)
    assert rows and any(not marked for _, marked in rows)
    for name, marked in rows:
        assert (folder / name).is_file() != bool(marked), name
