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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml
from torch import nn

from . import rundir
from .config import ConfigError, ExperimentConfig, as_config, load_config, parse_config
from .data.batches import TensorData
from .data.encoder import EncodedData, Encoder, transform
from .data.sources import Frame, read_files
from .data.validate import validated
from .errors import DataError
from .fileio import atomic_write
from .metrics import MetricsReport, evaluate
from .metrics.predictions import write_predictions
from .nn import ModelLayout, build_model
from .predictions import prediction_frame
from .prepare import Prepared, layout_from_encoder, prepare
from .provenance import RUN_INFO, check_same_data, write_run_info
from .train import distributed
from .train.checkpoint import load_weights
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
    def load(cls, directory: str | Path, device: str = "cpu") -> Run:
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
        layout = ModelLayout.read(final / LAYOUT_FILE)
        model = build_model(layout, config.model)
        load_weights(model, final / BEST)
        model.to(resolve_device(device)).eval()
        report = MetricsReport.from_json(directory / "metrics.json") if (directory / "metrics.json").is_file() else None
        return cls(directory, config, encoder, model, report)

    def test_data(self) -> EncodedData:
        """The configured test split, encoded as the final model was trained to see it."""
        return prepare(self.config, encoder=self.encoder, log=lambda _: None, refit=self.config.train.refit,
                       splits=("test",)).encoded["test"]

    def _encode_files(self, files: list[str], labels: bool = True) -> tuple[Frame, EncodedData]:
        frame = validated(read_files(files), self.encoder.schema, labels=labels)
        self.encoder.warn_unseen_domains(frame.df, ", ".join(files))
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


def run_trainer(model: nn.Module, config: ExperimentConfig, encoder: Encoder, out: Path, device: torch.device,
                log: Callable[[str], None], **extra) -> Trainer:
    """The Trainer of a run directory ``out``: the config's training settings, the encoder's tasks weighted as the
    schema says, checkpoints in ``out``. ``extra``: Trainer's ``dist``, ``sharded``, ``callbacks``."""
    return Trainer(model, config.train, encoder.task_names, config.schema_.task_weights(), run_dir=out,
                   device=device, log=log, **extra)


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
        atomic_write(out / LAYOUT_FILE, json.dumps(asdict(layout), indent=1))
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
    log(f"model {config.model.name}: {n_params:,} parameters "
        f"({encoder.num_embeddings:,} embedding rows x {config.model.embedding_dim})")
    sharded = None
    if tc.embedding_sharding != "none":  # TorchRec: tables sharded over the ranks, dense part data-parallel
        sharded = ShardedEmbeddings(model, [f.size for f in encoder.sparse_fields], tc, device, ctx)
        log(f"embedding tables sharded over {ctx.world} processes by TorchRec: {', '.join(sharded.plan)}")
    trainer = run_trainer(model, config, encoder, out, device, log, dist=ctx, sharded=sharded, callbacks=callbacks)
    if resume:
        trainer.resume()
    valid = prep.encoded.get("valid")

    def evaluate_valid(m: nn.Module) -> tuple[float, dict]:
        assert valid is not None  # passed to the trainer only when there is a validation split
        rep = score(m, valid, encoder, tc.eval_batch_size, device, ctx)
        s = rep.summary()
        value = s[f"mean_{tc.monitor}"]
        if not np.isfinite(value):  # e.g. no user with both classes: fall back to AUC
            value = s["mean_auc"]
        per_task = {f"valid_{r['task']}_auc": r["auc"] for r in rep.overall()}
        return (value if np.isfinite(value) else -np.inf), {**{f"valid_{k}": v for k, v in s.items()}, **per_task}

    state = trainer.fit(TensorData(prep.encoded["train"]), evaluate_valid if valid is not None else None)
    if ctx.is_main:
        atomic_write(out / "history.csv", pl.DataFrame(state.history).write_csv())
    ctx.barrier()  # rank 0 has written the best weights
    if tc.refit and valid is not None:  # the selection run's weights are not the final model
        return refit(config, prep, state, out / REFIT_DIR, log, callbacks)
    load_weights(model, out / BEST, map_location=device)
    log("scoring the test split")
    test = prep.encoded["test"]
    probs = reported_probs(model, test, encoder, tc.eval_batch_size, device, ctx)
    if ctx.is_main:
        write_predictions(out / PREDICTIONS_FILE, probs, test, encoder.reported_columns, encoder.reported_tasks)
    return Trained(model, state, report_of(probs, test, encoder), encoder, probs)


def refit(
    config: ExperimentConfig,
    prep: Prepared,
    state: TrainState,
    out: Path,
    log: Callable[[str], None] = print,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trained:
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


# what ``--set`` may change on ``--resume``: how the run executes, not what it learns (the optimiser state,
# the data and the model are restored from the run)
RESUME_OVERRIDES = (
    "train.progress",
    "train.threads",
    "train.device",
    "train.eval_batch_size",
    "train.prefetch",
    "train.memory_limit_gb",
    "train.checkpoint_every",
)


def _resume_overrides(overrides: list[str] | None, out: Path, log: Callable[[str], None]) -> list[str] | None:
    """The overrides of a resumed run, after refusing those that could not take effect (ConfigError)."""
    keys = [o.split("=", 1)[0].strip() for o in overrides or []]
    refused = [k for k in keys if k not in RESUME_OVERRIDES]
    if refused:
        raise ConfigError(
            f"--resume continues the run in {out} as it was configured; --set {', '.join(refused)} "
            "cannot take effect there (the data, the model and the optimiser state, learning rates "
            f"included, are restored). On resume --set may change only: {', '.join(RESUME_OVERRIDES)}; "
            "start a new run to change anything else"
        )
    if keys:
        log(f"--resume: applying {', '.join(overrides or [])} to this process (config.yaml keeps the run's settings)")
    return overrides


def fit(
    config: ExperimentConfig | str | Path,
    out: str | Path,
    resume: bool = False,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> Run:
    """Train the configured model; write the run directory ``out``; evaluate the best model on the test split.
    A new run needs ``out`` new or empty, unless ``overwrite`` (which removes an earlier run's files first)."""
    out = Path(out)
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"--resume: {out} has no {CONFIG_FILE}; nothing to resume")
        config = load_config(out / CONFIG_FILE, _resume_overrides(overrides, out, log))
    else:
        config = as_config(config, overrides)
    tc = config.train
    main = distributed.init_from_env(tc.device).is_main  # under torchrun only rank 0 writes the run files
    log = log if main else (lambda _: None)
    seed_everything(tc.seed, tc.deterministic, tc.threads)
    if main:  # leftovers of killed writers first, so that they do not count as a run in a folder
        rundir.clean(out, log)
    if main and not resume:
        rundir.claim(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.load(out / ENCODER_DIR) if resume and (out / ENCODER_DIR / "encoder.json").is_file() else None
    fitted_now = encoder is None  # a new run, or a resumed one that was killed before its encoder was saved
    prep = prepare(config, encoder=encoder, log=log)
    encoder = prep.encoder
    if main and not resume:
        atomic_write(out / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    if main and fitted_now:
        encoder.save(out / ENCODER_DIR)
    if resume and (out / RUN_INFO).is_file():
        check_same_data(out, prep)
    elif main:
        write_run_info(out, config, prep)
    if tc.epochs == 1 and "valid" in prep.encoded:
        log(
            "note: train.epochs is 1, so no epoch is chosen on validation; for new data keep the default "
            "(5, with patience 2) or raise it (docs/configuration.md, train.epochs)"
        )
    trained = train_model(config, prep, out, resume=resume, log=log)
    state, report = trained.state, trained.report
    if main:
        write_metrics(out, report)
    log(
        f"best epoch {state.best_epoch} (valid mean {tc.monitor} {state.best:.4f})"
        + ("; final model refit on training + validation rows" if tc.refit else "")
        + "; test metrics:"
    )
    return Run(out, config, trained.encoder, trained.model, report)


def write_metrics(out: Path, report: MetricsReport) -> None:
    """The test report as metrics.json and metrics.csv in ``out``."""
    report.to_json(out / "metrics.json")
    report.to_csv(out / "metrics.csv")


def complete_run_dir(
    out: Path, config: ExperimentConfig, prep: Prepared, trained: Trained, info: dict | None = None
) -> None:
    """Make ``out``, where :func:`train_model` trained, a full run directory as `pepnet fit` writes it (usable
    by evaluate, predict, gates, inspect and report): config.yaml, encoder/, run.json and metrics.json / .csv.
    ``info``: :func:`pepnet.provenance.run_info` computed once for many runs on ``prep``."""
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    prep.encoder.save(out / ENCODER_DIR)
    write_run_info(out, config, prep, info)
    write_metrics(out, trained.report)


__all__ = [
    "CONFIG_FILE",
    "DataError",
    "ENCODER_DIR",
    "LAYOUT_FILE",
    "PREDICTIONS_FILE",
    "REFIT_DIR",
    "Run",
    "Trained",
    "complete_run_dir",
    "fit",
    "refit",
    "report_of",
    "reported_probs",
    "score",
    "train_model",
    "write_metrics",
]
