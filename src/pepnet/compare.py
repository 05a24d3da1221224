"""``pepnet compare``: baselines and PEPNet ablations side by side, several seeds each, one data preparation.

The data are loaded, validated, split and encoded ONCE (:func:`pepnet.run.prepare`); every model and seed
trains on those arrays with the same trainer, loss and metrics (:func:`pepnet.run.train_model`): the epoch is
chosen on the validation split and the test split is scored once, with the chosen weights (with ``train.refit``:
with a model retrained on training + validation rows for the chosen epochs; the refit data are encoded once
too). A gradient-boosted tree (``gbdt``) on the encoder's statistics of the past is the non-neural reference
(with ``train.refit``, its rounds are chosen on validation and it is retrained the same way).

Output directory: ``results.json`` (every run's full report and the aggregates), ``results.csv`` (mean, std
and values of every metric per model x domain x task), ``results.md`` (readable tables, best of each column
in bold), ``results.png`` (AUC / GAUC per task with one bar per model), ``runs/<model>/seed<k>/`` (run files).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import GBDT_GRID, ExperimentConfig, GBDTConfig, load_config, parse_config
from .fileio import atomic_write
from .metrics import ALL_DOMAINS, MetricsReport, evaluate
from .compare_stats import add_statistics, paired_table
from .data.errors import DataWarning
from .run import Prepared, complete_run_dir, prepare, run_info, train_model

GBDT = "gbdt"
MODELS = ("shared_bottom", "mmoe", "ple", "star", "epnet_only", "ppnet_only", "pepnet", GBDT)
"""Default models of a comparison, in table order."""

ABLATIONS: dict[str, dict[str, Any]] = {
    # name -> model-config overrides of PEPNet; each flips one choice away from the paper's default
    "stop_gradient=false": {"stop_gradient": False},            # paper: True (no gate gradient into E)
    "gamma=1": {"gamma": 1.0},                                  # paper: 2 (delta in [0, 2])
    "gate_hidden=16": {"gate_hidden": 16},                      # pepnet default 64 (the paper gives none)
    "epnet_granularity=field": {"epnet_granularity": "field"},  # paper: one gate per embedding element
    "ppnet_gate_on=output": {"ppnet_gate_on": "output"},        # paper: gate scales each layer's input
    "ppnet_gate_mode=per_task": {"ppnet_gate_mode": "per_task"},  # paper: one gate split into T slices
    "domain_stats=false": {"domain_stats": False},              # paper: F_d = domain id + domain statistics
    "ppnet_priors=user": {"ppnet_priors": ["user_prior"]},      # paper: user, item and author priors
    "ppnet_priors=item": {"ppnet_priors": ["item_prior"]},
}
"""The ``--ablations`` grid (PEPNet with one flag changed each); ``pepnet`` itself is the reference row."""

METRICS = ("auc", "gauc")
MEAN = "mean"  # the task name of the average over tasks


@dataclass
class Entry:
    """One row of the comparison: a label, the model name and model-config overrides."""

    label: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


def entries(models: list[str], ablations: bool) -> list[Entry]:
    """The comparison rows: the models asked for, then (``ablations``) PEPNet with each ablation flag."""
    from .nn import MODELS as REGISTRY

    out = []
    for m in models:
        if m != GBDT and m not in REGISTRY:
            raise ValueError(f"--models: unknown model {m!r}; available: {sorted([*REGISTRY, GBDT])}")
        out.append(Entry(m, m))
    if ablations:
        if "pepnet" not in models:
            out.append(Entry("pepnet", "pepnet"))
        out += [Entry(f"pepnet[{name}]", "pepnet", ov) for name, ov in ABLATIONS.items()]
    return out


# --------------------------------------------------------------------------- gradient-boosted trees


def fit_gbdt(prep: Prepared, seed: int, params: GBDTConfig, log: Callable[[str], None] = print,
             refit_config: ExperimentConfig | None = None) -> tuple[MetricsReport, dict[str, Any], np.ndarray]:
    """One sklearn HistGradientBoostingClassifier per task on the encoder's raw statistics of the past
    (:meth:`Encoder.stat_values`: training rows see earlier rows only, evaluation rows the training split, and
    the test rows with ``split.test_stats: train+valid`` the validation split too).

    ``params`` (the config's ``gbdt`` section) gives the trees. The number of boosting rounds of each task, up to
    ``params.max_iter``, is chosen by validation AUC (staged predictions); the test
    split is predicted once, by the trees up to that round. With ``refit_config`` (``train.refit``), trees with
    that many rounds are trained afresh on training + validation rows (:meth:`Prepared.for_refit`) and predict
    the test split instead. With ``params.tune`` (``gbdt: auto``), each task's trees are those of the
    :func:`gbdt_candidates` setting with the best validation AUC. Returns (test report, {task: best rounds, or
    with ``tune`` {"rounds", "setting"}}, test predictions [N_test, T_reported]).

    The trees are deterministic (no subsampling, no early-stopping split), so ``pepnet compare`` fits them once.
    """
    from sklearn.metrics import roc_auc_score

    enc = prep.encoder
    if not enc.schema.stats:
        raise ValueError("model 'gbdt' needs statistics features (schema.stats); the config declares none")
    refit = refit_config is not None
    x = {k: prep.stat_matrix(k) for k in (("train", "valid") if refit else ("train", "valid", "test"))}
    final = prep.for_refit(refit_config) if refit else prep
    x_final = {k: final.stat_matrix(k) for k in ("train", "test")} if refit else x
    test = final.encoded["test"]
    probs = np.full((test.labels.shape[0], len(enc.reported_tasks)), np.nan, dtype=np.float64)
    rounds: dict[str, int] = {}
    cols = enc.reported_columns
    keep_valid = ~np.isnan(prep.encoded["valid"].labels)
    for j, (t, task) in enumerate(zip(cols, enc.reported_tasks, strict=True)):  # auxiliary tasks: none
        yv = prep.encoded["valid"].labels[keep_valid[:, t], t]
        fits = []  # (valid AUC, rounds, setting, trees) of each candidate setting at its best round
        for setting in gbdt_candidates(params):
            clf = gbdt_fit(prep, x, t, setting, setting.max_iter, seed)
            scores = [roc_auc_score(yv, p[:, 1]) if yv.min() != yv.max() else 0.0
                      for p in clf.staged_predict_proba(x["valid"][keep_valid[:, t]])]
            fits.append((max(scores), int(np.argmax(scores)) + 1, setting, clf))
        score, best, setting, clf = max(fits, key=lambda f: f[0])  # the first of equals: the config's order
        rounds[task] = {"rounds": best, "setting": setting.grid_point()} if params.tune else best
        if refit:
            probs[:, j] = gbdt_fit(final, x_final, t, setting, best, seed).predict_proba(x_final["test"])[:, 1]
        else:
            probs[:, j] = next(p for i, p in enumerate(clf.staged_predict_proba(x["test"])) if i == best - 1)[:, 1]
        log(f"gbdt {task}: {best} rounds (valid AUC {score:.4f})"
            + (f", tuned {setting.grid_point()} of {len(fits)} settings" if params.tune else "")
            + (", refit on training + validation rows" if refit else ""))
    report = evaluate(probs, test.labels[:, cols], test.domain, test.user, enc.reported_tasks, test.domain_names)
    return report, rounds, probs


def gbdt_candidates(params: GBDTConfig) -> list[GBDTConfig]:
    """The tree settings ``fit_gbdt`` chooses from on validation: ``params`` itself, or with ``params.tune``
    every point of :data:`pepnet.config.GBDT_GRID` (other keys from ``params``)."""
    if not params.tune:
        return [params]
    keys = list(GBDT_GRID)
    return [params.model_copy(update=dict(zip(keys, values, strict=True)))
            for values in itertools.product(*(GBDT_GRID[k] for k in keys))]


def gbdt_fit(prep: Prepared, x: dict[str, np.ndarray], task: int, params: GBDTConfig, rounds: int, seed: int):
    """A HistGradientBoostingClassifier of ``rounds`` rounds (the trees of ``params``) on the training rows that
    have task ``task``'s label."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = prep.encoded["train"].labels[:, task]
    keep = ~np.isnan(y)
    clf = HistGradientBoostingClassifier(max_iter=rounds, learning_rate=params.learning_rate,
                                         max_leaf_nodes=params.max_leaf_nodes, min_samples_leaf=params.min_samples_leaf,
                                         l2_regularization=params.l2_regularization, early_stopping=False,
                                         random_state=seed)
    return clf.fit(x["train"][keep], y[keep])


# --------------------------------------------------------------------------- progress


class Progress:
    """Which model / seed / epoch is running, and an estimate of the time left.

    The estimate multiplies the mean time of an epoch so far by the epochs still possible (an upper bound:
    early stopping ends runs sooner); a GBDT run counts as one epoch's worth of work."""

    def __init__(self, n_runs: int, epochs: int, log: Callable[[str], None]):
        self.n_runs, self.epochs, self.log = n_runs, epochs, log
        self.run, self.epoch_done, self.units_done, self.start = 0, 0, 0, time.time()
        self.label = ""

    def begin(self, label: str, seed: int) -> None:
        self.run += 1
        self.epoch_done = 0
        self.label = f"[{self.run}/{self.n_runs} {label} seed {seed}]"
        self.log(f"{self.label} start")

    def _eta(self) -> str:
        if self.units_done == 0:
            return "?"
        per = (time.time() - self.start) / self.units_done
        left = (self.epochs - self.epoch_done) + (self.n_runs - self.run) * self.epochs
        return _duration(per * left)

    def message(self, msg: str) -> None:
        if msg.startswith("epoch "):  # the trainer's end-of-epoch record
            self.epoch_done += 1
            self.units_done += 1
            self.log(f"{self.label} {msg}  | time left <= {self._eta()}")
        else:
            self.log(f"{self.label} {msg}")

    def end(self) -> None:
        if self.epoch_done == 0:  # a GBDT run: one unit of work
            self.units_done += 1


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------- aggregation


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


# --------------------------------------------------------------------------- outputs


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
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

    from .plotfonts import use_fonts

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


# --------------------------------------------------------------------------- the comparison


def compare(config: ExperimentConfig | str | Path, out: str | Path, models: list[str] | None = None, seeds: int = 3,
            ablations: bool = False, overrides: list[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every model (and, with ``ablations``, every PEPNet ablation) with ``seeds`` seeds (train.seed,
    train.seed + 1, ...) on one prepared data set; write results.json / .csv / .md / .png to ``out``.
    The GBDT's trees are the config's ``gbdt`` section.
    Returns the results dict (as in results.json)."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    elif overrides:
        config = parse_config(config.to_dict(), "<config>", overrides)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    rows = entries(list(models or MODELS), ablations)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prep = prepare(config, log=log)
    log(f"data prepared once in {time.time() - t0:.1f}s; {len(rows)} model(s) x {seeds} seed(s)")
    runs_of = {e.label: 1 if e.model == GBDT else seeds for e in rows}  # the GBDT is deterministic: fitted once
    progress = Progress(sum(runs_of.values()), config.train.epochs, log)
    result: dict[str, Any] = {
        "config_name": config.name, "config": config.to_dict(), "n_seeds": seeds,
        "tasks": prep.encoder.reported_tasks, "domains": prep.encoded["test"].domain_names, "models": {},
    }
    test_probs: dict[str, np.ndarray] = {}
    provenance: dict[str, Any] | None = None
    for entry in rows:
        runs, probs = [], []
        for k in range(runs_of[entry.label]):
            seed = config.train.seed + k
            progress.begin(entry.label, seed)
            start = time.time()
            if entry.model == GBDT:
                report, rounds, p = fit_gbdt(prep, seed, config.gbdt, log=progress.message,
                                             refit_config=config if config.train.refit else None)
                probs.append(p)
                run = {"seed": seed, "gbdt_rounds": rounds, "fitted_once": True}
            else:
                tree = config.to_dict()
                tree["model"] = {**tree["model"], "name": entry.model, **entry.overrides}
                tree["train"] = {**tree["train"], "seed": seed}
                cfg = parse_config(tree, f"{entry.label} seed {seed}")
                run_dir = out / "runs" / entry.label.replace("[", "_").replace("]", "").replace("=", "-") / f"seed{seed}"
                trained = train_model(cfg, prep, run_dir, log=progress.message)
                state, report = trained.state, trained.report
                probs.append(trained.test_probs)
                provenance = provenance or run_info(config, prep)  # hashes the data: once
                complete_run_dir(run_dir, cfg, prep, trained, provenance)
                run = {"seed": seed, "best_epoch": state.best_epoch, "epochs_run": state.epoch, "history": state.history}
            progress.end()
            run.update(seconds=round(time.time() - start, 1), report=report.to_dict())
            runs.append(run)
            log(f"{progress.label} done in {_duration(run['seconds'])}: test "
                + ", ".join(f"{r['task']} AUC {r['auc']:.4f}" for r in report.overall()))
        test_probs[entry.label] = np.stack(probs)
        agg = aggregate(runs)
        result["models"][entry.label] = {
            "model": entry.model, "overrides": entry.overrides, "runs": runs,
            "aggregate": {"|".join(k): v for k, v in agg.items()},
        }
    test = prep.encoded["test"]
    for line in add_statistics(result, test_probs, test.labels[:, prep.encoder.reported_columns], test.domain,
                               test.user):
        warnings.warn(line, DataWarning, stacklevel=2)
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write(out / "results.json", json.dumps(_nan_to_none(result), indent=1, allow_nan=False))
    write_csv(result, out / "results.csv")
    (out / "results.md").write_text(format_tables(result))
    plot(result, out / "results.png")
    log(f"written: {out / 'results.json'}, results.csv, results.md, results.png ({_duration(result['seconds'])} in all)")
    return result


__all__ = ["ABLATIONS", "GBDT", "MODELS", "compare", "entries", "fit_gbdt", "format_tables"]
