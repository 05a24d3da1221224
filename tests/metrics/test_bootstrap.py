"""User-level bootstrap: resampled AUC / GAUC equal the metrics on the expanded rows; intervals behave."""
from __future__ import annotations

import numpy as np
import pytest

from pepnet.metrics import auc, gauc
from pepnet.metrics.bootstrap import bootstrap_cell, interval, paired_difference, replicates, resample_counts


def _data(n_users: int, rows_per_user: int, signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    y = (rng.random(users.size) < 0.3).astype(float)
    s = y * signal + rng.normal(size=users.size)
    return y, s, users


def test_resampled_metrics_equal_metrics_on_the_expanded_rows():
    y, s, users = _data(40, 6, 1.0)
    s = np.round(s, 1)  # ties
    counts = next(resample_counts(40, 3, seed=1))
    reps = bootstrap_cell(y, s[None], users, [counts])
    for b in range(3):
        w = counts[b][users]
        ye, se = np.repeat(y, w), np.repeat(s, w)
        # each draw of a user is its own group (a user drawn twice counts twice)
        ue = np.concatenate([np.repeat(np.arange(c) + 1000 * u, (users == u).sum()).reshape(c, -1).T.ravel()
                             if c else np.zeros(0, int) for u, c in enumerate(counts[b])])
        assert reps["auc"][0, b] == pytest.approx(auc(ye, se), abs=1e-12)
        assert reps["gauc"][0, b] == pytest.approx(gauc(ye, se, ue)[0], abs=1e-12)


def test_same_seed_same_resamples():
    a = np.concatenate(list(resample_counts(50, 250, seed=3)))
    b = np.concatenate(list(resample_counts(50, 250, seed=3)))
    assert a.shape == (250, 50) and (a.sum(1) == 50).all() and (a == b).all()


def test_interval_is_narrower_on_a_larger_test_split():
    widths = []
    for n_users in (30, 3000):
        y, s, users = _data(n_users, 10, 1.0)
        reps = replicates(y[:, None], s[None, :, None], np.zeros(y.size, int), users, ["d"], ["t"], n_boot=200)
        iv = interval(auc(y, s), reps[("ALL", "t", "auc")][0])
        assert iv.low < iv.value < iv.high
        widths.append(iv.width)
    assert widths[0] > 4 * widths[1]


def test_paired_difference_of_a_model_with_itself_is_zero_and_a_real_gain_excludes_zero():
    y, s, users = _data(500, 8, 1.0)
    rng = np.random.default_rng(5)
    better = s + 1.5 * y  # more signal
    noisy = [s + rng.normal(scale=0.05, size=s.size) for _ in range(3)]
    scores = np.stack([*noisy, s, s, s, better, better, better])[..., None]
    reps = replicates(y[:, None], scores, np.zeros(y.size, int), users, ["d"], ["t"], n_boot=200)
    r = reps[("ALL", "t", "auc")]
    vals = np.array([auc(y, x[:, 0]) for x in scores])
    same, agree, n = paired_difference(vals[3:6], vals[3:6], r[3:6], r[3:6])
    assert same.value == 0 and same.low == 0 and same.high == 0 and n == 3 and agree == 0
    gain, agree, n = paired_difference(vals[6:], vals[3:6], r[6:], r[3:6])
    assert gain.value > 0.05 and gain.excludes_zero() and agree == 3
    # against a reference fitted once ([1] values): the same interval for the same predictions
    once, _, _ = paired_difference(vals[6:], vals[3:4], r[6:], r[3:4])
    assert once.value == pytest.approx(gain.value) and once.low == pytest.approx(gain.low)
    noise, _, _ = paired_difference(vals[:3], vals[3:6], r[:3], r[3:6])
    assert not noise.excludes_zero()
