"""User-level bootstrap of test AUC and GAUC: confidence intervals of one model, and of a paired difference.

Method. The test split's users are drawn with replacement (as many draws as there are users); a user drawn
``c`` times brings all of its test rows ``c`` times. Each of ``n_boot`` such resamples gives every model the
same row weights, so a difference between two models is computed on the same resampled rows (paired). On a
resample, AUC is the weighted Mann-Whitney statistic (ties count one half) and GAUC the mean of each user's own
AUC weighted by its rows times its draws. The 95% interval is the 2.5th and 97.5th percentile over resamples
(percentile bootstrap). Resampling users, not rows, keeps a user's correlated rows together, so the interval
is not too narrow when a few heavy users dominate.

For several seeds, a model's value on a resample is the mean over its seeds' predictions scored on that same
resample; the difference from a reference is the mean over seeds of (model seed k - reference seed k), or,
against a reference fitted once (a deterministic GBDT), of (model seed k - reference). The interval then
reflects the test sample, while seed-to-seed variation is averaged (and reported separately as the seeds
that agree).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pepnet.metrics.ranking import group_aucs

__all__ = ["N_BOOT", "Interval", "bootstrap_cell", "interval", "mean_over_seeds", "paired_difference", "replicates",
           "resample_counts"]

N_BOOT = 1000
"""Resamples per interval."""
CHUNK = 100
"""Resamples computed at once (memory: CHUNK x rows floats)."""
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval (``nan`` where undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: None if math.isnan(v) else v for k, v in (("value", self.value), ("low", self.low),
                                                             ("high", self.high))}

    @property
    def width(self) -> float:
        return self.high - self.low

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def interval(value: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    """``value`` with the ``level`` percentile interval of ``replicates`` [B] (undefined resamples left out)."""
    r = replicates[np.isfinite(replicates)]
    if not math.isfinite(value) or r.size < 2:
        return Interval(float(value), math.nan, math.nan)
    a = (1 - level) / 2
    low, high = np.quantile(r, [a, 1 - a])
    return Interval(float(value), float(low), float(high))


def resample_counts(n_users: int, n_boot: int = N_BOOT, seed: int = 0) -> Iterator[np.ndarray]:
    """Chunks of int [b, n_users] draw counts, ``n_boot`` resamples in all: each row of a chunk is one
    resample of ``n_users`` users drawn with replacement. The same ``seed`` gives the same resamples."""
    rng = np.random.default_rng(seed)
    p = np.full(n_users, 1.0 / n_users)
    for start in range(0, n_boot, CHUNK):
        yield rng.multinomial(n_users, p, size=min(CHUNK, n_boot - start))


def _weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of scores ``s`` [N] for labels ``y`` [N] (bool) under each row of weights ``w`` [b, N] -> [b]."""
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie runs of equal scores
    wp = np.add.reduceat(w * y, starts, axis=1)
    wn = np.add.reduceat(w * ~y, starts, axis=1)
    neg_before = np.cumsum(wn, axis=1) - wn
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (wp * (neg_before + 0.5 * wn)).sum(1) / den, np.nan)


def bootstrap_cell(labels: np.ndarray, scores: np.ndarray, users: np.ndarray, counts: list[np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """AUC and GAUC of every score vector on every resample, for one (domain, task) cell.

    Args:
        labels: [N] 0/1 labels of the cell's rows (no missing label).
        scores: [K, N] scores of K models / seeds on those rows.
        users: [N] user codes in ``[0, U)`` (the column index into ``counts``).
        counts: the chunks of :func:`resample_counts` for the U test users, [b, U] each.

    Returns:
        ``{"auc": [K, B], "gauc": [K, B]}`` (``nan`` on a resample where the metric is undefined).
    """
    y = np.asarray(labels) == 1
    out: dict[str, list[np.ndarray]] = {"auc": [], "gauc": []}
    per_user = [group_aucs(y, s, users) for s in scores]  # (keys, aucs, sizes) per score vector
    for c in counts:
        w = c[:, users].astype(np.float64)  # [b, N]
        out["auc"].append(np.stack([_weighted_auc(y, s, w) for s in scores]))
        g = []
        for keys, aucs, sizes in per_user:
            ok = ~np.isnan(aucs)
            wu = c[:, keys[ok]] * sizes[ok]  # [b, users with both classes]
            with np.errstate(invalid="ignore", divide="ignore"):
                g.append(np.where(wu.sum(1) > 0, wu @ aucs[ok] / wu.sum(1), np.nan))
        out["gauc"].append(np.stack(g))
    return {k: np.concatenate(v, axis=1) for k, v in out.items()}


Cell = tuple[str, str, str]  # (domain or ALL, task, metric)


def replicates(labels: np.ndarray, scores: np.ndarray, domain: np.ndarray, users: np.ndarray,
               domain_names: list[str], tasks: list[str], n_boot: int = N_BOOT, seed: int = 0
               ) -> dict[Cell, np.ndarray]:
    """Bootstrap replicates of every cell (overall ``ALL`` and per domain, per task, AUC and GAUC).

    Args:
        labels: [N, T] 0/1 labels, ``nan`` where missing (those rows leave that task's cells).
        scores: [K, N, T] predicted probabilities of K models / seeds on the same rows.
        domain: [N] codes into ``domain_names``.
        users: [N] user ids (any integer codes).
        n_boot, seed: resamples, and the seed that draws them (every cell uses the same user draws).

    Returns:
        ``{(domain, task, metric): [K, n_boot]}``.
    """
    from pepnet.metrics.report import ALL_DOMAINS

    _, user_codes = np.unique(users, return_inverse=True)
    counts = list(resample_counts(int(user_codes.max()) + 1 if user_codes.size else 0, n_boot, seed))
    out: dict[Cell, np.ndarray] = {}
    for t, task in enumerate(tasks):
        has = ~np.isnan(labels[:, t])
        cells = [(ALL_DOMAINS, has)] + [(name, has & (domain == d)) for d, name in enumerate(domain_names)]
        for name, rows in cells:
            if not rows.any():
                continue
            reps = bootstrap_cell(labels[rows, t], scores[:, rows, t], user_codes[rows], counts)
            for metric, r in reps.items():
                out[(name, task, metric)] = r
    return out


def mean_over_seeds(reps: np.ndarray) -> np.ndarray:
    """[S, B] -> [B]: the mean over seeds of each resample, ignoring undefined values (``nan`` where all are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": that resample stays nan
        return np.nanmean(reps, axis=0)


def paired_difference(values: np.ndarray, ref_values: np.ndarray, reps: np.ndarray, ref_reps: np.ndarray
                      ) -> tuple[Interval, int, int]:
    """The mean over seeds of (model - reference), its interval, and the seeds that agree with its sign.

    Args:
        values: [S] the model's metric per seed; ``ref_values``: [S] the reference's per seed, or [1] for a
            reference fitted once.
        reps, ref_reps: their bootstrap replicates, [S, B] and [S or 1, B] (same resamples).

    Returns:
        ``(interval, agreeing, seeds)``: ``agreeing`` counts the seeds whose own difference has the sign of the
        mean difference (``seeds`` seeds in all). Against a reference fitted once, this only says how the
        model's seeds spread around a constant, not whether the difference is real; the interval does.
    """
    d = values - ref_values
    ok = np.isfinite(d)
    if not ok.any():
        return Interval(math.nan, math.nan, math.nan), 0, 0
    diff = float(d[ok].mean())
    rep = mean_over_seeds(reps[ok] - (ref_reps[ok] if ref_reps.shape[0] > 1 else ref_reps))
    agreeing = int((np.sign(d[ok]) == np.sign(diff)).sum()) if diff != 0 else 0
    return interval(diff, rep), agreeing, int(ok.sum())
