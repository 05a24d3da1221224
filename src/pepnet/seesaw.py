"""``pepnet seesaw``: does training all domains (all tasks) together help or hurt each domain (each task)?

The **domain seesaw**, for every domain d: (a) ``alone``, the shared model trained on domain d's rows only;
(b) ``joint``, the same model trained on every row; (c) ``pepnet`` trained on every row. The shared model is
Shared-Bottom made **domain-blind**: the features that are constant within a domain (the domain column itself
and the statistics keyed by the domain alone) are left out of its inputs, so that (a) and (b) read the same
information and differ only in the rows they learn from.

The **task seesaw**, for every task t: ``single:t``, the domain-blind shared model trained on task t alone (every
other task's loss weight set to 0), against ``joint`` (all tasks) and ``pepnet``.

Every model is trained with the same seeds (train.seed, train.seed + 1, ...) on one data preparation, and every
comparison is a **paired difference** per seed on the same test rows: joint - alone, pepnet - alone,
joint - single, pepnet - single, for AUC and GAUC, in every domain x task cell. A difference is **beyond seed
noise** when every seed has its sign and ``|mean| > 2 * std / sqrt(seeds)`` (so never with one seed).

A cell whose test rows hold fewer than ``min_class`` positive or negative labels cannot support a verdict: its
AUC moves by several hundredths with the sample alone (Hanley-McNeil standard error about 0.03 for an AUC of 0.7
at 100 labels of the rarer class), more than the differences being judged. Such cells are reported and marked
``small``, not judged; a domain with no judgeable cell gets no ``alone`` model at all.

On the built-in synthetic data set the oracle (the true probabilities) is scored too. ``compare`` result folders
of ``pepnet compare`` on the same config and seeds add their models to a benchmark table: each model's AUC / GAUC
per domain x task, and the fraction of the gap between the domain-blind shared model and the oracle it closes.

Output: ``results.json`` (every run's report, every paired difference, the verdicts), ``results.md`` (tables
and verdict lines), ``results.png`` (the paired differences as a heat map), ``runs/<arm>/seed<k>/``.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .compare.progress import Progress, duration
from .compare.render import _md_table, nan_to_none
from .compare.results import MEAN, METRICS, aggregate
from .config import ExperimentConfig, as_config, parse_config
from .fileio import atomic_write, write_figure
from .metrics import ALL_DOMAINS

MIN_CLASS = 100
"""Default fewest positive and negative test labels of a domain x task cell for a verdict."""

JOINT, PEPNET, ALONE = "joint", "pepnet", "alone"
SINGLE = "single:"  # + task name
COMPARISONS = (("joint - alone", JOINT, ALONE), ("pepnet - alone", PEPNET, ALONE),
               ("joint - single", JOINT, SINGLE), ("pepnet - single", PEPNET, SINGLE))
"""(name, arm, reference arm) of every paired difference; ``single`` means the cell's task's single-task arm."""
REPORT = "report.json"  # each run's test report, in runs/<arm>/seed<k>/ (read back by --resume)


# --------------------------------------------------------------------------- the models compared


def domain_features(config: ExperimentConfig) -> set[str]:
    """Features constant within a domain: the domain column's own features and statistics keyed by it alone."""
    schema = config.schema_
    names = {f.name for f in schema.features if f.source == schema.domain}
    return names | {s.name for s in schema.stats if s.keys == [schema.domain]}


def domain_blind(config: ExperimentConfig) -> ExperimentConfig:
    """The config of the domain-blind shared model: Shared-Bottom (default options) whose groups leave out
    :func:`domain_features` (``domain_side``, which Shared-Bottom reads as just more inputs, keeps one general
    feature so that the group is not empty)."""
    tree = config.to_dict()
    drop = domain_features(config)
    groups = {g: [n for n in members if n not in drop] for g, members in tree["schema"]["groups"].items()}
    groups["domain_side"] = groups["domain_side"] or groups["general"][:1]
    tree["schema"]["groups"] = groups
    tree["model"] = {**tree["model"], "name": "shared_bottom", "options": {}}
    return parse_config(tree, f"{config.name} (domain-blind shared-bottom)")


def single_task(config: ExperimentConfig, task: str) -> ExperimentConfig:
    """``config`` trained on ``task`` alone: every other label (auxiliary ones too) becomes auxiliary with loss
    weight 0, so it is neither trained on nor reported (statistics of its labels stay available)."""
    tree = config.to_dict()
    tree["schema"]["labels"] = {t: spec if t == task else {**spec, "auxiliary": True, "weight": 0.0}
                                for t, spec in tree["schema"]["labels"].items()}
    return parse_config(tree, f"{config.name} ({task} alone)")


def with_model(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """``config`` with model ``name``."""
    tree = config.to_dict()
    tree["model"] = {**tree["model"], "name": name}
    return parse_config(tree, f"{config.name} {name}")


# --------------------------------------------------------------------------- the table's arithmetic


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Paired difference ``a - b`` over seeds (NaN pairs left out): mean, std (ddof 1; 0 with one seed), n, how
    many seeds have the mean's sign (``agree``), and whether it is beyond seed noise (``clear``: every seed
    agrees and ``|mean| > 2 std / sqrt(n)``, n >= 2)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    n = int(d.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "agree": 0, "clear": False, "values": []}
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    agree = int((np.sign(d) == np.sign(mean)).sum()) if mean != 0 else 0
    clear = n >= 2 and agree == n and abs(mean) > 2.0 * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "agree": agree, "clear": bool(clear), "values": d.tolist()}


def label_counts(labels: np.ndarray, domain: np.ndarray, domain_names: list[str],
                 tasks: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """(domain, task) -> (positive, negative) labels, ALL included. labels float [N, T] (NaN: missing), domain
    int [N] codes into ``domain_names``, tasks: the T column names."""
    out = {}
    for j, task in enumerate(tasks):
        masks = [(ALL_DOMAINS, np.ones(len(domain), bool))] + [(d, domain == k) for k, d in enumerate(domain_names)]
        for name, rows in masks:
            y = labels[rows, j]
            y = y[~np.isnan(y)]
            out[(name, task)] = (int(y.sum()), int(y.size - y.sum()))
    return out


def values(runs: list[dict[str, Any]], domain: str, task: str, metric: str) -> list[float]:
    """One value per seed of ``(domain, task, metric)`` from a list of runs (``{"report": ...}``)."""
    cell = aggregate(runs).get((domain, task, metric))
    return [math.nan] * len(runs) if cell is None else list(cell["values"])


def seesaw_table(arms: dict[str, Any], tasks: list[str], domains: list[str],
                 counts: dict[tuple[str, str], tuple[int, int]], min_class: int) -> list[dict[str, Any]]:
    """One entry per domain x task (the ALL row first): its test label counts, ``small``, and every paired
    difference of :data:`COMPARISONS` for every metric. ``arms``: arm -> list of runs, except ``alone``:
    domain -> list of runs (a domain without an alone model has no alone comparisons)."""
    cells = []
    for domain in [ALL_DOMAINS, *domains]:
        for task in tasks:
            pos, neg = counts.get((domain, task), (0, 0))
            entry: dict[str, Any] = {"domain": domain, "task": task, "positives": pos, "negatives": neg,
                                     "small": min(pos, neg) < min_class, "diff": {}}
            for name, arm, ref in COMPARISONS:
                ref_runs = arms[ALONE].get(domain) if ref == ALONE else arms.get(SINGLE + task)
                if not ref_runs:
                    continue
                entry["diff"][name] = {m: paired(values(arms[arm], domain, task, m), values(ref_runs, domain, task, m))
                                       for m in METRICS}
            cells.append(entry)
    return cells


def _phrase(d: dict[str, Any], metric: str) -> str:
    return f"{metric.upper()} {d['mean']:+.4f} ± {d['std']:.4f}, {d['agree']}/{d['n']} seeds"


def verdict(cell: dict[str, Any], metric: str = "gauc", min_class: int = MIN_CLASS) -> str:
    """One line on a cell: is there a domain seesaw (joint - alone) and does PEPNet fix it (PEPNet at or above
    alone, i.e. not below it beyond seed noise); the task seesaw (joint - single) and PEPNet against single-task."""
    where = f"{cell['domain']} / {cell['task']}"
    if cell["small"]:
        return (f"{where}: not judged (test rows hold {cell['positives']} positive and {cell['negatives']} negative "
                f"labels; a verdict needs {min_class} of each)")
    parts = []
    for name, label, worse in (("joint - alone", "joint training of the domains", "pepnet - alone"),
                               ("joint - single", "training the tasks together", "pepnet - single")):
        d = cell["diff"].get(name, {}).get(metric)
        if not d or d["n"] == 0:
            continue
        if not d["clear"]:
            text = f"{label}: no difference beyond seed noise ({_phrase(d, metric)})"
        else:
            text = f"{label} {'hurts' if d['mean'] < 0 else 'helps'} ({_phrase(d, metric)})"
        p = cell["diff"][worse][metric]
        fixed = not (p["clear"] and p["mean"] < 0)
        ref = "alone" if name == "joint - alone" else "single-task"
        text += f"; PEPNet {'not below' if fixed else 'below'} {ref} beyond seed noise ({_phrase(p, metric)})"
        parts.append(text)
    return f"{where}: " + ("; ".join(parts) if parts else "no comparison")


# --------------------------------------------------------------------------- running


@dataclass
class Arm:
    """One model to train for every seed: its label, config, and (for ``alone``) the domain whose rows it uses."""

    label: str
    config: ExperimentConfig
    domain: str | None = None


def _domain_prep(config: ExperimentConfig, prep: Any, domain: str) -> Any:
    """The prepared splits restricted to the rows of ``domain`` (raw value as text), with their own encoder."""
    import polars as pl

    from .data.sources import Frame
    from .prepare import encode_splits

    col = config.schema_.domain
    frames = {k: Frame(f.df.filter(pl.col(col).cast(pl.Utf8) == domain), f.files) for k, f in prep.frames.items()}
    return encode_splits(config, frames)


def oracle_report(config: ExperimentConfig, prep: Any) -> dict[str, Any] | None:
    """The test report of the true probabilities on the built-in synthetic data set (None for other data)."""
    if config.data.dataset != "synthetic" or config.data.files:
        return None
    import polars as pl

    from .data.sources import synthetic_spec
    from .datasets.synthetic import oracle_probabilities
    from .metrics import evaluate

    spec = synthetic_spec(config.data.synthetic)
    df = prep.frames["test"].df
    schema, tasks = config.schema_, config.schema_.reported_tasks()
    probs = oracle_probabilities(spec, df)[:, [list(spec.tasks).index(schema.labels[t].column) for t in tasks]]
    labels = np.stack([df[schema.labels[t].column].cast(pl.Float64).to_numpy() for t in tasks], axis=1)
    return evaluate(probs, labels, df[schema.domain].cast(str).to_numpy(), df[schema.user].to_numpy(), tasks).to_dict()


def _train(arm: Arm, prep: Any, seed: int, out: Path, resume: bool, progress: Progress) -> dict[str, Any]:
    from .run import train_model

    run_dir = out / "runs" / arm.label.replace(":", "_") / f"seed{seed}"
    done = run_dir / REPORT
    if resume and done.is_file():
        progress.message(f"{arm.label} seed {seed}: read back from {done}")
        return json.loads(done.read_text())
    start = time.time()
    tree = arm.config.to_dict()
    tree["train"] = {**tree["train"], "seed": seed}
    trained = train_model(parse_config(tree, f"{arm.label} seed {seed}"), prep, run_dir, log=progress.message,
                          callbacks=[progress])
    run = {"seed": seed, "best_epoch": trained.state.best_epoch, "seconds": round(time.time() - start, 1),
           "report": trained.report.to_dict()}
    atomic_write(done, json.dumps(nan_to_none(run), allow_nan=False))
    return run


def seesaw(config: ExperimentConfig | str | Path, out: str | Path, seeds: int = 3, overrides: list[str] | None = None,
           compare_dirs: Sequence[str | Path] | None = None, min_class: int = MIN_CLASS, resume: bool = False,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the diagnostic (module docstring) and write results.json / .md / .png to ``out``; returns the results
    dict. ``compare_dirs``: folders of ``pepnet compare`` runs on the same data and seeds, whose models join the
    benchmark table. ``resume``: reuse the runs already in ``out`` (else ``out`` must be empty or new)."""
    from .prepare import encode_splits, prepare

    config = as_config(config, overrides)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"--out {out} is not empty; give a new folder, or --resume to reuse its runs")
    out.mkdir(parents=True, exist_ok=True)
    seed_list = [config.train.seed + k for k in range(seeds)]
    others = [_load_compare(Path(d), config, seed_list) for d in compare_dirs or []]
    t0 = time.time()
    prep = prepare(config, log=log)
    blind = domain_blind(config)
    tasks, domains = config.schema_.reported_tasks(), prep.encoded["test"].domain_names
    test = prep.encoded["test"]
    counts = label_counts(test.labels[:, prep.encoder.reported_columns], test.domain, domains, tasks)
    judged = [d for d in domains if any(min(counts[(d, t)]) >= min_class for t in tasks)]
    log(f"data prepared in {time.time() - t0:.1f}s; tasks {', '.join(tasks)}; {len(judged)} of {len(domains)} "
        f"domain(s) have a cell with >= {min_class} positive and negative test labels and get an alone model")
    arms = [Arm(JOINT, blind), Arm(PEPNET, with_model(config, "pepnet"))]
    arms += [Arm(SINGLE + t, single_task(blind, t)) for t in tasks]
    arms += [Arm(f"{ALONE}:{d}", blind, d) for d in judged]
    progress = Progress([False] * (len(arms) * seeds), blind.train.epochs * (2 if blind.train.refit else 1), log)
    results: dict[str, Any] = {ALONE: {}}
    for arm in arms:
        if arm.domain is not None:
            arm_prep = _domain_prep(blind, prep, arm.domain)
        else:
            arm_prep = prep if arm.label == PEPNET else encode_splits(arm.config, prep.frames)
        runs = []
        for seed in seed_list:
            progress.begin(arm.label, seed)
            runs.append(_train(arm, arm_prep, seed, out, resume, progress))
            progress.end()
        if arm.domain is not None:
            results[ALONE][arm.domain] = runs
        else:
            results[arm.label] = runs

    result: dict[str, Any] = {
        "config_name": config.name, "config": config.to_dict(), "seeds": seed_list, "n_seeds": seeds,
        "min_class": min_class, "tasks": tasks, "domains": domains, "runs": results,
        "cells": seesaw_table(results, tasks, domains, counts, min_class),
        "oracle": oracle_report(config, prep),
    }
    result["verdicts"] = [verdict(c, "gauc", min_class) for c in result["cells"]]
    result["benchmark"] = benchmark(result, others) if result["oracle"] or others else None
    result["seconds"] = round(time.time() - t0, 1)  # this invocation (a resumed one reads runs back)
    every = [r for arm, runs in results.items() if arm != ALONE for r in runs]
    every += [r for runs in results[ALONE].values() for r in runs]
    result["train_seconds"] = round(sum(r["seconds"] for r in every), 1)
    atomic_write(out / "results.json", json.dumps(nan_to_none(result), indent=1, allow_nan=False))
    atomic_write(out / "results.md", format_seesaw(result))
    plot_seesaw(result, out / "results.png")
    log(f"written: {out / 'results.json'}, results.md, results.png ({duration(result['seconds'])} in all)")
    return result


# --------------------------------------------------------------------------- benchmark table (models vs oracle)


def _load_compare(path: Path, config: ExperimentConfig, seeds: list[int]) -> dict[str, Any]:
    """A ``pepnet compare`` results.json whose data section and seeds match this diagnostic's; models fitted once
    (deterministic, not paired by seed: the GBDT) are left out and named in ``fitted_once``."""
    file = path / "results.json"
    if not file.is_file():
        raise FileNotFoundError(f"--compare {path}: no results.json (not a `pepnet compare` folder)")
    res = json.loads(file.read_text())
    if res["config"]["data"] != config.to_dict()["data"]:
        raise ValueError(f"--compare {path}: its data section differs from the config's; the rows would not pair")
    # a deterministic model fitted once (compare's GBDT) has no seed to pair with: it is left out of the tables
    once = [label for label, entry in res["models"].items() if all(r.get("fitted_once") for r in entry["runs"])]
    res["models"] = {label: entry for label, entry in res["models"].items() if label not in once}
    res["fitted_once"] = once
    for label, entry in res["models"].items():
        got = [r["seed"] for r in entry["runs"]]
        if got != seeds:
            raise ValueError(f"--compare {path}: model {label} ran seeds {got}, this diagnostic runs {seeds}")
    res["folder"] = path.name
    return res


def benchmark(result: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """Every model's AUC / GAUC per domain x task (mean, std over seeds), the oracle's, per model the fraction
    of the gap between the domain-blind shared model (``joint``) and the oracle it closes on the mean over tasks
    of the overall AUC and GAUC (per seed, then mean and std), and each model's mean over the judged (not small)
    domain x task cells per seed (``cell_mean``), paired against PEPNet's (``vs_pepnet``)."""
    models: dict[str, list[dict[str, Any]]] = {JOINT: result["runs"][JOINT], PEPNET: result["runs"][PEPNET]}
    for res in others:
        for label, entry in res["models"].items():
            name = label if label not in models else f"{label} [{res['folder']}]"
            models[name] = entry["runs"]
    oracle = result["oracle"]
    oracle_cells = aggregate([{"report": oracle}]) if oracle else {}
    table = {m: {"|".join(k): {"mean": v["mean"], "std": v["std"]} for k, v in aggregate(runs).items()}
             for m, runs in models.items()}
    gap: dict[str, dict[str, Any]] = {}
    if oracle:
        for m, runs in models.items():
            gap[m] = {}
            for metric in METRICS:
                top = oracle_cells[(ALL_DOMAINS, MEAN, metric)]["mean"]
                base = np.asarray(values(models[JOINT], ALL_DOMAINS, MEAN, metric))
                got = np.asarray(values(runs, ALL_DOMAINS, MEAN, metric))
                closed = (got - base) / (top - base)
                gap[m][metric] = paired(closed.tolist(), [0.0] * len(closed))
    judged = [(c["domain"], c["task"]) for c in result["cells"] if c["domain"] != ALL_DOMAINS and not c["small"]]
    cell_mean = {m: {metric: np.nanmean([values(runs, d, t, metric) for d, t in judged], axis=0).tolist()
                     for metric in METRICS} for m, runs in models.items()} if judged else {}
    vs_pepnet = {m: {metric: paired(v[metric], cell_mean[PEPNET][metric]) for metric in METRICS}
                 for m, v in cell_mean.items()}
    return {"models": table, "oracle": {"|".join(k): v["mean"] for k, v in oracle_cells.items()}, "gap_closed": gap,
            "judged_cells": ["|".join(k) for k in judged], "cell_mean": cell_mean, "vs_pepnet": vs_pepnet}


# --------------------------------------------------------------------------- outputs


def _diff_text(d: dict[str, Any] | None, small: bool) -> str:
    if not d or d["n"] == 0:
        return "—"
    return f"{d['mean']:+.4f} ± {d['std']:.4f} ({d['agree']}/{d['n']}){' *' if d['clear'] and not small else ''}"


def format_seesaw(result: dict[str, Any]) -> str:
    """Markdown: per metric a domain x task table of the paired differences, the verdict lines, and (synthetic
    data or compare folders) the benchmark tables."""
    legend = (f"Paired differences on the test split over {result['n_seeds']} seed(s) {result['seeds']}: mean ± std "
              "(seeds with the mean's sign / seeds); * = beyond seed noise (every seed agrees and |mean| > 2 std / "
              f"sqrt(seeds)); *small*: fewer than {result['min_class']} positive or negative test labels, "
              "not judged.\n")
    parts = [f"# Seesaw diagnostic: {result['config_name']}\n", legend]
    for metric in METRICS:
        header = ["domain", "task", "pos / neg"] + [name for name, _, _ in COMPARISONS]
        rows = [
            [c["domain"], c["task"], f"{c['positives']} / {c['negatives']}" + (" *small*" if c["small"] else "")]
            + [_diff_text(c["diff"].get(name, {}).get(metric), c["small"]) for name, _, _ in COMPARISONS]
            for c in result["cells"]
        ]
        parts += [f"\n## {metric.upper()}\n", _md_table(header, rows)]
    parts += ["\n## Verdicts (GAUC)\n", *[f"- {v}" for v in result["verdicts"]]]
    bench = result.get("benchmark")
    if bench:
        parts.append(format_benchmark(result, bench))
    return "\n".join(parts) + "\n"


def format_benchmark(result: dict[str, Any], bench: dict[str, Any]) -> str:
    """Markdown: per metric a models x (domain, task) table with the oracle's row, and the gap closed."""
    keys = [(d, t) for d in [ALL_DOMAINS, *result["domains"]] for t in result["tasks"]]
    parts = []
    for metric in METRICS:
        header = ["model"] + [f"{d} {t}" for d, t in keys]
        rows = [
            [m] + [_mean_std(cells.get(f"{d}|{t}|{metric}")) for d, t in keys] for m, cells in bench["models"].items()
        ]
        if bench["oracle"]:
            rows.append(["oracle"] + [f"{bench['oracle'].get(f'{d}|{t}|{metric}', math.nan):.4f}" for d, t in keys])
        parts += [
            f"\n## Benchmark: test {metric.upper()} per domain x task (mean ± std over seeds)\n",
            _md_table(header, rows),
        ]
    if bench["gap_closed"]:
        header = ["model"] + [f"gap closed, mean {m.upper()}" for m in METRICS]
        rows = [
            [m] + [f"{g[k]['mean']:+.3f} ± {g[k]['std']:.3f}" for k in METRICS] for m, g in bench["gap_closed"].items()
        ]
        title = "Fraction of the gap closed between the domain-blind shared model (joint, 0) and the oracle (1)"
        parts += [f"\n## {title}\n", _md_table(header, rows)]
    if bench.get("vs_pepnet"):
        header = ["model"] + [f"mean cell {m.upper()}" for m in METRICS] + [f"{m.upper()} - pepnet" for m in METRICS]
        rows = [
            [m]
            + [_mean_std(paired(bench["cell_mean"][m][k], [0.0] * len(bench["cell_mean"][m][k]))) for k in METRICS]
            + [_diff_text(d[k], False) for k in METRICS]
            for m, d in bench["vs_pepnet"].items()
        ]
        title = (
            f"Mean over the judged domain x task cells ({', '.join(bench['judged_cells'])}), paired by seed "
            "against PEPNet (* beyond seed noise)"
        )
        parts += [f"\n## {title}\n", _md_table(header, rows)]
    return "\n".join(parts)


def _mean_std(cell: dict[str, Any] | None) -> str:
    if not cell or cell["mean"] is None or math.isnan(cell["mean"]):
        return "—"
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def plot_seesaw(result: dict[str, Any], path: Path) -> None:
    """Heat map per metric: rows domain x task, columns the comparisons; colour = mean difference, text = mean
    and seeds agreeing; small cells greyed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, names = result["cells"], [name for name, _, _ in COMPARISONS]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 + 2.2 * len(names), 1.2 + 0.38 * len(cells)), squeeze=False)
    for ax, metric in zip(axes[0], METRICS, strict=True):
        grid = np.array([[c["diff"].get(n, {}).get(metric, {}).get("mean", math.nan) for n in names] for c in cells])
        lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for i, c in enumerate(cells):
            for j, n in enumerate(names):
                d = c["diff"].get(n, {}).get(metric)
                if d and d["n"]:
                    star = "*" if d["clear"] and not c["small"] else ""
                    ax.text(
                        j,
                        i,
                        f"{d['mean']:+.3f}{star}\n{d['agree']}/{d['n']}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="0.5" if c["small"] else "black",
                    )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels(
            [f"{c['domain']} / {c['task']}" + (" (small)" if c["small"] else "") for c in cells], fontsize=7
        )
        ax.set_title(f"test {metric.upper()}: paired difference")
    fig.suptitle(f"{result['config_name']}: seesaw over {result['n_seeds']} seed(s); * beyond seed noise; grey: small")
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
    plt.close(fig)


__all__ = [
    "COMPARISONS",
    "MIN_CLASS",
    "benchmark",
    "domain_blind",
    "format_seesaw",
    "paired",
    "seesaw",
    "seesaw_table",
    "single_task",
    "verdict",
]
