"""Data preparation: load, validate, split and encode the configured data once (:func:`prepare`), and the
model's input layout from the fitted encoder (:func:`layout_from_encoder`).

:class:`Prepared` holds the splits as frames and encoded arrays with the fitted encoder; ``pepnet fit`` and
``pepnet compare`` train every model on it. With ``split.test_stats: train+valid`` the test split is encoded by
a copy of the encoder whose statistics of the past also count the validation rows; with ``train.refit`` the
training and validation rows together form the final model's training split (:meth:`Prepared.for_refit`).
"""
from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import ExperimentConfig, ModelConfig
from .data.encoder import EncodedData, Encoder, transform
from .data.sources import Frame, concat_frames, load_data
from .data.split import split_frame
from .data.validate import validated
from .errors import DataWarning
from .nn import ModelLayout


def layout_from_encoder(encoder: Encoder, cfg: ModelConfig, n_domains: int) -> ModelLayout:
    """The model's input layout from a fitted encoder (group names -> field indices)."""
    schema = encoder.schema
    groups = {g: encoder.group(g) for g in ("general", "domain_side", "user_prior", "item_prior", "author_prior")}
    domain_fields = [encoder.field_index(f.name) for f in schema.features
                     if f.source == schema.domain and f.kind == "sparse"]
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


def _check_labels(name: str, data: EncodedData, tasks: list[str]) -> None:
    for t, task in enumerate(tasks):
        y = data.labels[:, t]
        y = y[~np.isnan(y)]
        if y.size == 0 or y.min() == y.max():
            what = "no labels" if y.size == 0 else f"only {'positive' if y[0] == 1 else 'negative'} labels"
            warnings.warn(f"the {name} split has {what} for task {task!r}; its AUC there is undefined", DataWarning,
                          stacklevel=3)


@dataclass
class Prepared:
    """Data ready for training: the splits as frames and encoded arrays, and the fitted encoder."""

    frames: dict[str, Frame]
    encoded: dict[str, EncodedData]
    encoder: Encoder
    test_encoder: Encoder | None = None  # the encoder of the test split when its statistics also count validation rows
    refit_prep: Prepared | None = None  # train.refit's splits, encoded once (see for_refit)

    def for_refit(self, config: ExperimentConfig) -> Prepared:
        """``train.refit``'s data: training then validation rows as the training split, with an encoder fitted
        on them, and the test split; encoded on the first call and kept (``pepnet compare`` refits many models)."""
        if self.refit_prep is None:
            self.refit_prep = encode_splits(config, refit_frames(self.frames))
        return self.refit_prep

    def encoder_for(self, split: str) -> Encoder:
        """The encoder that scores ``split``: ``test_encoder`` for the test split when there is one (its
        statistics also count the validation rows), else the training encoder."""
        return self.test_encoder if split == "test" and self.test_encoder else self.encoder


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
    start = time.perf_counter()
    prep = encode_splits(config, frames, encoder, splits)
    log(f"encoded {', '.join(prep.encoded)} in {time.perf_counter() - start:.1f}s")
    return prep


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
        test_encoder.past.update(frames["valid"].df)
    prep = Prepared(frames, {}, encoder, test_encoder)
    prep.encoded.update({k: transform(prep.encoder_for(k), v, training=(k == "train"))
                         for k, v in frames.items() if splits is None or k in splits})
    for name in prep.encoded:
        _check_labels(name, prep.encoded[name], encoder.task_names)
    for name in [k for k in ("valid", "test") if k in prep.encoded]:
        encoder.warn_unseen_domains(frames[name].df, f"the {name} split")
    return prep


__all__ = ["Prepared", "encode_splits", "layout_from_encoder", "prepare", "refit_frames", "transform"]
