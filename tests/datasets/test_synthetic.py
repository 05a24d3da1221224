"""Tests of the synthetic multi-domain multi-task data generator."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pepnet.datasets.synthetic import (
    BLOCK_ROWS,
    DAY,
    T0,
    SyntheticSpec,
    generate,
    iter_frames,
    oracle_logits,
    oracle_probabilities,
    period_bounds,
    target_rates,
    write,
)

roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score

N = 20_000


def _binom_tol(p: float, n: int, z: float = 5.0) -> float:
    return z * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def spec() -> SyntheticSpec:
    return SyntheticSpec(n_rows=N, extra_sparse=(100, 1000), tasks=("click", "like", "follow"), seed=7)


@pytest.fixture(scope="module")
def frame(spec) -> pl.DataFrame:
    return generate(spec)


# ---------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_frame(spec, frame):
    assert generate(spec).equals(frame)
    other = generate(SyntheticSpec(**{**spec.__dict__, "seed": spec.seed + 1}))
    assert not other.equals(frame)


def test_chunked_equals_whole_across_blocks():
    s = SyntheticSpec(n_rows=2 * BLOCK_ROWS + 5_000, n_users=500, n_items=2_000, extra_sparse=(50,),
                      missing_rate=0.3, drift=0.3, n_periods=3, seed=3)
    whole = generate(s)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, s.n_rows), size=6, replace=False))
    cuts = [0, *cuts.tolist(), BLOCK_ROWS, BLOCK_ROWS + 1, s.n_rows]
    cuts = sorted(set(cuts))
    parts = [generate(s, a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    assert pl.concat(parts).equals(whole)
    assert pl.concat(list(iter_frames(s, chunk_rows=40_000))).equals(whole)
    assert generate(s, 70_000, 10).equals(whole[70_000:70_010])


def test_range_checks(spec):
    assert generate(spec, N, 0).height == 0
    assert generate(spec, N - 5).height == 5
    with pytest.raises(ValueError):
        generate(spec, N - 5, 10)
    with pytest.raises(ValueError):
        generate(spec, -1)


def test_spec_validation():
    with pytest.raises(ValueError):
        SyntheticSpec(tasks=())
    with pytest.raises(ValueError):
        SyntheticSpec(tasks=("click", "click"))
    with pytest.raises(ValueError):
        SyntheticSpec(tasks=("user_id",))
    with pytest.raises(ValueError):
        SyntheticSpec(missing_rate=1.5)
    with pytest.raises(ValueError):
        SyntheticSpec(n_domains=0)
    assert SyntheticSpec(tasks=["a", "b"]).tasks == ("a", "b")  # lists are normalised


# ---------------------------------------------------------------------------------------
# schema


def test_columns_and_dtypes(spec, frame):
    expected = {
        "user_id": pl.Int64,
        "item_id": pl.Int64,
        "author_id": pl.Int64,
        "domain_id": pl.Int32,
        "time": pl.Int64,
        "user_segment": pl.Int32,
        "item_category": pl.Int32,
        "f0": pl.Int64,
        "f1": pl.Int64,
        "d0": pl.Float32,
        "d1": pl.Float32,
        "click": pl.Int8,
        "like": pl.Int8,
        "follow": pl.Int8,
    }
    assert list(frame.columns) == list(expected) == list(spec.columns)
    assert dict(frame.schema) == expected
    assert frame.height == N


def test_value_ranges(spec, frame):
    card = spec.cardinalities
    for col, c in card.items():
        s = frame[col]
        assert s.min() >= 0 and s.max() < c, col
    assert frame["domain_id"].n_unique() == spec.n_domains
    assert frame["user_segment"].n_unique() == 8
    assert frame["item_category"].n_unique() > 40
    assert frame["time"].is_sorted()
    for t in spec.tasks:
        assert set(frame[t].drop_nulls().unique().to_list()) <= {0, 1}


def test_fixed_side_features(frame):
    # each item has one author and one category, each user one segment
    for key, attr in [("item_id", "author_id"), ("item_id", "item_category"), ("user_id", "user_segment")]:
        assert frame.group_by(key).agg(pl.col(attr).n_unique())[attr].max() == 1


def test_heavy_tailed_popularity(spec, frame):
    items = frame["item_id"].value_counts()["count"].to_numpy()
    users = frame["user_id"].value_counts()["count"].to_numpy()
    # many rare items, a few very popular ones
    assert (items == 1).mean() > 0.3
    assert items.max() > 50 * np.median(items)
    assert users.max() > 20 * np.median(users)


# ---------------------------------------------------------------------------------------
# planted effects


def test_signal_zero_is_pure_noise():
    s = SyntheticSpec(n_rows=N, signal=0.0, seed=1)
    df = generate(s)
    probs = oracle_probabilities(s, df)
    base = target_rates(len(s.tasks))
    assert np.ptp(probs, axis=0).max() == 0.0  # constant => AUC undefined
    np.testing.assert_allclose(probs[0], base, rtol=1e-5)
    for t, name in enumerate(s.tasks):
        assert abs(df[name].mean() - base[t]) < _binom_tol(base[t], N)
        for key in ("domain_id", "user_segment"):
            g = df.group_by(key).agg(pl.col(name).mean().alias("rate"), pl.len().alias("n"))
            for rate, n in zip(g["rate"], g["n"], strict=True):
                assert abs(rate - base[t]) < _binom_tol(base[t], n), (name, key)


def test_signal_oracle_auc_and_domain_rates(spec, frame):
    probs = oracle_probabilities(spec, frame)
    assert probs.shape == (N, 3)
    assert np.all((probs > 0) & (probs < 1))
    auc = roc_auc_score(frame["click"].to_numpy(), probs[:, 0])
    assert auc > 0.7
    # positive rates: first task ~10-30 %, later tasks sparser
    rates = [frame[t].mean() for t in spec.tasks]
    assert 0.1 < rates[0] < 0.3
    assert rates[1] < rates[0] and rates[2] < rates[0]
    # domain x task base rates differ
    g = frame.group_by("domain_id").agg(pl.col("click").mean().alias("rate"), pl.len().alias("n"))
    rates = g["rate"].to_numpy()
    assert rates.max() - rates.min() > 3 * _binom_tol(rates.mean(), int(g["n"].min()))
    # tasks are correlated
    lg = oracle_logits(spec, frame)
    assert np.corrcoef(lg[:, 0], lg[:, 1])[0, 1] > 0.3


def test_dense_features_have_an_effect(spec, frame):
    lg = oracle_logits(spec, frame)
    d = frame.select("d0", "d1").to_numpy()
    coef, *_ = np.linalg.lstsq(np.c_[np.ones(N), d], lg[:, 0], rcond=None)
    assert np.abs(coef[1:]).min() > 0.1


def test_domain_specific_interaction(spec, frame):
    """The same (user, item) pair scores differently in different domains."""
    rows = frame.head(2_000)
    lg = [oracle_logits(spec, rows.with_columns(pl.lit(d, pl.Int32).alias("domain_id")))[:, 0]
          for d in range(spec.n_domains)]
    diff = lg[0] - lg[1]
    assert diff.std() > 0.1  # not just a constant shift: interaction weighting differs


def test_drift_changes_domain_effects_over_periods():
    base = dict(n_rows=N, n_periods=4, seed=2)
    for drift, changes in [(0.0, False), (0.5, True)]:
        s = SyntheticSpec(drift=drift, **base)
        df = generate(s).head(2_000)
        day0 = df.with_columns(pl.lit(T0, pl.Int64).alias("time"))
        day3 = df.with_columns(pl.lit(T0 + 3 * DAY, pl.Int64).alias("time"))
        delta = np.abs(oracle_logits(s, day3) - oracle_logits(s, day0)).max()
        assert (delta > 0.1) if changes else (delta == 0.0)


def test_missing_rate():
    s = SyntheticSpec(n_rows=N, tasks=("click", "like", "follow"), missing_rate=0.25, seed=4)
    df = generate(s)
    assert df["click"].null_count() == 0
    for t in ("like", "follow"):
        frac = df[t].null_count() / N
        assert abs(frac - 0.25) < _binom_tol(0.25, N)
    # labels of non-missing rows are unchanged by the missingness
    full = generate(SyntheticSpec(**{**s.__dict__, "missing_rate": 0.0}))
    ok = df["like"].is_not_null()
    assert (df.filter(ok)["like"] == full.filter(ok)["like"]).all()


def test_oracle_matches_label_generation(spec, frame):
    """Labels are Bernoulli(oracle): calibration by decile of the oracle probability."""
    probs = oracle_probabilities(spec, frame)[:, 0]
    y = frame["click"].to_numpy()
    bins = np.quantile(probs, np.linspace(0, 1, 6))
    idx = np.clip(np.searchsorted(bins, probs, side="right") - 1, 0, 4)
    for b in range(5):
        m = idx == b
        assert abs(y[m].mean() - probs[m].mean()) < _binom_tol(probs[m].mean(), int(m.sum()))


# ---------------------------------------------------------------------------------------
# writing


def test_write_single_file_round_trip(tmp_path, spec, frame):
    paths = write(spec, tmp_path / "data.parquet", chunk_rows=6_000, progress=False)
    assert paths == [tmp_path / "data.parquet"]
    back = pl.read_parquet(paths[0])
    assert back.equals(frame)
    import pyarrow.parquet as pq

    md = pq.ParquetFile(paths[0]).metadata
    assert md.num_row_groups == 4 and md.row_group(0).num_rows == 6_000
    np.testing.assert_array_equal(oracle_probabilities(spec, back), oracle_probabilities(spec, frame))


def test_write_several_files(tmp_path, spec, frame):
    paths = write(spec, tmp_path / "parts", chunk_rows=4_000, files=3, progress=False)
    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert pl.concat([pl.read_parquet(p) for p in paths]).equals(frame)


def test_write_periods(tmp_path):
    s = SyntheticSpec(n_rows=N, n_periods=3, drift=0.2, seed=5)
    paths = write(s, tmp_path / "days", chunk_rows=5_000, files="periods", progress=True)
    assert [p.name for p in paths] == ["period-000.parquet", "period-001.parquet", "period-002.parquet"]
    parts = [pl.read_parquet(p) for p in paths]
    assert pl.concat(parts).equals(generate(s))
    for p, part in enumerate(parts):
        assert ((part["time"] - T0) // DAY).unique().to_list() == [p]
        assert part.height == period_bounds(s)[p][1] - period_bounds(s)[p][0]
    with pytest.raises(ValueError):
        write(s, tmp_path / "x", files=0, progress=False)


def test_planted_seesaw_effects_are_exactly_as_stated():
    """domain_flip / task_flip / prior_gate add exactly +-flip * d0 by domain, +-flip * d1 by task and
    gate * a_u * b_i * d2 to the logits (beside the recalibrated constants); the rows' features do not change;
    domain_shares and task_rates set the domain mix and the positive rates."""
    import dataclasses

    from pepnet.datasets.synthetic import _params

    plain = SyntheticSpec(n_rows=N, n_dense=3, domain_shares=(0.6, 0.3, 0.1), task_rates=(0.3, 0.05), seed=2)
    planted = dataclasses.replace(plain, domain_flip=1.0, task_flip=0.8, prior_gate=0.5)
    df_plain, df = generate(plain), generate(planted)
    features = [c for c in plain.columns if c not in plain.tasks]
    assert df.select(features).equals(df_plain.select(features))
    shift = _params(planted).base - _params(plain).base
    got = oracle_logits(planted, df) - oracle_logits(plain, df) - shift
    d0, d1, d2 = (df[c].to_numpy().astype(np.float64) for c in ("d0", "d1", "d2"))
    sign = np.where(df["domain_id"].to_numpy() == 0, 1.0, -1.0)
    P = _params(planted)
    gain = P.user_sense[df["user_id"].to_numpy()] * P.item_sense[df["item_id"].to_numpy()]
    common = 1.0 * sign * d0 + 0.5 * gain * d2
    np.testing.assert_allclose(got[:, 0], common + 0.8 * d1, atol=1e-4)
    np.testing.assert_allclose(got[:, 1], common - 0.8 * d1, atol=1e-4)
    shares = np.bincount(df["domain_id"].to_numpy(), minlength=3) / N
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=_binom_tol(0.6, N))
    for task, rate in zip(planted.tasks, planted.task_rates, strict=True):
        assert abs(df[task].mean() - rate) < _binom_tol(rate, N) + 0.01
    with pytest.raises(ValueError, match="prior_gate acts on dense feature d2"):
        SyntheticSpec(n_dense=2, prior_gate=1.0)
    with pytest.raises(ValueError, match="domain_shares"):
        SyntheticSpec(n_domains=3, domain_shares=(0.5, 0.5))
