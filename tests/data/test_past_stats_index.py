"""PastStatistics: the hash index that serves few-row evaluation frames gives exactly the join's values."""
from __future__ import annotations

import numpy as np
import polars as pl

from pepnet.config import parse_config
from pepnet.data import keyindex, past_stats
from pepnet.data.encoder import Encoder
from pepnet.datasets.synthetic import SyntheticSpec, generate

JOIN, INDEX = True, False


def _use(monkeypatch, join: bool) -> None:
    """Every evaluation frame takes the join (``JOIN``), or the index (``INDEX``)."""
    monkeypatch.setattr(past_stats, "INDEX_RATIO", 10**9 if join else 0)
    monkeypatch.setattr(keyindex, "SMALL_FRAME", 0 if join else 10**9)


def test_indexed_lookup_equals_join(tiny_config_tree, monkeypatch):
    tree = tiny_config_tree(["unused.parquet"])
    tree["schema"]["stats"].append({"name": "user_dom_n", "keys": ["user_id", "domain_id"], "stat": "count"})
    schema = parse_config(tree).schema_
    data = generate(SyntheticSpec(n_rows=3000, n_users=200, n_items=300, n_authors=50, n_dense=1, seed=1))
    enc = Encoder(schema).fit(data.head(2500))
    rows = data.tail(40).with_columns(  # unseen users and null keys too
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(10**9).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("domain_id")).alias("domain_id"))
    _use(monkeypatch, JOIN)
    joined = enc.transform(rows)
    assert not enc.past._index
    _use(monkeypatch, INDEX)
    names, joined_raw = enc.past.values(rows)
    indexed = enc.transform(rows)
    assert {s.name for s in schema.stats} <= set(enc.past._index)
    np.testing.assert_array_equal(indexed.sparse, joined.sparse)
    np.testing.assert_array_equal(indexed.dense, joined.dense)
    _use(monkeypatch, JOIN)
    np.testing.assert_array_equal(enc.past.values(rows)[1], joined_raw)
    assert len(np.unique(joined_raw[:, names.index("user_click")])) > 5  # real statistics, not all unseen

    enc.past.update(data.tail(500))  # the tables change: the index is rebuilt, not reused
    _use(monkeypatch, INDEX)
    after = enc.past.values(rows)[1]
    _use(monkeypatch, JOIN)
    np.testing.assert_array_equal(after, enc.past.values(rows)[1])
    assert not np.array_equal(after, joined_raw)
