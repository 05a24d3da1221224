"""The Python API: ``fit(config, out) -> Run``, ``Run.load(dir)``, ``Run.evaluate(...)``, ``Run.predict(...)``.

The command line is a thin layer over these functions. A run directory holds:
config.yaml, encoder/, model.pt (best weights), checkpoint.pt (last training state), history.csv,
metrics.json / metrics.csv (test split), run.json (versions, seed, git revision, data fingerprints); with
``train.refit``, refit/ holds the final model trained on training + validation rows (its own encoder/,
layout.json, model.pt, history.csv), which ``Run.load`` returns and metrics.json reports.
"""
from __future__ import annotations

import copy
import hashlib
import json
import platform
import subprocess
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
import yaml
from torch import nn

from .config import ExperimentConfig, ModelConfig, load_config, parse_config
from .data.batches import TensorData
from .data.encoder import EncodedData, Encoder
from .data.errors import DataError, DataWarning
from .data.sources import PROVENANCE, Frame, concat_frames, load_data, read_files
from .data.split import split_frame
from .data.validate import validated
from .fileio import atomic_write
from .metrics import MetricsReport, evaluate
from .nn import ModelLayout, build_model
from .predictions import prediction_frame
from .train import distributed
from .train.checkpoint import load_checkpoint
from .train.distributed import DistContext
from .train.memory import check_memory, plan_memory
from .train.sharded import ShardedEmbeddings
from .train.trainer import BEST, Trainer, TrainState, predict_probs, resolve_device, seed_everything

CONFIG_FILE = "config.yaml"
ENCODER_DIR = "encoder"
LAYOUT_FILE = "layout.json"
REFIT_DIR = "refit"  # train.refit: the final model trained on training + validation rows


def layout_from_encoder(encoder: Encoder, cfg: ModelConfig, n_domains: int) -> ModelLayout:
    """The model's input layout from a fitted encoder (group names -> field indices)."""
    schema = encoder.schema
    groups = {g: encoder.group(g) for g in ("general", "domain_side", "user_prior", "item_prior", "author_prior")}
    domain_fields = [encoder.field_index(f.name) for f in schema.features if f.source == schema.domain and f.kind == "sparse"]
    if not cfg.domain_stats:
        groups["domain_side"] = [i for i in groups["domain_side"] if i in domain_fields] or groups["domain_side"][:1]
    dom = domain_fields[0] if domain_fields else None
    drops = [(encoder.field_index(f.name), encoder.fields[encoder.field_index(f.name)].offset, f.oov_dropout)
             for f in schema.features if f.kind == "sparse" and f.oov_dropout > 0]
    return ModelLayout(
        num_embeddings=encoder.num_embeddings, n_sparse=len(encoder.sparse_fields), n_dense=len(encoder.dense_fields),
        tasks=tuple(encoder.task_names), groups=groups, n_domains=n_domains, domain_field=dom,
        domain_offset=encoder.fields[dom].offset if dom is not None else 0, oov_dropout=drops,
    )


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _fingerprint(files: list[str]) -> dict[str, str]:
    out = {}
    for f in files:
        p = Path(f)
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[f] = h.hexdigest()
    return out


def _split_fingerprints(prep: "Prepared") -> dict[str, str]:
    """sha256 of every split's rows (all columns but provenance; for files and built-in data sets alike)."""
    out = {}
    for name, fr in prep.frames.items():
        df = fr.df.drop([c for c in PROVENANCE if c in fr.df.columns])
        out[name] = hashlib.sha256(df.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
    return out


def _check_same_data(out: Path, prep: "Prepared") -> None:
    """On resume: the splits must be those the run started with (run.json), or the resumed run is not that run."""
    info = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    before = info.get("split_fingerprints")
    if before:
        now = _split_fingerprints(prep)
        changed = [k for k in before if now.get(k) != before[k]]
        if changed:
            raise DataError(f"--resume: the {', '.join(changed)} split(s) differ from those the run in {out} started "
                            "with (run.json split_fingerprints); expected the same data. Start a new run instead",
                            file=", ".join(sorted({f for fr in prep.frames.values() for f in fr.files})))


def _check_labels(name: str, data: EncodedData, tasks: list[str]) -> None:
    for t, task in enumerate(tasks):
        y = data.labels[:, t]
        y = y[~np.isnan(y)]
        if y.size == 0 or y.min() == y.max():
            what = "no labels" if y.size == 0 else f"only {'positive' if y[0] == 1 else 'negative'} labels"
            warnings.warn(f"the {name} split has {what} for task {task!r}; its AUC there is undefined", DataWarning, stacklevel=3)


@dataclass
class Prepared:
    """Data ready for training: the splits as frames and encoded arrays, and the fitted encoder."""

    frames: dict[str, Frame]
    encoded: dict[str, EncodedData]
    encoder: Encoder
    test_encoder: Encoder | None = None  # the encoder of the test split when its statistics also count validation rows
    refit_prep: "Prepared | None" = None  # train.refit's splits, encoded once (see for_refit)
    stat_cache: dict[str, np.ndarray] = field(default_factory=dict)  # see stat_matrix

    def for_refit(self, config: ExperimentConfig) -> "Prepared":
        """``train.refit``'s data: training then validation rows as the training split, with an encoder fitted
        on them, and the test split; encoded on the first call and kept (``pepnet compare`` refits many models)."""
        if self.refit_prep is None:
            self.refit_prep = encode_splits(config, refit_frames(self.frames))
        return self.refit_prep

    def encoder_for(self, split: str) -> Encoder:
        """The encoder that scores ``split``: ``test_encoder`` for the test split when there is one (its
        statistics also count the validation rows), else the training encoder."""
        return self.test_encoder if split == "test" and self.test_encoder else self.encoder

    def stat_matrix(self, split: str) -> np.ndarray:
        """The raw statistics of the past of ``split`` (:meth:`Encoder.stat_values`), float64 [rows, statistics],
        read by :meth:`encoder_for` that split; computed on the first call and kept (the GBDT of
        ``pepnet compare`` reads them for every seed)."""
        if split not in self.stat_cache:
            self.stat_cache[split] = self.encoder_for(split).stat_values(self.frames[split].df,
                                                                        training=(split == "train"))[1]
        return self.stat_cache[split]


def transform(encoder: Encoder, frame: Frame, training: bool = False) -> EncodedData:
    """``encoder.transform(frame.df)``; an encoding error about a column (e.g. a dtype that differs from training)
    is raised again naming the file and the first row holding a value of that column."""
    try:
        return encoder.transform(frame.df, training=training)
    except DataError as exc:
        if exc.file is not None or exc.column not in frame.df.columns:
            raise
        file, row = frame.first_bad(frame.df[exc.column].is_not_null()) or (", ".join(frame.files), None)
        raise DataError(exc.detail, file=file, column=exc.column, row=row) from None


def prepare(config: ExperimentConfig, encoder: Encoder | None = None, log: Callable[[str], None] = print,
            refit: bool = False, splits: tuple[str, ...] | None = None) -> Prepared:
    """Load, validate, split and encode the configured data (fitting a new encoder unless one is given).
    ``refit``: the training and validation rows together form the training split (``train.refit``'s final
    model) and there is no validation split. ``splits``: encode only these (default: every split)."""
    schema = config.schema_
    frames = split_frame(validated(load_data(config.data), schema, log=log), config.data, schema)
    if config.data.split.method == "files":
        for name in ("valid", "test"):
            frames[name] = validated(frames[name], schema, log=log)
    if refit:
        frames = refit_frames(frames)
    log("rows: " + ", ".join(f"{k} {v.df.height:,}" for k, v in frames.items()))
    return encode_splits(config, frames, encoder, splits)


def refit_frames(frames: dict[str, Frame]) -> dict[str, Frame]:
    """The splits of ``train.refit``'s final model: training then validation rows as training, the test rows."""
    return {"train": concat_frames(frames["train"], frames["valid"]), "test": frames["test"]}


def encode_splits(config: ExperimentConfig, frames: dict[str, Frame], encoder: Encoder | None = None,
                  splits: tuple[str, ...] | None = None) -> Prepared:
    """Fit an encoder on the training frame (unless one is given) and encode every split (or only ``splits``);
    without a validation split (a refit) the training split already holds every row before the test period."""
    encoder = encoder or Encoder(config.schema_).fit(frames["train"].df)
    test_encoder = None
    if config.data.split.test_stats == "train+valid" and "valid" in frames:  # test rows see every earlier row
        test_encoder = copy.deepcopy(encoder)
        test_encoder.update_stats(frames["valid"].df)
    prep = Prepared(frames, {}, encoder, test_encoder)
    prep.encoded.update({k: transform(prep.encoder_for(k), v, training=(k == "train"))
                         for k, v in frames.items() if splits is None or k in splits})
    for name in prep.encoded:
        _check_labels(name, prep.encoded[name], encoder.task_names)
    for name in [k for k in ("valid", "test") if k in prep.encoded]:
        unseen = encoder.unseen_domains(frames[name].df)
        if unseen:
            warnings.warn(f"the {name} split has domains never seen in training: {unseen}; they are scored with the "
                          "out-of-vocabulary domain embedding and reported under their own name", DataWarning, stacklevel=2)
    return prep


def score(model: nn.Module, data: EncodedData, encoder: Encoder, batch_size: int, device: torch.device,
          dist: DistContext | None = None) -> MetricsReport:
    """Metrics of ``model`` on ``data`` for the encoder's reported (non-auxiliary) tasks; with ``dist`` every
    rank scores a block and the predictions are gathered."""
    probs = distributed.predict_probs(model, TensorData(data), batch_size, device, dist)
    cols = encoder.reported_columns
    return evaluate(probs[:, cols], data.labels[:, cols], data.domain, data.user, encoder.reported_tasks,
                    data.domain_names)


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
    the test report of the final model, and the encoder the final model reads (a refit fits its own)."""

    model: nn.Module
    state: TrainState
    report: MetricsReport
    encoder: Encoder


def train_model(config: ExperimentConfig, prep: Prepared, out: Path, resume: bool = False,
                log: Callable[[str], None] = print) -> Trained:
    """Build the configured model for prepared data and train it in ``out`` (layout.json, checkpoints, best
    weights, history.csv), choosing the epoch on the validation split (without one, every epoch runs and the
    last is kept); with ``train.refit``, train the final model on training + validation rows (:func:`refit`);
    then score the final model on the test split once. Shared by :func:`fit` and ``pepnet compare``."""
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
                      log=log, dist=ctx, sharded=sharded)
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
        return refit(config, prep, state, out / REFIT_DIR, log)
    model.load_state_dict(load_checkpoint(out / BEST, map_location=device))
    report = score(model, prep.encoded["test"], encoder, tc.eval_batch_size, device, ctx)
    return Trained(model, state, report, encoder)


def refit(config: ExperimentConfig, prep: Prepared, state: TrainState, out: Path,
          log: Callable[[str], None] = print) -> Trained:
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
    final = train_model(parse_config(tree, f"{config.name} (refit)"), rprep, out, log=log)
    return Trained(final.model, state, final.report, rprep.encoder)


def fit(config: ExperimentConfig | str | Path, out: str | Path, resume: bool = False,
        overrides: list[str] | None = None, log: Callable[[str], None] = print) -> Run:
    """Train the configured model; write the run directory ``out``; evaluate the best model on the test split."""
    out = Path(out)
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"--resume: {out} has no {CONFIG_FILE}; nothing to resume")
        config = load_config(out / CONFIG_FILE, overrides)
    elif not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    elif overrides:
        config = parse_config(config.to_dict(), "<config>", overrides)
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
    if resume and (out / "run.json").is_file():
        _check_same_data(out, prep)
    elif main:
        _write_run_info(out, config, prep)
    trained = train_model(config, prep, out, resume=resume, log=log)
    state, report = trained.state, trained.report
    if main:
        report.to_json(out / "metrics.json")
        report.to_csv(out / "metrics.csv")
    log(f"best epoch {state.best_epoch} (valid mean {tc.monitor} {state.best:.4f})"
        + ("; final model refit on training + validation rows" if tc.refit else "") + "; test metrics:")
    return Run(out, config, trained.encoder, trained.model, report)


def _write_run_info(out: Path, config: ExperimentConfig, prep: Prepared) -> None:
    import importlib.metadata as md

    versions = {}
    for pkg in ("pepnet", "torch", "numpy", "polars", "pyarrow", "pydantic"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    files = sorted({f for fr in prep.frames.values() for f in fr.files})
    info = {
        "seed": config.train.seed,
        "deterministic": config.train.deterministic,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_revision": _git_revision(),
        "data_fingerprints": _fingerprint(files),
        "split_fingerprints": _split_fingerprints(prep),
        "rows": {k: v.df.height for k, v in prep.frames.items()},
        "config": config.to_dict(),
    }
    atomic_write(out / "run.json", json.dumps(info, indent=1))


__all__ = ["DataError", "Prepared", "Run", "Trained", "encode_splits", "fit", "layout_from_encoder", "prepare", "refit",
           "refit_frames", "score", "train_model"]
