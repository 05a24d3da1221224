"""Ranking and calibration metrics in pure, vectorised numpy.

All functions take 1-D arrays of equal length ``N``. Labels are binary (0/1 as
bool, int or float); scores are any real values where only their order matters
(``NaN`` scores are rejected). Undefined results are ``float('nan')`` -- never 0.5.

Ties are handled exactly as in the Mann-Whitney U statistic with average ranks:
a positive tied with a negative counts as half a correctly ordered pair. The
implementation counts pairs per run of tied scores with integer arithmetic,

    2U = sum over tie runs r of  2 * neg_before(r) * pos(r) + pos(r) * neg(r),

which is algebraically identical to ``sum(avg_rank of positives) - P(P+1)/2``
but exact (no floating-point rank sums), so ``AUC = 2U / (2 P N)``.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["auc", "gauc", "group_aucs", "logloss"]


def _binary_labels(labels: ArrayLike, name: str = "labels") -> NDArray[np.bool_]:
    """Validate ``labels`` ([N], values in {0, 1}) and return them as a bool array [N]."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y
    is_one = y == 1
    if not np.all(is_one | (y == 0)):
        raise ValueError(f"{name} must contain only 0 and 1 (missing labels must be filtered out first)")
    return is_one


def _real_scores(scores: ArrayLike, n: int, name: str = "scores") -> NDArray[np.float64]:
    """Validate ``scores`` ([N] real, no NaN) and return them as float64 [N]."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match labels, got {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name} contain NaN")
    return s


def _run_starts(*sorted_keys: NDArray) -> NDArray[np.intp]:
    """Start indices of runs of equal consecutive key tuples in sorted arrays (all length N >= 1)."""
    n = sorted_keys[0].shape[0]
    change = np.zeros(n, dtype=np.bool_)
    change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties).

    Args:
        labels: [N] binary labels (0/1, bool/int/float).
        scores: [N] real scores; higher means more likely positive.

    Returns:
        AUC in [0, 1], or ``nan`` when fewer than one positive and one negative
        are present (AUC is undefined; this never returns 0.5 in that case).
    """
    y = _binary_labels(labels)
    s = _real_scores(scores, y.shape[0])
    n = y.shape[0]
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan

    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order].astype(np.int64)

    starts = _run_starts(s_sorted)
    pos_run = np.add.reduceat(y_sorted, starts)
    len_run = np.diff(np.append(starts, n))
    neg_run = len_run - pos_run
    neg_before = np.cumsum(neg_run) - neg_run
    twice_u = int(np.sum(2 * neg_before * pos_run + pos_run * neg_run))
    return twice_u / (2.0 * n_pos * n_neg)


def group_aucs(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group (e.g. user) on its own rows.

    Fully vectorised: one ``lexsort`` by (group, score), tie runs within each group, and per-group sums via
    ``np.add.reduceat``.

    Args:
        labels: [N] binary labels (0/1, bool/int/float).
        scores: [N] real scores.
        groups: [N] group ids (any sortable dtype, e.g. int user ids).

    Returns:
        ``(keys, aucs, sizes)``, each [G] over the G distinct groups in sorted order: the group id, its AUC
        (``nan`` unless the group holds both a positive and a negative row) and its number of rows.
    """
    y = _binary_labels(labels)
    n = y.shape[0]
    s = _real_scores(scores, n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) to match labels, got {g.shape}")
    if g.dtype.kind == "f" and np.isnan(g).any():
        raise ValueError("groups contain NaN")
    if n == 0:
        return g[:0], np.zeros(0), np.zeros(0, dtype=np.int64)

    order = np.lexsort((s, g))  # primary key: group, secondary: score
    g_sorted = g[order]
    s_sorted = s[order]
    y_sorted = y[order].astype(np.int64)

    group_starts = _run_starts(g_sorted)  # row index where each group begins
    run_starts = _run_starts(g_sorted, s_sorted)  # row index where each (group, score) run begins
    # Run index at which each group begins (group starts are a subset of run starts).
    group_first_run = np.searchsorted(run_starts, group_starts)
    n_groups = group_starts.shape[0]
    run_group = np.repeat(np.arange(n_groups), np.diff(np.append(group_first_run, run_starts.shape[0])))

    pos_run = np.add.reduceat(y_sorted, run_starts)
    len_run = np.diff(np.append(run_starts, n))
    neg_run = len_run - pos_run
    neg_excl = np.cumsum(neg_run) - neg_run  # negatives in all earlier runs (any group)
    neg_before = neg_excl - neg_excl[group_first_run][run_group]  # ... within the same group only

    twice_u = np.add.reduceat(2 * neg_before * pos_run + pos_run * neg_run, group_first_run)
    g_pos = np.add.reduceat(pos_run, group_first_run)
    g_len = np.diff(np.append(group_starts, n))
    g_neg = g_len - g_pos
    ok = (g_pos > 0) & (g_neg > 0)
    aucs = np.full(n_groups, np.nan)
    aucs[ok] = twice_u[ok] / (2.0 * g_pos[ok] * g_neg[ok])
    return g_sorted[group_starts], aucs, g_len


def gauc(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> tuple[float, int]:
    """Group AUC: per-group AUC (:func:`group_aucs`) averaged with weights = group size (impressions).

    Only groups (e.g. users) that contain both a positive and a negative row take part; each one is weighted
    by its number of rows.

    Args:
        labels: [N] binary labels (0/1, bool/int/float).
        scores: [N] real scores.
        groups: [N] group ids (any sortable dtype, e.g. int user ids).

    Returns:
        ``(gauc, n_groups_used)``; ``(nan, 0)`` when no group has both classes.
    """
    _, aucs, sizes = group_aucs(labels, scores, groups)
    ok = ~np.isnan(aucs)
    n_used = int(np.count_nonzero(ok))
    if n_used == 0:
        return math.nan, 0
    weights = sizes[ok].astype(np.float64)
    return float(np.dot(weights, aucs[ok]) / weights.sum()), n_used


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy.

    Args:
        labels: [N] binary labels (0/1, bool/int/float).
        probs: [N] predicted probabilities; clipped to ``[eps, 1 - eps]``
            (in float64, so float32 inputs equal to 1.0 stay finite).
        eps: clipping margin.

    Returns:
        Mean log loss, or ``nan`` for empty input.
    """
    y = _binary_labels(labels)
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"probs must have shape {y.shape} to match labels, got {p.shape}")
    if y.shape[0] == 0:
        return math.nan
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))
