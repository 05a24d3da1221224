"""Encoder: vocabularies, hashing, dense standardisation, statistics of the past without leakage,
save/load, unseen domains. The encoder is fitted on a training frame and must learn nothing from any
other frame."""
from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest

from pepnet.config import SchemaConfig
from pepnet.data.encoder import Encoder, hash_ids

NAN = float("nan")


def _schema(time: bool = True, **extra) -> SchemaConfig:
    spec = {
        "domain": "dom",
        "user": "user",
        "time": "t" if time else None,
        "labels": {"click": {"column": "click"}},
        "features": [
            {"name": "user"},
            {"name": "dom"},
            {"name": "item", "min_count": 2},
            {"name": "tag", "hash_buckets": 7},
            {"name": "price", "kind": "dense"},
        ],
        "stats": [
            {"name": "user_rate", "keys": ["user"], "stat": "rate", "target": "click", "prior": 2.0, "as_dense": True},
            {"name": "user_n", "keys": ["user"], "stat": "count", "as_dense": True},
            {"name": "ud_rate", "keys": ["user", "dom"], "stat": "rate", "target": "click", "prior": 0.0},
        ],
        "groups": {"general": ["user", "item", "tag", "price"], "domain_side": ["dom"], "user_prior": ["user_rate"]},
        **extra,
    }
    return SchemaConfig.model_validate(spec)


def _frame(n: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "user": rng.integers(0, 12, n),
        "dom": rng.choice(["a", "b", "c"], n),
        "item": rng.integers(0, 40, n),
        "tag": rng.choice(["x", "y", "z", "w"], n),
        "price": rng.normal(5.0, 2.0, n),
        "t": np.sort(rng.integers(0, n // 3, n)),  # many ties in time
        "click": rng.integers(0, 2, n).astype(float),
    }).with_columns(click=pl.when(pl.int_range(pl.len()) % 9 == 4).then(None).otherwise(pl.col("click")))


def _field(enc: Encoder, data, name: str) -> np.ndarray:
    """Local ids (offset removed) of a sparse field, or values of a dense field."""
    f = enc.fields[enc.field_index(name)]
    if f.kind == "sparse":
        return data.sparse[:, enc.sparse_fields.index(f)] - f.offset
    return data.dense[:, f.offset]


def _stat(enc: Encoder, df: pl.DataFrame, name: str, training: bool) -> np.ndarray:
    names, values = enc.past.values(df, training=training)
    return values[:, names.index(name)]


def _brute(train: pl.DataFrame, rows: pl.DataFrame, keys: list[str], kind: str, prior: float,
           visible) -> np.ndarray:
    """The statistic of each row of ``rows`` from the training rows that ``visible(i, j)`` allows
    (i = row of ``rows``, j = training row), by explicit loops."""
    y = train["click"].to_numpy()
    g = np.nanmean(y)
    out = []
    tk = list(zip(*(train[k].to_list() for k in keys), strict=True))
    for i, key in enumerate(zip(*(rows[k].to_list() for k in keys), strict=True)):
        past = [j for j in range(train.height) if tk[j] == key and visible(i, j)]
        if kind == "count":
            out.append(np.log1p(len(past)))
            continue
        ys = y[past]
        ys = ys[~np.isnan(ys)]
        if prior == 0:
            out.append(ys.mean() if len(ys) else g)
        else:
            out.append((ys.sum() + prior * g) / (len(ys) + prior))
    return np.asarray(out)


# ----------------------------------------------------------------------------- vocabularies and hashing


def test_vocabulary_min_count_and_oov_zero():
    train = _frame()
    enc = Encoder(_schema()).fit(train)
    counts = train["item"].value_counts()
    rare = set(counts.filter(pl.col("count") < 2)["item"].to_list())
    kept = sorted(counts.filter(pl.col("count") >= 2)["item"].to_list())
    assert rare, "the fixture must contain rare items"
    assert enc.fields[enc.field_index("item")].size == len(kept) + 1
    ids = _field(enc, enc.transform(train, training=True), "item")
    items = train["item"].to_numpy()
    assert np.all(ids[np.isin(items, list(rare))] == 0)
    assert np.all(ids[~np.isin(items, list(rare))] >= 1)
    # a kept value has one id, distinct from every other kept value
    mapping = {it: set(ids[items == it]) for it in kept}
    assert all(len(v) == 1 for v in mapping.values()) and len({next(iter(v)) for v in mapping.values()}) == len(kept)
    # unseen and null values -> 0; known values keep their id in another frame
    other = train.head(3).with_columns(item=pl.Series([999, None, kept[0]]))
    assert _field(enc, enc.transform(other), "item").tolist() == [0, 0, next(iter(mapping[kept[0]]))]



@pytest.mark.parametrize("k", [1, 3])
def test_oov_first_rows_sends_a_values_first_training_rows_to_the_oov_row(k):
    train = _frame()
    schema = _schema()
    plain = Encoder(schema).fit(train)
    schema.features[0] = schema.features[0].model_copy(update={"oov_first_rows": k})
    enc = Encoder(schema).fit(train)
    ids, own = _field(enc, enc.transform(train, training=True), "user"), _field(plain, plain.transform(train), "user")
    users, t = train["user"].to_list(), train["t"].to_list()
    earlier = np.array([sum(users[j] == users[i] and t[j] < t[i] for j in range(train.height))
                        for i in range(train.height)])  # rows of the same user strictly earlier in time
    assert (earlier < k).any() and (earlier >= k).any()
    np.testing.assert_array_equal(ids, np.where(earlier < k, 0, own))
    # evaluation rows, and every other field, are encoded as without the option
    np.testing.assert_array_equal(_field(enc, enc.transform(train), "user"), own)
    np.testing.assert_array_equal(enc.transform(train, training=True).dense,
                                  plain.transform(train, training=True).dense)

def test_fields_are_offset_into_one_fused_table():
    enc = Encoder(_schema()).fit(_frame())
    data = enc.transform(_frame(seed=5))
    starts = [f.offset for f in enc.sparse_fields]
    ends = [f.offset + f.size for f in enc.sparse_fields]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == enc.num_embeddings
    for j, f in enumerate(enc.sparse_fields):
        assert data.sparse[:, j].min() >= f.offset and data.sparse[:, j].max() < f.offset + f.size


def test_hashing_is_stable_and_in_range():
    ints = pl.Series([0, 1, 2, 123456789, -5, None])
    strs = pl.Series(["a", "b", "user_42", None])
    # pinned values: a saved model depends on them, so they must never change between versions or machines
    assert hash_ids(ints, 1000).tolist() == [536, 466, 111, 898, 515, 0]
    assert hash_ids(strs, 1000).tolist() == [929, 669, 690, 0]
    expected = int.from_bytes(hashlib.blake2b(b"user_42", digest_size=8).digest(), "little") % 1000 + 1
    assert hash_ids(strs, 1000)[2] == expected
    many = pl.Series(np.arange(-5000, 5000))
    ids = hash_ids(many, 13)
    assert ids.min() == 1 and ids.max() == 13
    assert np.array_equal(ids, hash_ids(many, 13))
    assert np.array_equal(ids[100:200], hash_ids(many.slice(100, 100), 13))  # independent of the batch
    counts = np.bincount(ids)[1:]
    assert counts.min() > 0.8 * counts.mean()  # spread over all buckets


def test_hashed_field_uses_buckets_plus_oov_row():
    train = _frame()
    enc = Encoder(_schema()).fit(train)
    assert enc.fields[enc.field_index("tag")].size == 8
    ids = _field(enc, enc.transform(train.with_columns(tag=pl.lit("never seen"))), "tag")
    assert np.all((ids >= 1) & (ids <= 7)) and len(set(ids)) == 1  # unseen values still hash, consistently


# ----------------------------------------------------------------------------- dense


def test_dense_standardised_with_training_statistics():
    train, other = _frame(), _frame(seed=1).with_columns(price=pl.col("price") * 3 + 10)
    enc = Encoder(_schema()).fit(train)
    p = train["price"].to_numpy()
    mean, std = p.mean(), p.std()
    assert enc.dense_stats["price"] == pytest.approx((mean, std))
    got = _field(enc, enc.transform(other), "price")
    np.testing.assert_allclose(got, (other["price"].to_numpy() - mean) / std, rtol=1e-5)
    assert abs(got.mean()) > 1  # not re-standardised on the other frame


# ----------------------------------------------------------------------------- statistics of the past


@pytest.mark.parametrize("name,keys,kind,prior", [
    ("user_rate", ["user"], "rate", 2.0),
    ("user_n", ["user"], "count", 0.0),
    ("ud_rate", ["user", "dom"], "rate", 0.0),
])
@pytest.mark.parametrize("shuffled", [False, True])
def test_time_mode_uses_strictly_earlier_training_rows(name, keys, kind, prior, shuffled):
    train = _frame()
    if shuffled:  # e.g. a random split: rows are not in time order
        train = train.sample(fraction=1.0, shuffle=True, seed=3)
    enc = Encoder(_schema(time=True)).fit(train)
    t = train["t"].to_numpy()
    expected = _brute(train, train, keys, kind, prior, lambda i, j: t[j] < t[i])
    np.testing.assert_allclose(_stat(enc, train, name, training=True), expected, rtol=1e-12)


@pytest.mark.parametrize("name,keys,kind,prior", [
    ("user_rate", ["user"], "rate", 2.0),
    ("user_n", ["user"], "count", 0.0),
    ("ud_rate", ["user", "dom"], "rate", 0.0),
])
def test_without_time_statistics_are_leave_one_out(name, keys, kind, prior):
    train = _frame()
    enc = Encoder(_schema(time=False)).fit(train)
    expected = _brute(train, train, keys, kind, prior, lambda i, j: i != j)
    np.testing.assert_allclose(_stat(enc, train, name, training=True), expected, rtol=1e-12)


def _labelled_past(train: pl.DataFrame, time: bool) -> np.ndarray:
    """Number of labelled training rows each training row may see for key (user, dom)."""
    t, y = train["t"].to_numpy(), train["click"].to_numpy()
    key = list(zip(train["user"].to_list(), train["dom"].to_list(), strict=True))
    n = train.height
    return np.array([sum(1 for j in range(n) if key[j] == key[i] and not np.isnan(y[j])
                         and (t[j] < t[i] if time else j != i)) for i in range(n)])


def _flip(df: pl.DataFrame, rows: pl.Expr) -> pl.DataFrame:
    return df.with_columns(click=pl.when(rows).then(1 - pl.col("click")).otherwise(pl.col("click")))


@pytest.mark.parametrize("time", [True, False])
def test_a_training_row_never_sees_its_own_label(time):
    """ud_rate has prior 0 (the plain mean of the visible labels), so the global mean does not enter
    wherever a row has a labelled past; flipping a row's own label must leave its statistic unchanged."""
    train = _frame()
    m = _labelled_past(train, time)
    s0 = _stat(Encoder(_schema(time=time)).fit(train), train, "ud_rate", training=True)
    y = train["click"].to_numpy()
    checked = 0
    for i in np.flatnonzero((m > 0) & ~np.isnan(y))[::7]:
        one = _flip(train, pl.int_range(pl.len()) == i)
        s1 = _stat(Encoder(_schema(time=time)).fit(one), one, "ud_rate", training=True)
        assert s1[i] == s0[i], f"row {i} sees its own label"
        assert np.any(s1 != s0), "flipping a label must change someone's statistic"
        checked += 1
    assert checked >= 5


def test_a_training_row_never_sees_later_rows():
    train = _frame()
    k = 120
    t = train["t"].to_numpy()
    m = _labelled_past(train, True)
    later = _flip(train, pl.col("t") >= t[k])
    s0 = _stat(Encoder(_schema(time=True)).fit(train), train, "ud_rate", training=True)
    s1 = _stat(Encoder(_schema(time=True)).fit(later), later, "ud_rate", training=True)
    earlier = (t < t[k]) & (m > 0)
    assert earlier.sum() > 30
    np.testing.assert_array_equal(s1[earlier], s0[earlier])
    assert np.any(s1[t > t[k]] != s0[t > t[k]])


def test_evaluation_rows_use_the_training_rows_only():
    train, valid = _frame(), _frame(seed=9).with_columns(user=pl.col("user") + 6)  # users 12..17 are new
    enc = Encoder(_schema()).fit(train)
    for name, keys, kind, prior in (("user_rate", ["user"], "rate", 2.0), ("user_n", ["user"], "count", 0.0),
                                    ("ud_rate", ["user", "dom"], "rate", 0.0)):
        expected = _brute(train, valid, keys, kind, prior, lambda i, j: True)
        np.testing.assert_allclose(_stat(enc, valid, name, training=False), expected, rtol=1e-12)
    # the evaluation split's own labels change nothing; unseen users get the training global rate
    flipped = valid.with_columns(click=1 - pl.col("click"))
    a, b = enc.transform(valid), enc.transform(flipped)
    np.testing.assert_array_equal(a.sparse, b.sparse)
    np.testing.assert_array_equal(a.dense, b.dense)
    new_user = valid["user"].to_numpy() >= 12
    assert new_user.any()
    g = np.nanmean(train["click"].to_numpy())
    np.testing.assert_allclose(_stat(enc, valid, "user_rate", training=False)[new_user], g)


def _schema_with_stat(stat: dict, time: bool = True) -> SchemaConfig:
    """:func:`_schema` with one more statistic."""
    return _schema(time=time, stats=[s.model_dump() for s in _schema().stats] + [stat])


REALTIME_COUNT = {"name": "user_n_rt", "keys": ["user"], "stat": "count", "as_dense": True, "realtime": True}


def test_a_realtime_count_adds_the_evaluated_frames_earlier_rows_to_the_training_rows():
    train, valid = _frame(), _frame(seed=9).with_columns(user=pl.col("user") + 6, t=pl.col("t") + 1000)
    enc = Encoder(_schema_with_stat(REALTIME_COUNT)).fit(train)
    vt = valid["t"].to_numpy()
    both = pl.concat([train, valid])
    expected = _brute(both, valid, ["user"], "count", 0.0,
                      lambda i, j: j < train.height or vt[j - train.height] < vt[i])
    np.testing.assert_allclose(_stat(enc, valid, "user_n_rt", training=False), expected, rtol=1e-12)
    # the frozen count sees the training rows only, and the two differ where the frame has earlier rows
    frozen = _stat(enc, valid, "user_n", training=False)
    np.testing.assert_allclose(frozen, _brute(train, valid, ["user"], "count", 0.0, lambda i, j: True))
    assert np.sum(expected != frozen) > 50
    # it reads no label: the evaluated frame's labels change nothing
    flipped = valid.with_columns(click=1 - pl.col("click"))
    np.testing.assert_array_equal(enc.transform(valid).dense, enc.transform(flipped).dense)
    # on training rows it is the ordinary count of strictly earlier rows
    np.testing.assert_array_equal(_stat(enc, train, "user_n_rt", training=True),
                                  _stat(enc, train, "user_n", training=True))


@pytest.mark.parametrize("change, time, message", [
    ({"stat": "rate", "target": "click"}, True, "count' only"),
    ({}, False, "need schema.time"),
])
def test_realtime_is_refused_for_rates_and_without_a_time_column(change, time, message):
    with pytest.raises(ValueError, match=message):
        _schema_with_stat({**REALTIME_COUNT, **change}, time=time)


def test_statistic_buckets_come_from_training_quantiles():
    train = _frame()
    enc = Encoder(_schema()).fit(train)
    raw = _stat(enc, train, "ud_rate", training=True)
    edges = enc.stat_edges["ud_rate"]
    np.testing.assert_allclose(edges, np.unique(np.quantile(raw, np.arange(1, 16) / 16)))
    ids = _field(enc, enc.transform(train, training=True), "ud_rate")
    np.testing.assert_array_equal(ids, np.searchsorted(edges, raw, side="right") + 1)
    assert ids.min() >= 1 and ids.max() < enc.fields[enc.field_index("ud_rate")].size


# ----------------------------------------------------------------------------- persistence, domains


def test_save_load_round_trip_gives_identical_encodings(tmp_path):
    train, other = _frame(), _frame(seed=4).with_columns(dom=pl.Series(["a", "zzz"] * 100))
    enc = Encoder(_schema()).fit(train)
    enc.save(tmp_path / "enc")
    back = Encoder.load(tmp_path / "enc")
    assert back.fields == enc.fields and back.num_embeddings == enc.num_embeddings
    for df, training in ((train, True), (other, False)):
        a, b = enc.transform(df, training=training), back.transform(df, training=training)
        for field in ("sparse", "dense", "labels", "domain", "user"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.domain_names == b.domain_names


def test_unseen_domain_is_out_of_vocabulary():
    train = _frame()
    enc = Encoder(_schema()).fit(train)
    other = train.head(4).with_columns(dom=pl.Series(["a", "zzz", "b", "zzz"]))
    assert enc.unseen_domains(other) == ["zzz"]
    assert enc.unseen_domains(train) == []
    ids = _field(enc, enc.transform(other), "dom")
    assert ids[1] == 0 and ids[3] == 0 and ids[0] >= 1 and ids[2] >= 1 and ids[0] != ids[2]
    data = enc.transform(other)
    assert data.domain_names == ["a", "b", "zzz"]  # reported under its own name


def test_labels_nan_where_missing():
    train = _frame()
    data = Encoder(_schema()).fit(train).transform(train)
    y = train["click"].to_numpy()
    assert data.labels.shape == (train.height, 1) and data.labels.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(data.labels[:, 0]), np.isnan(y))


def test_time_features_encode_the_calendar_part_of_the_time_column():
    """``schema.time_features``: sparse fields whose ids stand for the hour / weekday of the time column (UTC);
    a value never seen in training is the OOV id 0."""
    schema = _schema(time_features=[{"name": "hour", "part": "hour"}, {"name": "wd", "part": "weekday"}])
    start = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
    train = _frame(96).with_columns(t=pl.Series(start + 3600 * np.arange(96) % (20 * 3600)))  # hours 0..19
    enc = Encoder(schema).fit(train)
    later = train.with_columns(t=pl.Series(start + 86_400 * 2 + 3600 * np.arange(96) % (24 * 3600)))  # Wednesday
    for df in (train, later):
        data = enc.transform(df)
        hours = (df["t"].to_numpy() % 86_400) // 3600
        ids = _field(enc, data, "hour")
        kept = enc.vocabs["hour"].to_numpy()
        np.testing.assert_array_equal(np.where(ids > 0, kept[np.maximum(ids - 1, 0)], -1),
                                      np.where(hours < 20, hours, -1))  # hours 20..23: unseen in training
    assert enc.vocabs["wd"].to_list() == [1]  # training saw Mondays only (polars: Monday = 1)
    assert (_field(enc, enc.transform(train), "wd") == 1).all() and (_field(enc, enc.transform(later), "wd") == 0).all()
