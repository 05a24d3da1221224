"""The comparison as readable files: Markdown tables (best of each column in bold, differences from the reference
with their bootstrap intervals: :mod:`pepnet.compare.stats`),
CSV (every cell with its values) and a PNG bar chart."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import ALL_DOMAINS
from .gbdt import NAME as GBDT
from .results import MEAN, METRICS


def nan_to_none(x: Any) -> Any:
    """``x`` with every NaN float (in nested dicts and lists) replaced by None: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    return x


def _fmt(cell: dict[str, Any] | None) -> str:
    if not cell or math.isnan(cell["mean"]):
        return "—"
    if cell.get("n", 2) == 1:  # one seed: no spread to show
        return f"{cell['mean']:.4f}"
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def _best(labels: list[str], agg: dict[str, dict], key: tuple[str, str, str]) -> set[str]:
    """The models with the highest mean of ``key`` (all of them on a tie); none when every model has the same
    mean, e.g. a domain where no model's AUC is defined."""
    means = {m: agg[m][key]["mean"] for m in labels if key in agg[m] and not math.isnan(agg[m][key]["mean"])}
    if len(set(means.values())) < 2:
        return set()
    top = max(means.values())
    return {m for m, v in means.items() if v == top}


def _cell(agg: dict[str, dict], model: str, key: tuple[str, str, str], best: set[str]) -> str:
    text = _fmt(agg[model].get(key))
    return f"**{text}**" if model in best else text


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_difference(cell: dict[str, Any] | None) -> str:
    """``+0.0123 [-0.0040, +0.0290]``; ``—`` when undefined."""
    if not cell or cell.get("value") is None:
        return "—"
    if cell.get("low") is None:
        return f"{cell['value']:+.4f}"
    return f"{cell['value']:+.4f} [{cell['low']:+.4f}, {cell['high']:+.4f}]"


def paired_table(result: dict[str, Any], metric: str = "auc") -> str | None:
    """Markdown: every other model's difference from the reference in the overall test ``metric`` of each task,
    with its 95% bootstrap interval and the seeds that agree. None without paired statistics or with one model."""
    paired = result.get("paired")
    if not paired or not paired["models"]:
        return None
    ref, once = paired["reference"], paired["reference_fitted_once"]
    seeds_col = not once and result["n_seeds"] > 1
    rows = []
    for m, cells in paired["models"].items():
        row = [m]
        for task in result["tasks"]:
            cell = cells.get(f"{ALL_DOMAINS}|{task}|{metric}")
            row.append(format_difference(cell))
            if seeds_col:
                row.append(f"{cell['agreeing']} / {cell['seeds']}" if cell and cell["seeds"] else "—")
        rows.append(row)
    m_up = metric.upper()
    header = ["model"] + [h for t in result["tasks"]
                          for h in ([f"{t} {m_up} - {ref} [95% CI]"] + ([f"{t} seeds agreeing"] if seeds_col else []))]
    how = (f"{ref} is fitted once (deterministic), so each seed is paired with that one fit; seeds are not counted "
           "against a constant" if once else "paired by seed; seeds agreeing: the seeds whose own difference has the "
           "sign of the mean")
    return (f"Difference from {ref} (overall test {m_up}, mean over seeds) with its 95% interval from a user-level "
            f"bootstrap of the test split ({paired['n_boot']} resamples; {how}). An interval that holds 0 is no "
            "evidence of a difference.\n\n" + _md_table(header, rows))


def format_tables(result: dict[str, Any], per_domain: bool = True) -> str:
    """Markdown: the overall table (models x task x AUC/GAUC and their mean over tasks), then per task and
    metric a domains x models table. Cells are mean ± std over seeds; the best mean of each column is bold
    (every tied best; nothing when all models tie)."""
    labels = list(result["models"])
    agg = {m: {tuple(k.split("|")): v for k, v in result["models"][m]["aggregate"].items()} for m in labels}
    tasks = [*result["tasks"], MEAN]
    keys = [(ALL_DOMAINS, t, m) for t in tasks for m in METRICS]
    best = {k: _best(labels, agg, k) for k in keys}
    header = ["model"] + [f"{t} {m.upper()}" for t in tasks for m in METRICS]
    rows = [[m] + [_cell(agg, m, k, best[k]) for k in keys] for m in labels]
    parts = [f"Test split, mean ± std over {result['n_seeds']} seed(s); best of each column in bold.\n",
             _md_table(header, rows)]
    parts += [f"\nwarning: {w}" for w in result.get("warnings", [])]
    paired = paired_table(result)
    if paired:
        parts += ["", paired]
    if per_domain:
        for task in result["tasks"]:
            for metric in METRICS:
                dom_rows = []
                for d in [ALL_DOMAINS, *result["domains"]]:
                    k = (d, task, metric)
                    b = _best(labels, agg, k)
                    dom_rows.append([d] + [_cell(agg, m, k, b) for m in labels])
                parts += [f"\n{task} {metric.upper()} per domain:\n", _md_table(["domain", *labels], dom_rows)]
    return "\n".join(parts) + "\n"


def write_csv(result: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "domain", "task", "metric", "mean", "std", "n_seeds", "values"])
        for label, entry in result["models"].items():
            for key, cell in entry["aggregate"].items():
                d, t, m = key.split("|")
                w.writerow([label, d, t, m, "" if math.isnan(cell["mean"]) else f"{cell['mean']:.6f}",
                            "" if math.isnan(cell["std"]) else f"{cell['std']:.6f}", cell["n"],
                            ";".join("" if math.isnan(v) else f"{v:.6f}" for v in cell["values"])])


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per task x metric (overall test value), a bar per model with the std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotfonts import use_fonts

    use_fonts()

    labels = list(result["models"])
    tasks = list(result["tasks"])
    fig, axes = plt.subplots(len(METRICS), len(tasks), figsize=(max(6.0, 0.9 * len(labels)) * len(tasks), 3.6 * len(METRICS)),
                             squeeze=False)
    for i, metric in enumerate(METRICS):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            key = f"{ALL_DOMAINS}|{task}|{metric}"
            means = np.array([result["models"][m]["aggregate"].get(key, {}).get("mean", math.nan) for m in labels], float)
            stds = np.array([result["models"][m]["aggregate"].get(key, {}).get("std", 0.0) for m in labels], float)
            colors = ["tab:red" if m.startswith("pepnet") else "tab:gray" if m == GBDT else "tab:blue" for m in labels]
            ax.bar(range(len(labels)), np.nan_to_num(means), yerr=np.nan_to_num(stds), color=colors, capsize=3)
            finite = means[np.isfinite(means)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                pad = max(0.01, (hi - lo) * 0.3)
                ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{task}: test {metric.upper()}")
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result['config_name']}: mean ± std over {result['n_seeds']} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["format_difference", "format_tables", "nan_to_none", "paired_table", "plot", "write_csv"]
