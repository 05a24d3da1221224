"""Small frames (a served request) are encoded with dict lookups (pepnet.data.keyindex); every output must be
exactly the polars path's."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pepnet.config import SchemaConfig
from pepnet.data import keyindex, past_stats
from pepnet.data.encoder import EncodedData, Encoder
from pepnet.errors import DataError

SCHEMA = {
    "domain": "dom", "user": "user", "time": "t", "labels": {"click": {"column": "click"}},
    "features": [{"name": "user"}, {"name": "dom"}, {"name": "item", "min_count": 2},
                 {"name": "tag", "hash_buckets": 7}, {"name": "shop", "reserve": 3},
                 {"name": "price", "kind": "dense"}],
    "stats": [
        {"name": "user_n", "keys": ["user"], "stat": "count"},
        {"name": "user_rate", "keys": ["user"], "stat": "rate", "target": "click", "prior": 2.0},
        {"name": "ud_rate", "keys": ["user", "dom"], "stat": "rate", "target": "click", "prior": 0.0},
        {"name": "dom_n", "keys": ["dom"], "stat": "count", "as_dense": True},
        {"name": "item_price", "keys": ["item"], "stat": "mean", "target": "price", "as_dense": True},
    ],
    "groups": {"general": ["user", "item", "tag", "shop", "price"], "domain_side": ["dom"]},
}


def _frame(n: int, seed: int, shops: list[str]) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "user": rng.integers(0, 15, n),
        "dom": rng.choice(["a", "b", "c"], n),
        "item": rng.integers(0, 30, n),
        "tag": rng.choice(["x", "y", "z"], n),
        "shop": rng.choice(shops, n),
        "price": rng.normal(5.0, 2.0, n),
        "t": np.arange(n),
        "click": rng.integers(0, 2, n).astype(float),
    })


def _requests(seed: int) -> list[pl.DataFrame]:
    """Frames to score: unseen users, items, shops and a domain never seen; nulls in sparse and statistic key
    columns and in labels; the integer ids in another width than training; one row; ids given as text."""
    rows = _frame(40, seed, ["s0", "s1", "s2", "s3", "new1", "new2"]).with_columns(
        user=pl.when(pl.int_range(pl.len()) % 7 == 0).then(10**6).otherwise(pl.col("user")),
        item=pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("item") + 5),
        tag=pl.when(pl.int_range(pl.len()) % 6 == 1).then(None).otherwise(pl.col("tag")),
        shop=pl.when(pl.int_range(pl.len()) % 9 == 2).then(None).otherwise(pl.col("shop")),
        dom=pl.when(pl.int_range(pl.len()) % 8 == 3).then(pl.lit("zz")).otherwise(pl.col("dom")),
        click=pl.when(pl.int_range(pl.len()) % 4 == 0).then(None).otherwise(pl.col("click")),
    )
    return [
        rows,
        rows.with_columns(pl.col("user", "item").cast(pl.Int32)),
        rows.head(1),
        rows.with_columns(pl.col("item").cast(pl.String)),
    ]


def _encode(enc: Encoder, df: pl.DataFrame, monkeypatch, fast: bool) -> EncodedData:
    """``enc.transform(df)`` with every lookup through dicts (``fast``) or through polars."""
    monkeypatch.setattr(keyindex, "SMALL_FRAME", 10**9 if fast else 0)
    monkeypatch.setattr(past_stats, "INDEX_RATIO", 0 if fast else 10**9)
    return enc.transform(df)


def _assert_same(a: EncodedData, b: EncodedData) -> None:
    for name in ("sparse", "dense", "labels", "domain", "user"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert a.domain_names == b.domain_names


@pytest.mark.parametrize("seed", [1, 2])
def test_dict_lookups_equal_polars(monkeypatch, seed):
    schema = SchemaConfig.model_validate(SCHEMA)
    enc = Encoder(schema).fit(_frame(300, 0, ["s0", "s1", "s2"]))
    requests = _requests(seed)
    before = _encode(enc, requests[0], monkeypatch, fast=False)
    assert not enc._vocab_ids and not enc.past._index  # the polars path builds no dict
    _assert_same(_encode(enc, requests[0], monkeypatch, fast=True), before)
    assert set(enc._vocab_ids) == {"user", "dom", "item", "shop"}
    assert {s.name for s in schema.stats} <= set(enc.past._index)

    # the reserve of "shop" is used up (its vocabulary object replaced): further unseen shops hash into it
    assert enc.grow(_frame(50, 3, ["new1", "new2", "new3"])) == {"shop": 3}
    shop = enc.fields[enc.field_index("shop")]
    assert enc._free_rows(schema.features[4]) == 0
    for df in requests:
        polars_path = _encode(enc, df, monkeypatch, fast=False)
        _assert_same(_encode(enc, df, monkeypatch, fast=True), polars_path)
    # the frames exercise what they claim to: OOV rows, hashed reserve rows, the unseen domain, real statistics
    full = _encode(enc, requests[0], monkeypatch, fast=True)
    local = {f.name: full.sparse[:, j] - f.offset for j, f in enumerate(enc.sparse_fields)}
    assert (local["user"] == 0).any() and (local["user"] > 0).any() and (local["item"] == 0).any()
    assert (local["shop"] > shop.size - 1 - 3).any() and (local["shop"] == 0).any()
    assert not np.array_equal(local["shop"], before.sparse[:, enc.sparse_fields.index(shop)] - shop.offset)
    assert "zz" in full.domain_names and np.isnan(full.labels).any()
    assert len(np.unique(local["user_rate"])) > 2 and len(np.unique(local["ud_rate"])) > 2
    assert len(np.unique(full.dense[:, 2])) > 2  # item_price, a mean (dense: price, dom_n, item_price)


def test_incompatible_dtype_still_refused_for_small_frames(monkeypatch):
    """A column whose dtype cannot be matched to the vocabulary's raises DataError on the dict path too."""
    enc = Encoder(SchemaConfig.model_validate(SCHEMA)).fit(_frame(300, 0, ["s0", "s1", "s2"]))
    bad = _requests(1)[0].with_columns(item=pl.lit("not a number"))
    for fast in (True, False):
        with pytest.raises(DataError, match="cannot be matched to the training vocabulary"):
            _encode(enc, bad, monkeypatch, fast=fast)


def test_lookups_built_ahead_are_used(monkeypatch):
    """``build_lookups`` (a server, before a model takes requests) builds every dict the first request then uses."""
    schema = SchemaConfig.model_validate(SCHEMA)
    enc = Encoder(schema).fit(_frame(300, 0, ["s0", "s1", "s2"]))
    enc.build_lookups()
    assert set(enc._vocab_ids) == set(enc.vocabs) and {s.name for s in schema.stats} <= set(enc.past._index)
    built = {**{f"v.{k}": v[1] for k, v in enc._vocab_ids.items()}, **{k: v[1] for k, v in enc.past._index.items()}}
    df = _requests(1)[0]
    fast = _encode(enc, df, monkeypatch, fast=True)
    now = {**{f"v.{k}": v[1] for k, v in enc._vocab_ids.items()}, **{k: v[1] for k, v in enc.past._index.items()}}
    assert all(now[k] is built[k] for k in built)
    _assert_same(fast, _encode(enc, df, monkeypatch, fast=False))


EDITS = {  # user 3 missing from the table of user_rate, or replaced by user 99
    "missing": lambda t: t.filter(pl.col("user") != 3),
    "replaced": lambda t: t.with_columns(user=pl.when(pl.col("user") == 3).then(99).otherwise("user")),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_statistics_with_other_keys_than_their_neighbours(monkeypatch, edit):
    """Statistics with the same key columns share one dict index; a table that holds other keys than the first
    (an edited encoder) is joined instead, with the same values."""
    schema = SchemaConfig.model_validate(SCHEMA)
    enc = Encoder(schema).fit(_frame(300, 0, ["s0", "s1", "s2"]))
    enc.past.tables["user_rate"] = EDITS[edit](enc.past.tables["user_rate"])
    df = _requests(1)[0].with_columns(user=pl.lit(3, dtype=pl.Int64))
    _assert_same(_encode(enc, df, monkeypatch, fast=True), _encode(enc, df, monkeypatch, fast=False))
    assert enc.past._index["user_rate"][1] is None and enc.past._index["user_n"][1] is not None


def test_frame_changed_in_place_is_looked_up_again(monkeypatch):
    """The key rows kept while a frame is encoded do not outlive its encoding."""
    enc = Encoder(SchemaConfig.model_validate(SCHEMA)).fit(_frame(300, 0, ["s0", "s1", "s2"]))
    df = _requests(1)[0]
    _encode(enc, df, monkeypatch, fast=True)
    df.replace_column(df.get_column_index("user"), pl.Series("user", np.arange(df.height) % 15))
    _assert_same(_encode(enc, df, monkeypatch, fast=True), _encode(enc, df, monkeypatch, fast=False))
