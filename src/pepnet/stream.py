"""Online (incremental) training over periods: progressive validation, then training, period after period.

For every period file, in time order, the current model is first **evaluated** on it (it has never seen
those rows: the progressive validation that online systems report), then **trained** on it. The
optimiser states (Adagrad, Adam), the encoder's statistics of the past and its vocabularies carry over:
values first seen in a later period get rows of the fields' ``reserve`` (``Encoder.partial_fit``), so the
model never restarts from scratch.

A stream run directory is an ordinary run directory (``Run.load`` / ``pepnet evaluate`` / ``predict`` work
on it) plus ``stream.csv`` (one row per period) and ``stream.png`` (the metric curves). ``model.pt`` always
holds the latest model. Periods already in ``stream.csv`` (same file name and sha256) are skipped, so
re-running a stream over a growing folder only processes the new files.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml
from tqdm.auto import tqdm

from . import rundir
from .config import ConfigError, ExperimentConfig, as_config, load_config
from .data.batches import BatchLoader, TensorData
from .data.encoder import Encoder
from .data.sources import read_files
from .data.validate import validated
from .errors import DataError, DataWarning
from .fileio import atomic_write, write_figure
from .metrics import MetricsReport
from .nn import ModelLayout, build_model
from .prepare import layout_from_encoder
from .provenance import file_sha256
from .run import CONFIG_FILE, ENCODER_DIR, LAYOUT_FILE, run_trainer, score
from .train.checkpoint import load_weights
from .train.runtime import resolve_device, seed_everything
from .train.trainer import BEST, Trainer

STREAM_CSV = "stream.csv"
STREAM_PNG = "stream.png"
DATA_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


def period_files(data: str | Path | list[str]) -> list[str]:
    """The period files to stream: a folder's data files sorted by name (name them so that this is time
    order, e.g. ``2024-01-01.parquet`` or ``period-000.parquet``), one file, or a list kept in its order."""
    if isinstance(data, (list, tuple)):
        return [str(p) for p in data]
    p = Path(data)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise DataError("no .parquet / .csv files in the folder; expected one file per period", file=str(p))
        return files
    if not p.exists():
        raise DataError("file does not exist", file=str(p))
    return [str(p)]


class OnlineRun:
    """A run that learns period by period. Open one with :meth:`create` or :meth:`open`."""

    def __init__(self, out: Path, config: ExperimentConfig, encoder: Encoder, trainer: Trainer,
                 history: list[dict], log: Callable[[str], None] = print):
        self.out, self.config, self.encoder, self.trainer, self.history, self.log = (
            out,
            config,
            encoder,
            trainer,
            history,
            log,
        )

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls, config: ExperimentConfig, first: pl.DataFrame, out: Path, log: Callable[[str], None] = print
    ) -> OnlineRun:
        """A new run in ``out``: the encoder is fitted on the first period ``first`` (capacity for later
        values comes from the features' ``reserve``), the model is freshly initialised."""
        tc = config.train
        seed_everything(tc.seed, tc.deterministic, tc.threads)
        reserving = [f.name for f in config.schema_.features if f.kind == "sparse" and f.reserve and not f.hash_buckets]
        if not reserving:
            warnings.warn(
                "no sparse feature has a 'reserve': values first seen after the first period stay out of "
                "vocabulary (set e.g. schema.features.N.reserve to let the vocabulary grow)",
                DataWarning,
                stacklevel=3,
            )
        encoder = Encoder(config.schema_).fit(first)
        n_domains = first[config.schema_.domain].n_unique()
        layout = layout_from_encoder(encoder, config.model, n_domains)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        atomic_write(out / LAYOUT_FILE, json.dumps(asdict(layout), indent=1))
        encoder.save(out / ENCODER_DIR)
        model = build_model(layout, config.model)
        log(
            f"model {config.model.name}: {sum(p.numel() for p in model.parameters()):,} parameters "
            f"({encoder.num_embeddings:,} embedding rows, reserve included)"
        )
        trainer = run_trainer(model, config, encoder, out, resolve_device(tc.device), log)
        return cls(out, config, encoder, trainer, [], log)

    @classmethod
    def open(cls, out: Path, log: Callable[[str], None] = print) -> OnlineRun:
        """Continue an existing run directory (written by ``pepnet stream`` or ``pepnet fit``): encoder,
        model, optimiser states and random state come back from it."""
        config = load_config(out / CONFIG_FILE)
        tc = config.train
        seed_everything(tc.seed, tc.deterministic, tc.threads)
        encoder = Encoder.load(out / ENCODER_DIR)
        layout = ModelLayout.read(out / LAYOUT_FILE)
        model = build_model(layout, config.model)
        device = resolve_device(tc.device)
        trainer = run_trainer(model, config, encoder, out, device, log)
        if not trainer.resume():  # no training state: start the optimisers afresh from the best weights
            load_weights(model, out / BEST, map_location=device)
        history = pl.read_csv(out / STREAM_CSV).to_dicts() if (out / STREAM_CSV).is_file() else []
        return cls(out, config, encoder, trainer, history, log)

    # ------------------------------------------------------------------ one period
    def evaluate(self, df: pl.DataFrame) -> MetricsReport:
        """Metrics of the current model on ``df`` (not trained on it; statistics of the past only)."""
        tc = self.config.train
        return score(self.model, self.encoder.transform(df), self.encoder, tc.eval_batch_size, self.trainer.device)

    def learn(self, df: pl.DataFrame, passes: int = 1, seed: int = 0, fitted_on_it: bool = False) -> dict:
        """Grow the vocabularies, encode ``df`` with the accumulated statistics, train ``passes`` passes over it
        (shuffled), add it to the statistics. ``fitted_on_it``: the encoder was just fitted on ``df`` (first period).
        Returns {"train_loss", "new_values", "steps"}."""
        enc, tc = self.encoder, self.config.train
        before = sum(len(v) for v in enc.vocabs.values())
        data = enc.transform(df, training=True) if fitted_on_it else enc.partial_fit(df)
        new_values = sum(len(v) for v in enc.vocabs.values()) - before
        loader = BatchLoader(TensorData(data), tc.batch_size, shuffle=True, seed=seed)
        self.trainer.compile_for(passes * len(loader))
        self.model.train()
        total, seen = 0.0, 0
        for p in range(passes):
            loader.epoch = p
            for batch in loader:
                loss = self.trainer.step(batch)
                if loss is not None:
                    total, seen = total + loss, seen + 1
        return {"train_loss": total / max(seen, 1), "new_values": new_values, "steps": seen}

    def save(self) -> None:
        self.encoder.save(self.out / ENCODER_DIR)
        self.trainer.save()
        self.trainer.save_best()
        atomic_write(self.out / STREAM_CSV, pl.DataFrame(self.history, infer_schema_length=None).write_csv())
        plot_stream(self.history, self.out / STREAM_PNG)

    def period(self, path: str, passes: int = 1, learn: bool = True, fitted_on_it: bool = False) -> dict:
        """Evaluate on the file, then (``learn``) train on it; append the record to the history and save."""
        schema = self.config.schema_
        frame = validated(read_files([path]), schema, log=self.log)
        df = frame.df.sort(schema.time, maintain_order=True) if schema.time else frame.df
        record: dict = {"period": len(self.history), "file": path, "sha256": file_sha256(path), "rows": df.height}
        if not fitted_on_it:  # the first period of a new run has no model to evaluate yet
            report = self.evaluate(df)
            record.update(report.summary())
            for row in report.overall():
                record[f"auc_{row['task']}"] = row["auc"]
                record[f"gauc_{row['task']}"] = row["gauc"]
        if learn:
            record.update(
                self.learn(df, passes, seed=self.config.train.seed + len(self.history), fitted_on_it=fitted_on_it)
            )
        self.history.append(record)
        self.save()
        return record


def stream(
    data: str | Path | list[str],
    out: str | Path,
    config: ExperimentConfig | str | Path | None = None,
    overrides: list[str] | None = None,
    passes: int = 1,
    log: Callable[[str], None] = print,
    after_period: Callable[[dict], object] | None = None,
) -> OnlineRun:
    """Stream the period files of ``data`` through the run in ``out`` (created from ``config`` if ``out`` holds
    no run yet, else continued; ``config`` is then ignored). Files already streamed are skipped.
    ``after_period(record)`` is called once each period is saved (e.g. to publish the model for serving)."""
    out = Path(out)
    files = period_files(data)
    if (out / CONFIG_FILE).is_file():
        if overrides:
            raise ConfigError("--set cannot change a run that already exists; it keeps the config it was created with")
        rundir.clean(out, log)
        run, fresh = OnlineRun.open(out, log), False
    else:
        if config is None:
            raise FileNotFoundError(f"{out} holds no run ({CONFIG_FILE} missing) and no config was given")
        config = as_config(config, overrides)
        rundir.claim(out)
        first = validated(read_files([files[0]]), config.schema_, log=log)
        run, fresh = OnlineRun.create(config, first.df, out, log), True
    done = {(Path(r["file"]).name, r["sha256"]) for r in run.history}
    todo = [f for f in files if (Path(f).name, file_sha256(f)) not in done]
    if len(todo) < len(files):
        log(f"skipping {len(files) - len(todo)} file(s) already streamed into {out}")
    bar = tqdm(todo, desc="periods", unit="period", disable=True if not run.config.train.progress else None)
    for i, f in enumerate(bar):
        rec = run.period(f, passes=passes, fitted_on_it=fresh and i == 0)
        auc = rec.get("mean_auc", math.nan)
        log(
            f"period {rec['period']} {Path(f).name}: rows {rec['rows']:,}  progressive mean AUC {auc:.4f}  "
            f"train loss {rec['train_loss']:.4f}  new ids {rec['new_values']}"
        )
        if after_period is not None:
            after_period(rec)
    bar.close()
    return run


def plot_stream(history: list[dict], path: Path) -> None:
    """Progressive AUC / GAUC per task against the period (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    periods = [r["period"] for r in history]
    for key in sorted({k for r in history for k in r if k.startswith(("auc_", "gauc_"))}):
        ys = [np.nan if (v := r.get(key)) is None else v for r in history]
        ax.plot(periods, ys, marker="o", label=key.replace("_", " ", 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("period")
    ax.set_ylabel("progressive metric (evaluated before training)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    plt.close(fig)


__all__ = ["OnlineRun", "STREAM_CSV", "STREAM_PNG", "period_files", "plot_stream", "stream"]
