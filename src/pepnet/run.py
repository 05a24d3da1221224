"""The Python API: ``fit(config, out) -> Run``, ``Run.load(dir)``, ``Run.evaluate(...)``, ``Run.predict(...)``,
and the training orchestration behind them (:func:`train_model`, :func:`refit`). Data preparation lives in
:mod:`pepnet.prepare`, run.json in :mod:`pepnet.provenance`, the online orchestrator in :mod:`pepnet.stream`.

The command line is a thin layer over these functions. A run directory holds:
config.yaml, encoder/, model.pt (best weights), checkpoint.pt (last training state), history.csv,
metrics.json / metrics.csv (test split), run.json (versions, seed, git revision, data fingerprints); with
``train.refit``, refit/ holds the final model trained on training + validation rows (its own encoder/,
layout.json, model.pt, history.csv), which ``Run.load`` returns and metrics.json reports.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch
import yaml
from torch import nn

from .config import ExperimentConfig, as_config, load_config, parse_config
from .data.batches import TensorData
from .data.encoder import EncodedData, Encoder
from .data.sources import Frame, read_files
from .data.validate import validated
from .errors import DataError
from .metrics import MetricsReport, evaluate
from .metrics.predictions import write_predictions
from .nn import ModelLayout, build_model
from .predictions import prediction_frame
from .prepare import Prepared, layout_from_encoder, prepare, transform
from .provenance import RUN_INFO, check_same_data, write_run_info
from .train import distributed
from .train.checkpoint import load_checkpoint
from .train.distributed import DistContext
from .train.memory import check_memory, plan_memory
from .train.predict import predict_probs
from .train.runtime import resolve_device, seed_everything
from .train.sharded import ShardedEmbeddings
from .train.trainer import BEST, Trainer, TrainerCallback, TrainState

CONFIG_FILE = "config.yaml"
ENCODER_DIR = "encoder"
LAYOUT_FILE = "layout.json"
REFIT_DIR = "refit"  # train.refit: the final model trained on training + validation rows
PREDICTIONS_FILE = "test_predictions.parquet"  # the final model's test predictions (see write_predictions)


def reported_probs(model: nn.Module, data: EncodedData, encoder: Encoder, batch_size: int, device: torch.device,
                   dist: DistContext | None = None) -> np.ndarray:
    """Predicted probabilities [N, T_reported] of ``model`` on ``data`` for the encoder's reported
    (non-auxiliary) tasks; with ``dist`` every rank scores a block and the predictions are gathered."""
    return predict_probs(model, TensorData(data), batch_size, device, dist)[:, encoder.reported_columns]


def report_of(probs: np.ndarray, data: EncodedData, encoder: Encoder) -> MetricsReport:
    """Metrics of reported-task probabilities ``probs`` [N, T_reported] on ``data``."""
    cols = encoder.reported_columns
    return evaluate(probs, data.labels[:, cols], data.domain, data.user, encoder.reported_tasks, data.domain_names)


def score(model: nn.Module, data: EncodedData, encoder: Encoder, batch_size: int, device: torch.device,
          dist: DistContext | None = None) -> MetricsReport:
    """Metrics of ``model`` on ``data`` for the encoder's reported (non-auxiliary) tasks."""
    return report_of(reported_probs(model, data, encoder, batch_size, device, dist), data, encoder)


class Run:
    """A trained run: its directory, config, encoder and best model."""

    def __init__(self, directory: str | Path, config: ExperimentConfig, encoder: Encoder, model: nn.Module,
                 report: MetricsReport | None = None):
        self.dir, self.config, self.encoder, self.model, self.report = Path(directory), config, encoder, model, report
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Run":
        """The run's final model: with ``train.refit``, the one trained on training + validation rows
        (``REFIT_DIR``: its own encoder, layout and weights)."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} is not a run directory (no {CONFIG_FILE})")
        config = load_config(directory / CONFIG_FILE)
        final = directory / REFIT_DIR if config.train.refit else directory
        if not (final / BEST).is_file():
            raise FileNotFoundError(f"{directory}: no trained model at {final / BEST} (training did not finish; "
                                    "`pepnet fit --resume` goes on)")
        encoder = Encoder.load(final / ENCODER_DIR)
        layout = ModelLayout.from_dict(json.loads((final / LAYOUT_FILE).read_text()))
        model = build_model(layout, config.model)
        model.load_state_dict(load_checkpoint(final / BEST))
        model.to(resolve_device(device)).eval()
        report = MetricsReport.from_json(directory / "metrics.json") if (directory / "metrics.json").is_file() else None
        return cls(directory, config, encoder, model, report)

    def test_data(self) -> EncodedData:
        """The configured test split, encoded as the final model was trained to see it."""
        return prepare(self.config, encoder=self.encoder, log=lambda _: None, refit=self.config.train.refit,
                       splits=("test",)).encoded["test"]

    def _encode_files(self, files: list[str], labels: bool = True) -> tuple[Frame, EncodedData]:
        frame = validated(read_files(files), self.encoder.schema, labels=labels)
        return frame, transform(self.encoder, frame)

    def evaluate(self, data: list[str] | str | None = None) -> MetricsReport:
        """Metrics on new files, or (``data=None``) on the configured test split."""
        if data is None:
            encoded = self.test_data()
        else:
            encoded = self._encode_files([data] if isinstance(data, str) else list(data))[1]
        return score(self.model, encoded, self.encoder, self.config.train.eval_batch_size, self.device)

    def predict(self, data: list[str] | str, keep: Sequence[str] = (), auxiliary: bool = False) -> pl.DataFrame:
        """Probabilities ``p_<task>`` of the reported tasks (all tasks with ``auxiliary``) for every row of the files,
        in input order, beside the domain, user, item and time columns and the ``keep`` columns
        (:func:`pepnet.predictions.prediction_frame`)."""
        frame, encoded = self._encode_files([data] if isinstance(data, str) else list(data), labels=False)
        probs = predict_probs(self.model, TensorData(encoded), self.config.train.eval_batch_size, self.device)
        return prediction_frame(frame.df, self.encoder, probs, keep, auxiliary)


@dataclass
class Trained:
    """The outcome of :func:`train_model`: the final model, the training state of the run that chose the epoch,
    the test report of the final model, the encoder the final model reads (a refit fits its own) and the final
    model's test predictions [N_test, T_reported] (also in ``PREDICTIONS_FILE``)."""

    model: nn.Module
    state: TrainState
    report: MetricsReport
    encoder: Encoder
    test_probs: np.ndarray


def train_model(config: ExperimentConfig, prep: Prepared, out: Path, resume: bool = False,
                log: Callable[[str], None] = print, callbacks: Sequence[TrainerCallback] = ()) -> Trained:
    """Build the configured model for prepared data and train it in ``out`` (layout.json, checkpoints, best
    weights, history.csv), choosing the epoch on the validation split (without one, every epoch runs and the
    last is kept); with ``train.refit``, train the final model on training + validation rows (:func:`refit`);
    then score the final model on the test split once. Shared by :func:`fit` and ``pepnet compare``;
    ``callbacks`` are told about every epoch (:class:`~pepnet.train.trainer.TrainerCallback`)."""
    tc, encoder = config.train, prep.encoder
    ctx = distributed.init_from_env(tc.device)  # torchrun: data-parallel over the ranks; else a single process
    log = log if ctx.is_main else (lambda _: None)
    seed_everything(tc.seed, tc.deterministic, tc.threads)
    out.mkdir(parents=True, exist_ok=True)
    layout = layout_from_encoder(encoder, config.model, len(prep.encoded["train"].domain_names))
    if ctx.is_main:
        (out / LAYOUT_FILE).write_text(json.dumps(asdict(layout), indent=1))
    device = ctx.device(tc.device)
    train_arrays = prep.encoded["train"]
    on_device = tc.data_on_device and device.type == "cuda"
    plan = plan_memory(layout, config.model, tc, device, [(f.name, f.size) for f in encoder.sparse_fields],
                       data_bytes=sum(a.nbytes for a in (train_arrays.sparse, train_arrays.dense, train_arrays.labels))
                       if on_device else 0)
    check_memory(plan)
    log(f"memory plan: {plan.describe()}")
    model = build_model(layout, config.model)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {config.model.name}: {n_params:,} parameters ({encoder.num_embeddings:,} embedding rows x {config.model.embedding_dim})")
    sharded = None
    if tc.embedding_sharding != "none":  # TorchRec: tables sharded over the ranks, dense part data-parallel
        sharded = ShardedEmbeddings(model, [f.size for f in encoder.sparse_fields], tc, device, ctx)
        log(f"embedding tables sharded over {ctx.world} processes by TorchRec: {', '.join(sharded.plan)}")
    trainer = Trainer(model, tc, encoder.task_names, config.schema_.task_weights(), run_dir=out, device=device,
                      log=log, dist=ctx, sharded=sharded, callbacks=callbacks)
    if resume:
        trainer.resume()
    valid = prep.encoded.get("valid")

    def evaluate_valid(m: nn.Module) -> tuple[float, dict]:
        rep = score(m, valid, encoder, tc.eval_batch_size, device, ctx)
        s = rep.summary()
        value = s[f"mean_{tc.monitor}"]
        if not np.isfinite(value):  # e.g. no user with both classes: fall back to AUC
            value = s["mean_auc"]
        per_task = {f"valid_{r['task']}_auc": r["auc"] for r in rep.overall()}
        return (value if np.isfinite(value) else -np.inf), {**{f"valid_{k}": v for k, v in s.items()}, **per_task}

    state = trainer.fit(TensorData(prep.encoded["train"]), evaluate_valid if valid is not None else None)
    if ctx.is_main:
        pl.DataFrame(state.history).write_csv(out / "history.csv")
    ctx.barrier()  # rank 0 has written the best weights
    if tc.refit and valid is not None:  # the selection run's weights are not the final model
        return refit(config, prep, state, out / REFIT_DIR, log, callbacks)
    model.load_state_dict(load_checkpoint(out / BEST, map_location=device))
    log("scoring the test split")
    test = prep.encoded["test"]
    probs = reported_probs(model, test, encoder, tc.eval_batch_size, device, ctx)
    if ctx.is_main:
        write_predictions(out / PREDICTIONS_FILE, probs, test, encoder.reported_columns, encoder.reported_tasks)
    return Trained(model, state, report_of(probs, test, encoder), encoder, probs)


def refit(config: ExperimentConfig, prep: Prepared, state: TrainState, out: Path,
          log: Callable[[str], None] = print, callbacks: Sequence[TrainerCallback] = ()) -> Trained:
    """``train.refit``: a fresh model (same seed) trained in ``out`` on the training then validation rows for
    the ``state.best_epoch`` epochs chosen on validation, with an encoder (vocabularies, statistics of the past)
    fitted on those rows and saved in ``out``; the test split is scored once, with it. Nothing in this step
    looks at a validation or test label to make a choice."""
    log(f"refit: a fresh model on training + validation rows for the {state.best_epoch} epoch(s) chosen on validation")
    rprep = prep.for_refit(config)
    if distributed.init_from_env(config.train.device).is_main:
        rprep.encoder.save(out / ENCODER_DIR)
    tree = config.to_dict()
    tree["train"] = {**tree["train"], "epochs": state.best_epoch}
    final = train_model(parse_config(tree, f"{config.name} (refit)"), rprep, out, log=log, callbacks=callbacks)
    if distributed.init_from_env(config.train.device).is_main:  # the run's predictions are the final model's
        (out.parent / PREDICTIONS_FILE).write_bytes((out / PREDICTIONS_FILE).read_bytes())
    return Trained(final.model, state, final.report, rprep.encoder, final.test_probs)


def fit(config: ExperimentConfig | str | Path, out: str | Path, resume: bool = False,
        overrides: list[str] | None = None, log: Callable[[str], None] = print) -> Run:
    """Train the configured model; write the run directory ``out``; evaluate the best model on the test split."""
    out = Path(out)
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"--resume: {out} has no {CONFIG_FILE}; nothing to resume")
        config = load_config(out / CONFIG_FILE, overrides)
    else:
        config = as_config(config, overrides)
    tc = config.train
    main = distributed.init_from_env(tc.device).is_main  # under torchrun only rank 0 writes the run files
    log = log if main else (lambda _: None)
    seed_everything(tc.seed, tc.deterministic, tc.threads)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.load(out / ENCODER_DIR) if resume and (out / ENCODER_DIR / "encoder.json").is_file() else None
    fitted_now = encoder is None  # a new run, or a resumed one that was killed before its encoder was saved
    prep = prepare(config, encoder=encoder, log=log)
    encoder = prep.encoder
    if main and not resume:
        (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if main and fitted_now:
        encoder.save(out / ENCODER_DIR)
    if resume and (out / RUN_INFO).is_file():
        check_same_data(out, prep)
    elif main:
        write_run_info(out, config, prep)
    if tc.epochs == 1 and "valid" in prep.encoded:
        log("note: train.epochs is 1, so no epoch is chosen on validation; for new data keep the default "
            "(5, with patience 2) or raise it (docs/configuration.md, train.epochs)")
    trained = train_model(config, prep, out, resume=resume, log=log)
    state, report = trained.state, trained.report
    if main:
        write_metrics(out, report)
    log(f"best epoch {state.best_epoch} (valid mean {tc.monitor} {state.best:.4f})"
        + ("; final model refit on training + validation rows" if tc.refit else "") + "; test metrics:")
    return Run(out, config, trained.encoder, trained.model, report)


def write_metrics(out: Path, report: MetricsReport) -> None:
    """The test report as metrics.json and metrics.csv in ``out``."""
    report.to_json(out / "metrics.json")
    report.to_csv(out / "metrics.csv")


def complete_run_dir(out: Path, config: ExperimentConfig, prep: Prepared, trained: Trained,
                     info: dict | None = None) -> None:
    """Make ``out``, where :func:`train_model` trained, a full run directory as `pepnet fit` writes it (usable
    by evaluate, predict, gates, inspect and report): config.yaml, encoder/, run.json and metrics.json / .csv.
    ``info``: :func:`pepnet.provenance.run_info` computed once for many runs on ``prep``."""
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    prep.encoder.save(out / ENCODER_DIR)
    write_run_info(out, config, prep, info)
    write_metrics(out, trained.report)


__all__ = ["CONFIG_FILE", "DataError", "ENCODER_DIR", "LAYOUT_FILE", "PREDICTIONS_FILE", "REFIT_DIR", "Run", "Trained",
           "complete_run_dir", "fit", "refit", "report_of", "reported_probs", "score", "train_model", "write_metrics"]
