"""``pepnet compare``: baselines and PEPNet ablations side by side, several seeds each, one data preparation.

The data are loaded, validated, split and encoded ONCE (:func:`pepnet.prepare.prepare`); every model and seed
trains on those arrays with the same trainer, loss and metrics (:func:`pepnet.run.train_model`): the epoch is
chosen on the validation split and the test split is scored once, with the chosen weights (with ``train.refit``:
with a model retrained on training + validation rows for the chosen epochs; the refit data are encoded once
too). A gradient-boosted tree (``gbdt``, :mod:`pepnet.compare.gbdt`) on the statistics of the past is the
non-neural reference (with ``train.refit``, its rounds are chosen on validation and it is retrained the same
way). Progress and the time left: :mod:`pepnet.compare.progress`; the output files: :mod:`pepnet.compare.render`.

Output directory: ``results.json`` (every run's full report and the aggregates), ``results.csv`` (mean, std
and values of every metric per model x domain x task), ``results.md`` (readable tables, best of each column
in bold), ``results.png`` (AUC / GAUC per task with one bar per model), ``runs/<model>/seed<k>/`` (run files).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import ExperimentConfig, as_config, parse_config
from ..errors import DataWarning
from ..fileio import atomic_write
from ..prepare import prepare
from ..provenance import run_info
from ..run import complete_run_dir, train_model
from .gbdt import GBDT as GBDTBaseline
from .gbdt import NAME as GBDT
from .progress import Progress, duration
from .render import format_tables, nan_to_none, paired_table, plot, write_csv
from .results import aggregate
from .stats import add_statistics

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


@dataclass
class Entry:
    """One row of the comparison: a label, the model name and model-config overrides."""

    label: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


def entries(models: list[str], ablations: bool) -> list[Entry]:
    """The comparison rows: the models asked for, then (``ablations``) PEPNet with each ablation flag."""
    from ..nn import MODELS as REGISTRY

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


def compare(config: ExperimentConfig | str | Path, out: str | Path, models: list[str] | None = None, seeds: int = 3,
            ablations: bool = False, overrides: list[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every model (and, with ``ablations``, every PEPNet ablation) with ``seeds`` seeds (train.seed,
    train.seed + 1, ...) on one prepared data set; write results.json / .csv / .md / .png to ``out``.
    The GBDT's trees are the config's ``gbdt`` section.
    Returns the results dict (as in results.json)."""
    config = as_config(config, overrides)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    rows = entries(list(models or MODELS), ablations)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log("preparing the data once: load, validate, split, encode")
    prep = prepare(config, log=log)
    log(f"data prepared once in {time.time() - t0:.1f}s; {len(rows)} model(s) x {seeds} seed(s)")
    refit = config.train.refit
    runs_of = {e.label: 1 if e.model == GBDT else seeds for e in rows}  # the GBDT is deterministic: fitted once
    progress = Progress([e.model == GBDT for e in rows for _ in range(runs_of[e.label])],
                        config.train.epochs * (2 if refit else 1), log)
    gbdt = GBDTBaseline(prep, config.gbdt, refit_config=config if refit else None) \
        if any(e.model == GBDT for e in rows) else None
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
            if gbdt is not None and entry.model == GBDT:
                report, rounds, p = gbdt.fit(seed, log=progress.message)
                probs.append(p)
                run: dict[str, Any] = {"seed": seed, "gbdt_rounds": rounds, "fitted_once": True}
            else:
                tree = config.to_dict()
                tree["model"] = {**tree["model"], "name": entry.model, **entry.overrides}
                tree["train"] = {**tree["train"], "seed": seed}
                cfg = parse_config(tree, f"{entry.label} seed {seed}")
                run_dir = out / "runs" / entry.label.replace("[", "_").replace("]", "").replace("=", "-") / f"seed{seed}"
                trained = train_model(cfg, prep, run_dir, log=progress.message, callbacks=[progress])
                state, report = trained.state, trained.report
                probs.append(trained.test_probs)
                provenance = provenance or run_info(config, prep)  # hashes the data: once
                complete_run_dir(run_dir, cfg, prep, trained, provenance)
                run = {"seed": seed, "best_epoch": state.best_epoch, "epochs_run": state.epoch, "history": state.history}
            run.update(seconds=round(progress.end(), 1), report=report.to_dict())
            runs.append(run)
            log(f"{progress.label} done in {duration(run['seconds'])}: test "
                + ", ".join(f"{r['task']} AUC {r['auc']:.4f}" for r in report.overall())
                + f"  | time left <= {progress.eta()}")
        test_probs[entry.label] = np.stack(probs)
        agg = aggregate(runs)
        result["models"][entry.label] = {
            "model": entry.model, "overrides": entry.overrides, "runs": runs,
            "aggregate": {"|".join(k): v for k, v in agg.items()},
        }
    log("paired bootstrap intervals on the test split")
    test = prep.encoded["test"]
    for line in add_statistics(result, test_probs, test.labels[:, prep.encoder.reported_columns], test.domain,
                               test.user):
        warnings.warn(line, DataWarning, stacklevel=2)
    result["seconds"] = round(time.time() - t0, 1)
    log("writing results.json, results.csv, results.md, results.png")
    atomic_write(out / "results.json", json.dumps(nan_to_none(result), indent=1, allow_nan=False))
    write_csv(result, out / "results.csv")
    (out / "results.md").write_text(format_tables(result))
    plot(result, out / "results.png")
    log(f"written: {out / 'results.json'}, results.csv, results.md, results.png ({duration(result['seconds'])} in all)")
    return result


__all__ = ["ABLATIONS", "GBDT", "MODELS", "Entry", "compare", "entries", "format_tables", "paired_table"]
