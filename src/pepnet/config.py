"""Experiment configuration: one YAML file validated by pydantic.

Every section forbids unknown keys; a typo is reported with the closest valid key
(``ConfigError: model.embeding_dim: unknown key; did you mean 'embedding_dim'?``).
``--set a.b=value`` overrides are applied before validation (values parsed as YAML).
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# train.compile=auto compiles runs of at least this many optimiser steps: compiling costs ~20 s on a 2-core CPU,
# which a step made 1.1-1.25x faster earns back after several hundred steps (BENCHMARKS.md, CPU); here, not in
# train/runtime.py (which applies it), so that train.compile's description can name it without importing torch
AUTO_COMPILE_STEPS = 1000


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and what was expected."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with two changes: a key repeated in one mapping is an error naming the key and the
    line (PyYAML keeps the last value silently), and ``1e-3`` is a float as in YAML 1.2 (PyYAML reads a
    number without a dot as text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{key_node.start_mark.name}, line {line}: key {key!r} repeats the key of line "
                                  f"{seen[key]} in the same mapping; expected each key once")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def yaml_load(text: str, source: str = "<string>") -> Any:
    """Parse YAML with :class:`_Loader` (duplicate keys refused, ``1e-3`` a float); ``source`` names it."""
    loader = _Loader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Strict(BaseModel):
    # strict: a value of another type is refused, never converted (``batch_size: true`` is not 1, ``"3"`` is
    # not 3); an integer is still accepted where a float is expected
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True, strict=True)


# --------------------------------------------------------------------------- schema


class LabelSpec(_Strict):
    """How one task's 0/1 label is read from a column.

    Without ``threshold`` the column must hold 0, 1 or null. With it, the label is
    ``value >= threshold``; values listed in ``missing_values`` (and nulls) mean "no label".
    With ``drop_missing`` a row without this label is removed before the split (every task, every
    statistic), and the number of rows removed is logged.
    An ``auxiliary`` task is trained (its loss counts, it has its own tower and is predicted) but is not
    reported: it is left out of the metrics, model selection and ``pepnet compare``.
    """

    column: str
    threshold: float | None = None
    missing_values: list[float] = Field(default_factory=list)
    drop_missing: bool = Field(False, description="remove the rows without this label before the split (the count "
                               "is logged); e.g. Ciao's rating 0, which is not a rating")
    weight: float = Field(1.0, ge=0.0, description="weight of this task's loss in the sum")
    auxiliary: bool = Field(False, description="trained but not reported (no metrics, not used to select the epoch); "
                            "e.g. rating >= 3 and rating >= 5 beside a task rating >= 4")


class FeatureSpec(_Strict):
    """A raw column used as a feature.

    ``sparse``: categorical; a vocabulary of values seen at least ``min_count`` times in the
    training split (index 0 = out of vocabulary / null), or ``hash_buckets`` buckets.
    ``dense``: numeric; standardised with training mean and std (optionally after log1p).
    """

    name: str
    column: str | None = None
    kind: Literal["sparse", "dense"] = "sparse"
    min_count: int = Field(1, ge=1)
    hash_buckets: int | None = Field(None, gt=0)
    log1p: bool = False
    oov_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="training only: probability that an id of this "
        "feature is replaced by its out-of-vocabulary row, so that row learns the cold-start case",
    )
    oov_first_rows: int = Field(
        0,
        ge=0,
        description="training only: a row whose value has fewer than this many "
        "earlier training rows uses the out-of-vocabulary row, as a value first seen after "
        "training does, so that row learns the cold-start case from first appearances",
    )
    reserve: int = Field(
        0,
        ge=0,
        description="embedding rows kept free for values first seen after fitting "
        "(online training grows the vocabulary into them; once full, new values hash into them)",
    )

    @property
    def source(self) -> str:
        return self.column or self.name


class StatFeature(_Strict):
    """A statistic of the past computed on the training split only (no leakage).

    ``count``: number of earlier rows with the same ``keys``; ``rate``: smoothed mean of a task's
    label over them (``target`` = task name); ``mean``: smoothed mean of a numeric column.
    With a time column, training rows see only rows strictly earlier in time; evaluation rows see
    the whole training split. Without one, training rows use leave-one-out totals.
    ``realtime`` (counts only, needs the time column): evaluation rows also count the rows of their own
    frame that are strictly earlier in time, as a serving system's counters would; a count reads no
    label, so no label of the evaluated period leaks. Training rows already count every earlier row.
    The value is bucketised into ``buckets`` quantile buckets (a sparse field) or, with
    ``as_dense``, standardised (a dense field).
    """

    name: str
    keys: list[str] = Field(min_length=1)
    stat: Literal["count", "rate", "mean"] = "count"
    target: str | None = None
    prior: float = Field(20.0, ge=0.0, description="pseudo-count of the smoothing towards the global mean")
    buckets: int = Field(16, ge=2)
    as_dense: bool = False
    realtime: bool = Field(
        False,
        description="count only: evaluation rows also count the strictly earlier rows "
        "of their own frame (the evaluated split or scored file so far; one row group when streamed "
        "from parquet), not only the training split; reads no label. False: the count stops at "
        "the end of the training split",
    )

    @model_validator(mode="after")
    def _target_needed(self) -> StatFeature:
        if self.stat in ("rate", "mean") and not self.target:
            raise ValueError(f"stat feature {self.name!r}: stat {self.stat!r} needs a 'target'")
        if self.stat == "count" and self.target:
            raise ValueError(f"stat feature {self.name!r}: stat 'count' takes no 'target'")
        if self.realtime and self.stat != "count":
            raise ValueError(
                f"stat feature {self.name!r}: realtime is for stat 'count' only (a {self.stat!r} "
                "of the evaluated period would read its labels)"
            )
        return self


class TimeFeature(_Strict):
    """A calendar feature of the time column (UTC), used as a sparse field."""

    name: str
    part: Literal["hour", "weekday", "month", "year"]


class Groups(_Strict):
    """Feature groups of the paper, by feature name. A feature may appear in several groups."""

    general: list[str] = Field(min_length=1, description="E: the general features every tower sees")
    domain_side: list[str] = Field(min_length=1, description="F_d: domain id and domain statistics (EPNet)")
    user_prior: list[str] = Field(default_factory=list, description="F_u: user id and user statistics (PPNet)")
    item_prior: list[str] = Field(default_factory=list, description="F_i: item id and item statistics (PPNet)")
    author_prior: list[str] = Field(default_factory=list, description="F_a: author / context features (PPNet)")

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for g in (self.general, self.domain_side, self.user_prior, self.item_prior, self.author_prior):
            for n in g:
                seen.setdefault(n, None)
        return list(seen)


class SchemaConfig(_Strict):
    domain: str = Field(description="column holding the domain (scenario) of each row")
    user: str = Field(description="column of the user key; GAUC groups by it")
    time: str | None = Field(
        None,
        description="column of the event time: unix seconds (integer), a datetime, or "
        "ISO 8601 text (2024-05-01, 2024-05-01 13:45:00, 2024-05-01T13:45:00+08:00; an offset "
        "is converted to UTC)",
    )
    item: str | None = Field(
        None,
        description="column of the item key; predictions carry it (with the domain, user "
        "and time columns) so that their rows join back to the input",
    )
    labels: dict[str, LabelSpec] = Field(min_length=1, description="task name -> label")
    features: list[FeatureSpec] = Field(default_factory=list)
    stats: list[StatFeature] = Field(default_factory=list)
    time_features: list[TimeFeature] = Field(default_factory=list)
    groups: Groups

    @field_validator("labels", mode="before")
    @classmethod
    def _label_shorthand(cls, v: Any) -> Any:
        # `labels: {click: is_click}` is short for `{click: {column: is_click}}`
        if isinstance(v, dict):
            return {k: ({"column": s} if isinstance(s, str) else s) for k, s in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SchemaConfig:
        names = [f.name for f in self.features] + [s.name for s in self.stats] + [t.name for t in self.time_features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feature names must be unique; repeated: {dup}")
        known = set(names)
        for group, members in self.groups.model_dump().items():
            for n in members:
                if n not in known:
                    hint = difflib.get_close_matches(n, sorted(known), n=1)
                    extra = f"; did you mean {hint[0]!r}?" if hint else ""
                    raise ValueError(f"groups.{group}: {n!r} is not a declared feature{extra}")
        for s in self.stats:
            if s.stat == "rate" and s.target not in self.labels:
                raise ValueError(
                    f"stat feature {s.name!r}: target {s.target!r} is not a task (tasks: {list(self.labels)})"
                )
        if self.time_features and not self.time:
            raise ValueError("time_features need schema.time (the time column)")
        realtime = [s.name for s in self.stats if s.realtime]
        if realtime and not self.time:
            raise ValueError(f"stat features {realtime}: realtime counts need schema.time (the time column)")
        if not self.reported_tasks():
            raise ValueError("every label is auxiliary: at least one task must be reported")
        return self

    def task_names(self) -> list[str]:
        """Every task the model predicts, auxiliary ones included, in label order."""
        return list(self.labels)

    def task_weights(self) -> list[float]:
        """Each task's loss weight, in the order of :meth:`task_names`."""
        return [spec.weight for spec in self.labels.values()]

    def reported_tasks(self) -> list[str]:
        """The tasks that are scored (metrics, model selection, comparisons): the non-auxiliary labels."""
        return [t for t, spec in self.labels.items() if not spec.auxiliary]


# --------------------------------------------------------------------------- data


class SideTable(_Strict):
    """A table joined to the interactions on ``key`` (e.g. a user table); its columns become available."""

    path: str
    key: str
    columns: list[str] | None = None


class SplitConfig(_Strict):
    method: Literal["chronological", "random", "files"] = "chronological"
    fractions: tuple[float, float, float] = Field((0.8, 0.1, 0.1), strict=False)  # a YAML list is a tuple here
    seed: int = Field(0, ge=0, lt=2**63)
    valid_files: list[str] = Field(default_factory=list)
    test_files: list[str] = Field(default_factory=list)
    test_stats: Literal["train", "train+valid"] = Field(
        "train",
        description="rows whose statistics of the past the test split sees: the training split, or the "
        "training and validation splits (all rows before the test period; no test label is ever used)",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or v[0] <= 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0, train > 0 and sum to 1; got {list(v)}")
        return v


class SyntheticData(_Strict):
    """Options of the built-in synthetic generator (``data.dataset: synthetic``)."""

    n_rows: int = Field(200_000, gt=0)
    n_users: int = Field(5_000, gt=0)
    n_items: int = Field(20_000, gt=0)
    n_authors: int = Field(1_000, gt=0)
    n_domains: int = Field(3, gt=0)
    tasks: list[str] = Field(default_factory=lambda: ["click", "like"])
    extra_sparse: list[int] = Field(default_factory=list)
    n_dense: int = Field(2, ge=0)
    signal: float = Field(1.0, ge=0.0)
    missing_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drift: float = Field(0.0, ge=0.0)
    n_periods: int = Field(1, ge=1)
    seed: int = 0
    domain_shares: list[float] = Field(
        default_factory=list,
        description="share of the rows in each domain "
        "(normalised; empty: shares proportional to (d+1)^-0.6, domain 0 the largest)",
    )
    task_rates: list[float] = Field(
        default_factory=list, description="marginal positive rate of each task (empty: 0.2, 0.05, 0.029, ...)"
    )
    domain_flip: float = Field(
        0.0,
        description="effect of d0 on every task: +domain_flip in domain 0, "
        "-domain_flip in the others (a domain seesaw)",
    )
    task_flip: float = Field(
        0.0,
        description="effect of d1: +task_flip on the first task, -task_flip on the others (conflicting task drivers)",
    )
    prior_gate: float = Field(
        0.0,
        description="effect of d2: prior_gate * a_u * b_i, with per-user and per-item "
        "sensitivities a_u, b_i ~ Exponential(1) (how much d2 matters depends on the user "
        "and the item)",
    )


class DataConfig(_Strict):
    dataset: Literal["ciao", "synthetic"] | None = Field(
        None, description="a built-in data set instead of files: 'ciao' (vendored) or 'synthetic' (generated)"
    )
    files: list[str] = Field(
        default_factory=list,
        description="parquet or CSV files (relative to the working directory; "
        "${NAME} in a data path is the environment variable NAME)",
    )
    side_tables: list[SideTable] = Field(default_factory=list)
    split: SplitConfig = Field(default_factory=SplitConfig)
    synthetic: SyntheticData = Field(default_factory=SyntheticData)

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if not self.files and self.dataset is None:
            raise ValueError("give data.files or data.dataset")
        if self.split.method == "files" and not (self.split.valid_files and self.split.test_files):
            raise ValueError("split.method 'files' needs split.valid_files and split.test_files")
        return self


# --------------------------------------------------------------------------- model and training


PriorGroup = Literal["user_prior", "item_prior", "author_prior"]
PRIOR_GROUPS: tuple[PriorGroup, ...] = ("user_prior", "item_prior", "author_prior")


class ModelConfig(_Strict):
    """Model hyper-parameters. Defaults are the paper's where it gives one."""

    name: str = Field("pepnet", description="model from the registry (pepnet, epnet_only, ppnet_only, ...)")
    embedding_dim: int = Field(16, gt=0, description="paper: 16 is enough")
    hidden_units: list[int] = Field(default_factory=lambda: [512, 256, 128], min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    gamma: float = Field(2.0, gt=0.0, description="Gate NU scale: delta in [0, gamma]")
    gate_hidden: int = Field(64, gt=0, description="hidden width of every Gate NU")
    epnet_granularity: Literal["element", "field"] = Field(
        "element", description="one EPNet gate per embedding element or per field"
    )
    stop_gradient: bool = Field(True, description="no gradient from the gates into the general embeddings E / O_ep")
    ppnet_gate_on: Literal["input", "output"] = Field(
        "input", description="PPNet gate scales each layer's input (paper) or output"
    )
    ppnet_gate_output_layer: bool = Field(
        False,
        description="PPNet also gates the input of each task's output "
        "layer (the last hidden layer's output), as the paper gates every DNN layer; "
        "with ppnet_gate_on: output that input is already gated",
    )
    ppnet_gate_mode: Literal["split", "per_task"] = Field(
        "split", description="one gate split into T slices, or one gate per task"
    )
    ppnet_priors: list[PriorGroup] = Field(
        default_factory=lambda: list(PRIOR_GROUPS), description="prior groups feeding PPNet"
    )
    domain_stats: bool = Field(True, description="keep the statistics in F_d (False: domain id only)")
    options: dict[str, Any] = Field(default_factory=dict, description="model-specific options (baselines)")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from .nn.registry import MODELS  # imported here: the registry imports this module

        if v not in MODELS:
            hint = difflib.get_close_matches(v, list(MODELS), n=1)
            raise ValueError(
                f"model {v!r} is unknown"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f"; available: {', '.join(sorted(MODELS))}"
            )
        return v

    @field_validator("hidden_units")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h <= 0 for h in v):
            raise ValueError(f"hidden_units must be positive; got {v}")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(5, gt=0)
    batch_size: int = Field(1024, gt=0)
    eval_batch_size: int = Field(16384, gt=0)
    embedding_lr: float = Field(0.05, gt=0.0, description="Adagrad learning rate of the embedding table")
    dense_lr: float = Field(1e-3, gt=0.0, description="Adam learning rate of every dense weight")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="the dense (Adam) learning rate over "
        "training: constant, or decayed linearly from dense_lr to 0 at "
        "the last step of train.epochs epochs",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    ema_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="exponential moving average of the dense (Adam) "
        "weights, updated every step with decay min(ema_decay, (1 + step) / (10 + step)); "
        "validation, the best weights and the final model use the average (0: off)",
    )
    patience: int = Field(2, ge=0, description="epochs without improvement of validation mean GAUC before stopping")
    refit: bool = Field(
        False,
        description="after choosing the epoch on the validation split, train a fresh model "
        "(same seed) on training + validation rows for that many epochs, with vocabularies and "
        "statistics fitted on them too, and score the test split with it (the run's final model)",
    )
    monitor: Literal["gauc", "auc"] = "gauc"
    seed: int = Field(42, ge=0, lt=2**63, description="seed of every random draw (0 <= seed < 2**63)")
    deterministic: bool = False
    threads: int | None = Field(None, gt=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$", description="auto, cpu, cuda or cuda:N")
    on_nan: Literal["error", "skip"] = Field(
        "error", description="a NaN/inf loss stops training, or the batch is skipped"
    )
    progress: bool = True
    checkpoint_every: int = Field(
        0, ge=0, description="also checkpoint every N steps within an epoch (0: only at epoch end)"
    )
    memory_limit_gb: float | None = Field(
        None,
        gt=0,
        description="memory budget of the pre-training memory check "
        "(default: available RAM, or free GPU memory on CUDA)",
    )
    amp: Literal["none", "bf16"] = Field(
        "none",
        description="mixed precision: bf16 autocast of the forward pass (CUDA; on CPU it runs but is rarely faster)",
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile the model's dense part (gates and towers); auto: when a compiler exists "
        f"(a C++ compiler on CPU, Triton on CUDA) and the run trains at least {AUTO_COMPILE_STEPS} steps",
    )
    prefetch: int = Field(
        2,
        ge=0,
        description="batches prepared ahead in a background thread (pinned memory, "
        "non-blocking copies) when training on a GPU; 0: off; ignored on CPU",
    )
    data_on_device: bool = Field(
        False,
        description="move the whole training split to the training device once "
        "(GPU: no per-batch host copies; needs the split to fit in GPU memory)",
    )
    embedding_sharding: Literal["none", "auto", "table_wise", "column_wise", "row_wise"] = Field(
        "none",
        description="shard the embedding tables across the torchrun processes with TorchRec (optional "
        "extra; 2+ processes): none = one replicated fused table; auto = TorchRec's planner picks; or force one "
        "layout (row_wise needs GPUs). See docs/distributed.md",
    )


GBDT_GRID: dict[str, tuple[float | int, ...]] = {
    "learning_rate": (0.05, 0.1),
    "max_leaf_nodes": (7, 31, 127),
    "min_samples_leaf": (20, 200),
}
"""The settings ``gbdt: auto`` tries (12 in all, rounds chosen on validation for each): small to large trees,
each with few or many rows per leaf, at two learning rates."""


class GBDTConfig(_Strict):
    """The GBDT reference model of ``pepnet compare`` (model ``gbdt``): one scikit-learn
    HistGradientBoostingClassifier per reported task on the statistics of the past (``schema.stats``).

    The number of boosting rounds is chosen per task on validation AUC, up to ``max_iter``. The defaults are
    scikit-learn's, except the learning rate (0.05 instead of 0.1). ``gbdt: auto`` (short for ``gbdt: {tune:
    true}``) also chooses the learning rate, leaves and rows per leaf per task on validation AUC, from
    :data:`GBDT_GRID`."""

    max_iter: int = Field(
        300, gt=0, description="the most boosting rounds (the best number is chosen on validation AUC)"
    )
    learning_rate: float = Field(0.05, gt=0, description="shrinkage of each tree")
    max_leaf_nodes: int = Field(31, ge=2, description="leaves per tree")
    min_samples_leaf: int = Field(20, ge=1, description="fewest training rows in a leaf")
    l2_regularization: float = Field(0.0, ge=0, description="L2 penalty on the leaf values")
    tune: bool = Field(
        False,
        description="choose learning_rate, max_leaf_nodes and min_samples_leaf per task on "
        "validation AUC from a 12-point grid (2 x 3 x 2: 0.05/0.1, 7/31/127, 20/200); "
        "`gbdt: auto` sets it",
    )

    def grid_point(self) -> dict[str, float | int]:
        """The values of this setting's :data:`GBDT_GRID` keys."""
        return {k: getattr(self, k) for k in GBDT_GRID}


class ExperimentConfig(_Strict):
    name: str = "experiment"
    data: DataConfig
    schema_: SchemaConfig = Field(alias="schema")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    gbdt: GBDTConfig = Field(default_factory=GBDTConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- loading


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class reached by following ``loc`` (field names and indices) from ``model``."""
    current: Any = model
    dict_key = False  # the next part is a key of a dict-valued field (e.g. a task name under labels)
    for part in loc:
        if dict_key:
            dict_key = False
            continue
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        current = _unwrap(field.annotation)
        dict_key = get_origin(field.annotation) is dict
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """The BaseModel inside ``list[X]``, ``dict[str, X]``, ``X | None``; else ``tp``."""
    for arg in get_args(tp) if get_origin(tp) is not None else ():
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return tp


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def format_validation_error(err: ValidationError, root: type[BaseModel], source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), _field_names(parent), n=1, cutoff=0.5) if parent else []
            valid = f"; valid keys: {', '.join(_field_names(parent))}" if parent else ""
            lines.append(f"  {where}: unknown key" + (f"; did you mean {hint[0]!r}?" if hint else valid))
        elif e["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  {where}: {e['msg']}{got_s}")
    if len(lines) == 2:  # a single problem fits on one line
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
            continue
        if p not in node or node[p] is None:
            node[p] = {}
        node = node[p]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a raw config tree, in place."""
    labels = (tree.get("schema") or {}).get("labels")
    if overrides and isinstance(labels, dict):  # expand `task: column` shorthands so `labels.task.weight=2` works
        tree["schema"]["labels"] = {k: ({"column": v} if isinstance(v, str) else v) for k, v in labels.items()}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw, f"override {item!r}")
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from None
        try:
            _set_dotted(tree, key.strip(), value)
        except (IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"override {item!r}: cannot set {key!r}: {exc}") from None
    return tree


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_data_paths(value: Any, source: str) -> Any:
    """``${NAME}`` in the strings of the ``data`` section replaced by the environment variable NAME (the bundled
    KuaiRand and Ali-CCP configs read their files from a folder the user names this way); an unset variable is
    an error that names it."""
    if isinstance(value, dict):
        return {k: expand_data_paths(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_data_paths(v, source) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{source}: data path {value!r} uses ${{{name}}}, which is not set: set the environment "
                f"variable {name} to the folder that holds the data, or give the files with --set"
            )
        return os.environ[name]

    return _ENV_VAR.sub(lookup, value)


def parse_config(
    tree: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> ExperimentConfig:
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(tree).__name__}")
    if tree.get("gbdt") == "auto":  # so that --set gbdt.max_iter=... applies to it
        tree = {**tree, "gbdt": {"tune": True}}
    apply_overrides(tree, overrides)
    if "data" in tree:
        tree["data"] = expand_data_paths(tree["data"], source)
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, ExperimentConfig, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        bundled = Path(__file__).parent / "configs" / path.name
        if path.parent == Path(".") and bundled.is_file():
            path = bundled
        else:
            raise ConfigError(f"config file {path} does not exist")
    try:
        tree = yaml_load(path.read_text(), str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(tree or {}, str(path), overrides)


def as_config(config: ExperimentConfig | str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """A config given as an object or as the path of a YAML file, with ``--set`` overrides applied (the one
    place that resolves them for ``fit``, ``compare`` and ``stream``)."""
    if not isinstance(config, ExperimentConfig):
        return load_config(config, overrides)
    if overrides:
        return parse_config(config.to_dict(), "<config>", overrides)
    return config


__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FeatureSpec",
    "GBDTConfig",
    "Groups",
    "LabelSpec",
    "ModelConfig",
    "SchemaConfig",
    "SideTable",
    "SplitConfig",
    "StatFeature",
    "SyntheticData",
    "TimeFeature",
    "TrainConfig",
    "as_config",
    "load_config",
    "parse_config",
]
