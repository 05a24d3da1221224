"""Per-task, per-domain evaluation report for multi-domain multi-task models.

``evaluate`` turns predictions ``probs`` [N, T] and labels ``labels`` [N, T]
(``NaN`` = label missing) into a :class:`MetricsReport` with one row per task for
all data (domain ``"ALL"``) and one row per (domain, task). Undefined metrics are
``NaN`` in memory, ``null`` in JSON, empty in CSV and ``"—"`` in text tables.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from pepnet.fileio import atomic_write, read_json_as
from pepnet.metrics.ranking import auc, gauc, logloss

__all__ = ["ALL_DOMAINS", "COLUMNS", "METRIC_COLUMNS", "MetricsReport", "evaluate"]

ALL_DOMAINS = "ALL"
"""Domain name of the row computed over every domain."""

METRIC_COLUMNS: tuple[str, ...] = ("rows", "positive_rate", "auc", "gauc", "gauc_users", "logloss")
"""Metric fields of a report row, in output order."""

COLUMNS: tuple[str, ...] = ("domain", "task", *METRIC_COLUMNS)
"""All fields of a report row (CSV column order)."""

_INT_COLUMNS = frozenset({"rows", "gauc_users"})
_HEADERS = {
    "rows": "rows",
    "positive_rate": "PosRate",
    "auc": "AUC",
    "gauc": "GAUC",
    "gauc_users": "users",
    "logloss": "LogLoss",
}
_VIEWS: dict[str, tuple[str, ...]] = {
    "auc": ("auc", "gauc", "rows"),
    "logloss": ("logloss", "positive_rate", "rows"),
    "all": METRIC_COLUMNS,
}
_UNDEFINED = "—"

Row = dict[str, Any]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _to_json_value(value: Any) -> Any:
    return None if _is_nan(value) else value


def _from_json_value(column: str, value: Any) -> Any:
    if column in ("domain", "task"):
        return str(value)
    if column in _INT_COLUMNS:
        return int(value)
    return math.nan if value is None else float(value)


def _metrics_row(domain: str, task: str, y: np.ndarray, p: np.ndarray, users: np.ndarray) -> Row:
    """Metrics of one (domain, task) cell. ``y``, ``p``, ``users``: [n] with no missing labels."""
    n = int(y.shape[0])
    g, g_users = gauc(y, p, users)
    return {
        "domain": domain,
        "task": task,
        "rows": n,
        "positive_rate": float(np.mean(y)) if n else math.nan,
        "auc": auc(y, p),
        "gauc": g,
        "gauc_users": g_users,
        "logloss": logloss(y, p),
    }


def _domain_codes(
    domain: np.ndarray, domain_names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Map ``domain`` [N] to dense codes [N] (sorted order of values) and their display names."""
    values, codes = np.unique(domain, return_inverse=True)
    if domain_names is None:
        names = [str(v) for v in values.tolist()]
    else:
        if domain.dtype.kind not in "iu":
            raise ValueError("domain_names can only be given when domain holds integer codes")
        if values.size and (values[0] < 0 or values[-1] >= len(domain_names)):
            raise ValueError(
                f"domain codes must lie in [0, {len(domain_names)}) to match domain_names, "
                f"got range [{values[0]}, {values[-1]}]"
            )
        names = [str(domain_names[int(v)]) for v in values]
    if ALL_DOMAINS in names:
        raise ValueError(f"a domain may not be named {ALL_DOMAINS!r} (reserved for the overall row)")
    if len(set(names)) != len(names):
        raise ValueError(f"domain names are not unique: {names}")
    return codes.reshape(-1), names


def evaluate(
    probs: ArrayLike,
    labels: ArrayLike,
    domain: ArrayLike,
    user: ArrayLike,
    task_names: Sequence[str],
    domain_names: Sequence[str] | None = None,
) -> MetricsReport:
    """Compute AUC, GAUC, log loss and positive rate per task, overall and per domain.

    Args:
        probs: [N, T] predicted probabilities (a [N] array is read as T = 1).
        labels: [N, T] 0/1 labels, ``NaN`` where a task's label is missing; those
            rows are left out of that task only.
        domain: [N] domain of each row (any sortable dtype, e.g. int codes).
        user: [N] user id of each row (groups for GAUC).
        task_names: T task names.
        domain_names: optional names for integer domain codes ``0..D-1``.

    Returns:
        A :class:`MetricsReport` with, for each task, the ``"ALL"`` row followed by
        one row per domain present in ``domain`` (in sorted code order).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"probs and labels must both be [N, T]; got {p.shape} and {y.shape}")
    n, t = p.shape
    if len(task_names) != t:
        raise ValueError(f"got {len(task_names)} task names for {t} tasks")
    d = np.asarray(domain)
    u = np.asarray(user)
    if d.shape != (n,) or u.shape != (n,):
        raise ValueError(f"domain and user must have shape ({n},); got {d.shape} and {u.shape}")

    codes, names = _domain_codes(d, domain_names)
    rows: list[Row] = []
    for k, task in enumerate(task_names):
        keep = ~np.isnan(y[:, k])
        yk, pk, uk, ck = y[keep, k], p[keep, k], u[keep], codes[keep]
        rows.append(_metrics_row(ALL_DOMAINS, str(task), yk, pk, uk))
        # Group rows by domain once, then slice each domain's contiguous block.
        order = np.argsort(ck, kind="stable")
        bounds = np.searchsorted(ck[order], np.arange(len(names) + 1))
        for j, name in enumerate(names):
            idx = order[bounds[j] : bounds[j + 1]]
            rows.append(_metrics_row(name, str(task), yk[idx], pk[idx], uk[idx]))
    return MetricsReport(rows=rows, task_names=[str(x) for x in task_names], domain_names=names)


def _format_value(column: str, value: Any) -> str:
    """Text for one table cell: ints as is, floats with 4 decimals, undefined as "—"."""
    if column in ("domain", "task"):
        return str(value)
    if _is_nan(value) or value is None:
        return _UNDEFINED
    if column in _INT_COLUMNS:
        return str(int(value))
    return f"{float(value):.4f}"


@dataclass
class MetricsReport:
    """Evaluation results: one row (a dict with keys :data:`COLUMNS`) per (domain, task).

    Attributes:
        rows: for each task, the ``"ALL"`` row then one row per domain.
        task_names: tasks in output order.
        domain_names: domains in output order (excluding ``"ALL"``).
    """

    rows: list[Row]
    task_names: list[str]
    domain_names: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ access

    def get(self, task: str, domain: str = ALL_DOMAINS) -> Row:
        """The row for ``(domain, task)``; ``KeyError`` if absent."""
        for row in self.rows:
            if row["task"] == task and row["domain"] == domain:
                return row
        raise KeyError(f"no row for task {task!r}, domain {domain!r}")

    def overall(self) -> list[Row]:
        """The ``"ALL"`` rows, one per task, in task order."""
        return [self.get(task) for task in self.task_names]

    def summary(self) -> dict[str, float]:
        """Mean AUC and mean GAUC over tasks (overall rows), ignoring undefined tasks.

        Returns ``{"mean_auc": float, "mean_gauc": float}``; a mean is ``nan`` when
        no task has that metric defined.
        """
        out: dict[str, float] = {}
        for metric in ("auc", "gauc"):
            values = [r[metric] for r in self.overall() if not _is_nan(r[metric])]
            out[f"mean_{metric}"] = float(np.mean(values)) if values else math.nan
        return out

    # ------------------------------------------------------------- serialise

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``NaN`` -> ``None``).

        Layout: ``{"tasks": [...], "domains": [...], "summary": {...},
        "overall": {task: {metric: value}}, "per_domain": [{"domain", "task", metric...}]}``.
        """
        overall = {
            r["task"]: {c: _to_json_value(r[c]) for c in METRIC_COLUMNS} for r in self.overall()
        }
        per_domain = [
            {c: _to_json_value(r[c]) for c in COLUMNS} for r in self.rows if r["domain"] != ALL_DOMAINS
        ]
        return {
            "tasks": list(self.task_names),
            "domains": list(self.domain_names),
            "summary": {k: _to_json_value(v) for k, v in self.summary().items()},
            "overall": overall,
            "per_domain": per_domain,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricsReport:
        """Inverse of :meth:`to_dict` (``None`` -> ``NaN``)."""
        tasks = [str(t) for t in d["tasks"]]
        domains = [str(x) for x in d.get("domains", [])]
        per_domain: dict[tuple[str, str], Row] = {}
        for raw in d.get("per_domain", []):
            row = {c: _from_json_value(c, raw[c]) for c in COLUMNS}
            per_domain[(row["task"], row["domain"])] = row
        rows: list[Row] = []
        for task in tasks:
            metrics = d["overall"][task]
            rows.append(
                {"domain": ALL_DOMAINS, "task": task}
                | {c: _from_json_value(c, metrics[c]) for c in METRIC_COLUMNS}
            )
            rows.extend(per_domain[(task, dom)] for dom in domains if (task, dom) in per_domain)
        return cls(rows=rows, task_names=tasks, domain_names=domains)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise :meth:`to_dict` as JSON text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> MetricsReport:
        """Read a report written by :meth:`to_json`."""
        return read_json_as(path, "metrics file", cls.from_dict)

    def to_csv(self, path: str | Path) -> None:
        """Write one CSV row per (domain, task), ``"ALL"`` included; columns :data:`COLUMNS`.

        Undefined values are written as empty fields.
        """
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in self.rows:
            writer.writerow({c: "" if _is_nan(row[c]) else row[c] for c in COLUMNS})
        atomic_write(path, buf.getvalue())

    # ------------------------------------------------------------------ text

    def format_table(self, metric: str = "auc") -> str:
        """Plain-text table: domains as rows (``"ALL"`` first), a column group per task.

        Args:
            metric: which columns each task gets: ``"auc"`` -> AUC / GAUC / rows
                (default), ``"logloss"`` -> LogLoss / PosRate / rows, ``"all"`` ->
                every metric, or a single metric name from :data:`METRIC_COLUMNS`.

        Values have 4 decimals; undefined values show as ``"—"``.
        """
        if metric in _VIEWS:
            cols = _VIEWS[metric]
        elif metric in METRIC_COLUMNS:
            cols = (metric,)
        else:
            raise ValueError(f"unknown metric {metric!r}; use one of {sorted({*_VIEWS, *METRIC_COLUMNS})}")

        domains = [ALL_DOMAINS, *self.domain_names]
        lookup = {(r["domain"], r["task"]): r for r in self.rows}
        cells = {
            (dom, task): [
                _format_value(c, lookup[(dom, task)][c]) if (dom, task) in lookup else _UNDEFINED
                for c in cols
            ]
            for dom in domains
            for task in self.task_names
        }
        col_width = {
            c: max([len(_HEADERS[c])] + [len(cells[(dom, t)][i]) for dom in domains for t in self.task_names])
            for i, c in enumerate(cols)
        }
        sep = "  "
        group_width = {
            t: max(len(t), sum(col_width[c] for c in cols) + len(sep) * (len(cols) - 1))
            for t in self.task_names
        }
        # Widen the last column of a group if the task name is longer than its columns.
        def widths(task: str) -> list[int]:
            w = [col_width[c] for c in cols]
            w[-1] += group_width[task] - (sum(w) + len(sep) * (len(w) - 1))
            return w

        dom_width = max(len("domain"), *(len(x) for x in domains))
        gap = " | "
        line1 = " " * dom_width + gap + gap.join(t.center(group_width[t]) for t in self.task_names)
        line2 = "domain".ljust(dom_width) + gap + gap.join(
            sep.join(_HEADERS[c].rjust(w) for c, w in zip(cols, widths(t), strict=True)) for t in self.task_names
        )
        rule = "-" * dom_width + "-+-" + "-+-".join("-" * group_width[t] for t in self.task_names)
        body = [
            dom.ljust(dom_width)
            + gap
            + gap.join(
                sep.join(v.rjust(w) for v, w in zip(cells[(dom, t)], widths(t), strict=True)) for t in self.task_names
            )
            for dom in domains
        ]
        return "\n".join([line1.rstrip(), line2, rule, *body])

    def format_overall(self) -> str:
        """One line per task: AUC, GAUC (users), log loss, positive rate and rows of the ``"ALL"`` row."""
        formatted = [{c: _format_value(c, r[c]) for c in COLUMNS[1:]} for r in self.overall()]
        width = {c: max([1] + [len(f[c]) for f in formatted]) for c in COLUMNS[1:]}
        return "\n".join(
            f"{f['task']:<{width['task']}}  AUC {f['auc']:>6}  GAUC {f['gauc']:>6}"
            f" ({f['gauc_users']:>{width['gauc_users']}} users)  logloss {f['logloss']:>6}"
            f"  pos rate {f['positive_rate']:>6}  rows {f['rows']:>{width['rows']}}"
            for f in formatted
        )

    def __str__(self) -> str:
        return self.format_table()
