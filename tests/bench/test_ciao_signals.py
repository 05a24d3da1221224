"""benchmarks/ciao_signals.py builds the extra inputs behind the GBDT table of docs/results.md ("More
information: real-time counts and the trust graph"): each row may see only what was known before its day
(trust statistics, day counters), else the table would measure a leak. The realtime counts are pepnet's own
`realtime` option, tested in tests/data/test_encoder.py. Checked here on hand-made rows whose every value is
worked out below."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pepnet.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ciao_signals.py"
DAY = 86_400


@pytest.fixture(scope="module")
def signals():
    spec = importlib.util.spec_from_file_location("ciao_signals", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(*r: tuple[int, int, int, int, int, int]) -> pl.DataFrame:
    """(user_id, item_id, category_id, day, rating, helpfulness) rows."""
    cols = ("user_id", "item_id", "category_id", "timestamp", "rating", "helpfulness")
    df = pl.DataFrame([dict(zip(cols, x, strict=True)) for x in r])
    return df.with_columns(pl.col("timestamp") * DAY)


def test_trust_statistics_see_only_earlier_days_of_trusted_users(signals):
    # user 1 trusts user 2; user 2 rates on day 0 (liked, helpful) and day 1 (not liked, not helpful)
    train = rows((2, 10, 1, 0, 5, 2), (2, 11, 2, 1, 1, 1), (1, 12, 1, 1, 4, 1), (1, 13, 1, 2, 4, 1))
    trust = pl.DataFrame({"truster": [1], "trustee": [2]})
    schema = load_config(ROOT / "configs" / "ciao.yaml").schema_  # like = rating >= 4, helpful = helpfulness >= 2
    x = signals.trust_block(train, train, trust, schema, training=True)
    like_mean, prior = train["rating"].ge(4).mean(), signals.PRIOR
    # user 1's day-1 row sees only user 2's day-0 row; its day-2 row both of user 2's rows
    np.testing.assert_allclose(x[2, 0], np.log1p(1))
    np.testing.assert_allclose(x[2, 1], (1 + prior * like_mean) / (1 + prior))
    np.testing.assert_allclose(x[3, 0], np.log1p(2))
    np.testing.assert_allclose(x[3, 1], (1 + prior * like_mean) / (2 + prior))
    # per user x category (columns 4-7): user 2's category-1 row only
    np.testing.assert_allclose(x[3, 4], np.log1p(1))
    # user 2 trusts nobody: no trusted rows, the rates are the training means
    np.testing.assert_allclose(x[:2, 0], 0.0)
    np.testing.assert_allclose(x[:2, 1], like_mean)
    # degrees: user 1 trusts one user and is trusted by none; user 2 the reverse
    np.testing.assert_allclose(x[[0, 2], 8:], np.log1p([[0, 1], [1, 0]]))
    # an evaluation row sees every training row of the users it trusts
    valid = rows((1, 14, 1, 0, 3, 1))
    np.testing.assert_allclose(signals.trust_block(train, valid, trust, schema, training=False)[0, 0], np.log1p(2))


def test_day_counters_look_back_across_the_split_boundary(signals):
    train = rows((1, 10, 1, 0, 5, 1), (1, 11, 1, 0, 4, 1), (2, 10, 2, 1, 3, 1))
    valid = rows((1, 12, 1, 3, 2, 1), (1, 10, 2, 3, 5, 1))
    x_train, x_valid = signals.days_block([train, valid], same_day=False)
    assert x_train.shape == (3, 8) and x_valid.shape == (2, 8)
    # user 1 (columns 0-1: days since the previous day with a row, -1 for none; days since the first day)
    np.testing.assert_allclose(x_train[:2, :2], [[-1, 0], [-1, 0]])
    np.testing.assert_allclose(x_valid[:, :2], [[3, 3]] * 2)
    # item 10 (columns 2-3): rated by user 1 on day 0, user 2 on day 1, user 1 again on day 3
    np.testing.assert_allclose(x_train[[0, 2], 2:4], [[-1, 0], [1, 1]])
    np.testing.assert_allclose(x_valid[1, 2:4], [2, 3])
    # with same_day, one more column per key: log1p(rows on the row's own day)
    _, with_day = signals.days_block([train, valid], same_day=True)
    np.testing.assert_allclose(with_day[:, 2], np.log1p(2))  # user 1 has two rows on day 3
