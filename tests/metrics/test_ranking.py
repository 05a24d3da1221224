"""Tests for pepnet.metrics.ranking: exact AUC / GAUC / log loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from pepnet.metrics import auc, gauc, logloss

# --------------------------------------------------------------------------- auc


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),  # perfectly wrong
        ([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.3], 0.875),  # one pos/neg tie -> half a pair: (1 + 0.5 + 1 + 1) / 4
        ([0.0, 1.0, 1.0], [3.0, 3.0, 5.0], 0.75),  # float labels
        ([False, True], [-np.inf, np.inf], 1.0),  # bool labels, infinite scores
    ],
)
def test_auc_hand_computed(labels: list[float], scores: list[float], expected: float) -> None:
    assert auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_one_class_is_nan(labels: list[int]) -> None:
    result = auc(np.array(labels, dtype=float), np.linspace(0, 1, len(labels)))
    assert math.isnan(result)


@pytest.mark.parametrize("n", [2, 7, 50, 1000, 20_000])
def test_auc_matches_sklearn_with_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(5):
        scores = np.round(rng.random(n), 1)  # many ties
        labels = (rng.random(n) < scores * 0.8 + 0.1).astype(float)
        labels[:2] = [0.0, 1.0]  # both classes present
        assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        auc(np.array([0.0, np.nan, 1.0]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0 and 1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


# --------------------------------------------------------------------------- gauc


def _gauc_reference(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Straightforward per-group loop with sklearn (the definition GAUC must match)."""
    total, weight, used = 0.0, 0.0, 0
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() == labels[m].max():
            continue
        total += m.sum() * roc_auc_score(labels[m], scores[m])
        weight += m.sum()
        used += 1
    return (total / weight if used else math.nan), used


@pytest.mark.parametrize(("n", "n_users"), [(10, 3), (200, 20), (5000, 300), (20_000, 50)])
def test_gauc_matches_per_user_loop(n: int, n_users: int) -> None:
    rng = np.random.default_rng(n + n_users)
    groups = rng.integers(0, n_users, n) * 7 - 100  # unsorted, negative and sparse ids
    scores = np.round(rng.random(n), 1)  # ties within users
    labels = (rng.random(n) < 0.3).astype(float)
    result, used = gauc(labels, scores, groups)
    expected, expected_used = _gauc_reference(labels, scores, groups)
    assert used == expected_used
    if expected_used:
        assert result == pytest.approx(expected, abs=1e-12)
    else:
        assert math.isnan(result)


def test_gauc_hand_computed_impression_weighting() -> None:
    # user 1: 4 rows, AUC 0.75; user 2: 2 rows, AUC 0.0; user 3: one class only -> excluded.
    labels = np.array([0, 0, 1, 1, 1, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.6, 0.7])
    groups = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3])
    result, used = gauc(labels, scores, groups)
    assert used == 2
    assert result == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)


def test_gauc_string_groups_and_row_order() -> None:
    labels = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.7, 0.2])
    groups = np.array(["b", "a", "b", "a", "a", "b"])
    perm = np.array([5, 3, 0, 1, 4, 2])
    assert gauc(labels, scores, groups) == pytest.approx(gauc(labels[perm], scores[perm], groups[perm]))
    assert gauc(labels, scores, groups) == pytest.approx(_gauc_reference(labels, scores, groups))


def test_gauc_no_qualifying_group() -> None:
    labels = np.array([0, 0, 1, 1])
    result, used = gauc(labels, np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 1, 2, 2]))
    assert math.isnan(result) and used == 0
    result, used = gauc(np.array([]), np.array([]), np.array([], dtype=int))
    assert math.isnan(result) and used == 0


# --------------------------------------------------------------------------- logloss


def test_logloss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(1000)
    labels = (rng.random(1000) < probs).astype(float)
    assert logloss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), rel=1e-9)


def test_logloss_clips_and_empty() -> None:
    loss = logloss(np.array([1.0, 0.0]), np.array([0.0, 1.0], dtype=np.float32))
    assert math.isfinite(loss) and loss == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert logloss(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(-math.log1p(-1e-7))
    assert math.isnan(logloss(np.array([]), np.array([])))


# --------------------------------------------------------------------------- properties

_cases = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.integers(-20, 20), min_size=n, max_size=n),  # small range -> many ties
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
    )
)


def _arrays(case: tuple[list[int], list[int], list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, scores, groups = case
    return np.array(labels, dtype=float), np.array(scores, dtype=float), np.array(groups)


@settings(max_examples=150, deadline=None)
@given(_cases)
def test_auc_properties(case: tuple[list[int], list[int], list[int]]) -> None:
    labels, scores, _ = _arrays(case)
    a = auc(labels, scores)
    if labels.min() == labels.max():
        assert math.isnan(a)
        return
    assert 0.0 <= a <= 1.0
    assert auc(labels, -scores) == pytest.approx(1.0 - a, abs=1e-12)
    # Strictly monotone transforms keep the order (and the ties) of the scores.
    assert auc(labels, np.exp(scores / 4.0)) == pytest.approx(a, abs=1e-12)
    assert auc(labels, scores**3 + 5.0 * scores - 11.0) == pytest.approx(a, abs=1e-12)
    assert a == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(_cases)
def test_gauc_properties(case: tuple[list[int], list[int], list[int]]) -> None:
    labels, scores, groups = _arrays(case)
    single, used = gauc(labels, scores, np.zeros_like(groups))
    a = auc(labels, scores)
    if math.isnan(a):
        assert math.isnan(single) and used == 0
    else:
        assert used == 1 and single == pytest.approx(a, abs=1e-12)

    g, used = gauc(labels, scores, groups)
    ref, ref_used = _gauc_reference(labels, scores, groups)
    assert used == ref_used
    assert (math.isnan(g) and math.isnan(ref)) or g == pytest.approx(ref, abs=1e-12)
    if used:
        assert 0.0 <= g <= 1.0
