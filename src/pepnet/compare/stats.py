"""Statistics of ``pepnet compare`` that do not overclaim (rendered by :func:`pepnet.compare.render.paired_table`).

Every model's test predictions (one array per seed) are scored on the same user-level bootstrap resamples of
the test split (:mod:`pepnet.metrics.bootstrap`; 1,000 resamples, seed 0). From them:

- ``intervals``: each model's 95% interval of every (domain, task) AUC and GAUC, its value being the mean
  over seeds;
- ``paired``: each model's difference from the reference (:func:`reference_model`), paired by seed (the k-th
  run of every model has the same seed), with its 95% interval and the number of seeds whose own difference
  has the same sign. A reference fitted once (the GBDT, which is deterministic) is subtracted from every seed,
  and its "seeds agreeing" is not shown: a spread of seeds around a constant says nothing about the test
  sample. A difference whose interval holds 0 is not distinguishable from no difference;
- ``warnings``: the test split is too small for differences to mean anything when, for a reported task, the
  reference's 95% interval of the overall AUC is wider than :data:`MAX_WIDTH` (0.05), or the test split has
  fewer than :data:`MIN_CLASS` (100) positive or negative labels.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import ALL_DOMAINS
from ..metrics.bootstrap import N_BOOT, interval, mean_over_seeds, paired_difference, replicates
from .gbdt import NAME as GBDT

MAX_WIDTH = 0.05
"""Widest 95% interval of the reference's overall test AUC that does not trigger the small-test warning."""
MIN_CLASS = 100
"""Fewest positive (and negative) test labels per task that do not trigger the small-test warning."""


def reference_model(labels: list[str]) -> str:
    """The model the others are paired against: the GBDT when compared, else shared-bottom, else the first."""
    return next((m for m in (GBDT, "shared_bottom") if m in labels), labels[0])


def _values(result: dict[str, Any], label: str, key: str) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in result["models"][label]["aggregate"][key]["values"]],
                    dtype=float)


def add_statistics(result: dict[str, Any], probs: dict[str, np.ndarray], labels: np.ndarray, domain: np.ndarray,
                   users: np.ndarray, n_boot: int = N_BOOT) -> list[str]:
    """Fill ``result["intervals"]``, ``result["paired"]`` and ``result["warnings"]``; return the warnings.

    Args:
        result: the comparison (``models`` with their ``aggregate``; ``tasks``, ``domains``).
        probs: per model label, its test predictions [S, N, T] (S runs: seeds, or 1 for a model fitted once).
        labels: [N, T] test labels (``nan`` = missing); ``domain``: [N] codes into ``result["domains"]``;
            ``users``: [N] user codes.
    """
    names = list(probs)
    stacked = np.concatenate([probs[m] for m in names])
    rows = np.cumsum([0] + [probs[m].shape[0] for m in names])
    span = {m: slice(int(rows[i]), int(rows[i + 1])) for i, m in enumerate(names)}
    reps = replicates(labels, stacked, domain, users, list(result["domains"]), list(result["tasks"]), n_boot)
    ref = reference_model(names)
    once = ref == GBDT and probs[ref].shape[0] == 1  # the GBDT is deterministic: compare fits it once
    intervals: dict[str, dict[str, Any]] = {m: {} for m in names}
    paired: dict[str, dict[str, Any]] = {m: {} for m in names if m != ref}
    for (d, t, metric), r in reps.items():
        key = f"{d}|{t}|{metric}"
        for m in names:
            intervals[m][key] = interval(result["models"][m]["aggregate"][key]["mean"],
                                         mean_over_seeds(r[span[m]])).to_dict()
        for m, cells in paired.items():
            iv, agreeing, seeds = paired_difference(_values(result, m, key), _values(result, ref, key),
                                                    r[span[m]], r[span[ref]])
            cells[key] = {**iv.to_dict(), "agreeing": None if once else agreeing, "seeds": seeds}
    result["intervals"] = intervals
    result["paired"] = {"reference": ref, "reference_fitted_once": once, "n_boot": n_boot, "models": paired}
    result["warnings"] = small_test_warnings(result, labels)
    return result["warnings"]


def small_test_warnings(result: dict[str, Any], labels: np.ndarray) -> list[str]:
    """One line per reported task whose test split is too small to tell models apart (see the module doc)."""
    ref = result["paired"]["reference"]
    out = []
    for t, task in enumerate(result["tasks"]):
        y = labels[:, t][~np.isnan(labels[:, t])]
        pos, neg = int((y == 1).sum()), int((y == 0).sum())
        iv = result["intervals"][ref].get(f"{ALL_DOMAINS}|{task}|auc", {})
        width = (iv["high"] - iv["low"]) if iv.get("low") is not None and iv.get("high") is not None else math.inf
        if width > MAX_WIDTH or min(pos, neg) < MIN_CLASS:
            out.append(f"task {task!r}: the test split is too small to tell models apart ({len(y):,} labelled rows, "
                       f"{pos:,} positive, {neg:,} negative; the 95% interval of {ref}'s AUC is {width:.3f} wide; "
                       f"expected at most {MAX_WIDTH} wide and at least {MIN_CLASS} of each class). "
                       "Differences below that width are noise")
    return out


__all__ = ["MAX_WIDTH", "MIN_CLASS", "add_statistics", "reference_model", "small_test_warnings"]
