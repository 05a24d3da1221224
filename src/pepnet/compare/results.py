"""The results of a comparison, aggregated over seeds: every (domain, task, metric) cell of every run's test
report, its mean, standard deviation and values."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import ALL_DOMAINS

METRICS = ("auc", "gauc")
MEAN = "mean"  # the task name of the average over tasks


def _cells(report: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """(domain, task, metric) -> value of one run's report dict, plus the mean over tasks (task ``mean``)."""
    out: dict[tuple[str, str, str], float] = {}
    for task, row in report["overall"].items():
        for m in METRICS:
            out[(ALL_DOMAINS, task, m)] = math.nan if row[m] is None else row[m]
    for row in report["per_domain"]:
        for m in METRICS:
            out[(row["domain"], row["task"], m)] = math.nan if row[m] is None else row[m]
    for m in METRICS:
        vals = [out[(ALL_DOMAINS, t, m)] for t in report["tasks"]]
        out[(ALL_DOMAINS, MEAN, m)] = float(np.nanmean(vals)) if not all(math.isnan(v) for v in vals) else math.nan
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Mean, standard deviation (ddof 1; 0 with one seed) and values over seeds of every cell."""
    cells = [_cells(r["report"]) for r in runs]
    keys = list(dict.fromkeys(k for c in cells for k in c))
    out = {}
    for k in keys:
        vals = [c.get(k, math.nan) for c in cells]
        finite = [v for v in vals if not math.isnan(v)]
        out[k] = {
            "mean": float(np.mean(finite)) if finite else math.nan,
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0 if finite else math.nan,
            "n": len(finite),
            "values": vals,
        }
    return out


__all__ = ["MEAN", "METRICS", "aggregate"]
