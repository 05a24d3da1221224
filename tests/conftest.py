"""Small shared fixtures: a tiny model layout with disjoint feature groups, a batch for it, and a tiny
synthetic parquet file with a config that reads it."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from pepnet.config import ModelConfig
from pepnet.nn import ModelLayout, build_model

# Tiny layout: 6 sparse fields of VOCAB rows each, then 1 dense field. Groups are disjoint on purpose,
# so a gradient or output change can be attributed to exactly one group.
VOCAB = 5
SPARSE = ("g0", "g1", "domain", "user", "item", "author")
GROUPS = {
    "general": [0, 1, 6],       # two sparse fields and the dense field
    "domain_side": [2],
    "user_prior": [3],
    "item_prior": [4],
    "author_prior": [5],
}
TASKS = ("click", "like")


def tiny_layout() -> ModelLayout:
    return ModelLayout(num_embeddings=VOCAB * len(SPARSE), n_sparse=len(SPARSE), n_dense=1, tasks=TASKS,
                       groups={k: list(v) for k, v in GROUPS.items()}, n_domains=VOCAB - 1, domain_field=2,
                       domain_offset=2 * VOCAB)


def tiny_model(seed: int = 0, **model_options) -> torch.nn.Module:
    """A PEPNet (or ``name=...``) on :func:`tiny_layout` with small towers; options override ModelConfig."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"embedding_dim": 4, "hidden_units": [8, 6], "gate_hidden": 8, **model_options})
    return build_model(tiny_layout(), cfg)


def tiny_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(sparse int64 [n, 6] with ids offset into the fused table, dense float32 [n, 1]); every id is a
    real vocabulary row (1..VOCAB-1), never OOV."""
    g = torch.Generator().manual_seed(seed)
    local = torch.randint(1, VOCAB, (n, len(SPARSE)), generator=g)
    offsets = torch.arange(len(SPARSE)) * VOCAB
    return local + offsets, torch.randn(n, 1, generator=g)


def field_rows(field: int) -> slice:
    """Rows of the fused table owned by sparse field ``field``."""
    return slice(field * VOCAB, (field + 1) * VOCAB)


@pytest.fixture
def tiny():
    """The tiny-model helpers as one namespace (test files cannot import conftest under importlib mode)."""
    return SimpleNamespace(layout=tiny_layout, model=tiny_model, batch=tiny_batch, rows=field_rows, VOCAB=VOCAB,
                           GROUPS=GROUPS, TASKS=TASKS)


# ----------------------------------------------------------------------------- tiny data on disk

SYNTHETIC_SCHEMA = {
    "domain": "domain_id",
    "user": "user_id",
    "item": "item_id",
    "time": "time",
    "labels": {"click": {"column": "click"}, "like": {"column": "like"}},
    "features": [
        {"name": "user_id"}, {"name": "item_id"}, {"name": "author_id"}, {"name": "domain_id"},
        {"name": "user_segment"}, {"name": "item_category"}, {"name": "d0", "kind": "dense"},
    ],
    "stats": [
        {"name": "domain_click", "keys": ["domain_id"], "stat": "rate", "target": "click"},
        {"name": "user_click", "keys": ["user_id"], "stat": "rate", "target": "click"},
    ],
    "groups": {
        "general": ["user_id", "item_id", "author_id", "domain_id", "user_segment", "item_category", "d0"],
        "domain_side": ["domain_id", "domain_click"],
        "user_prior": ["user_id", "user_segment", "user_click"],
        "item_prior": ["item_id", "item_category"],
        "author_prior": ["author_id"],
    },
}


def tiny_config(files: list[str] | None = None, epochs: int = 1, **synthetic) -> dict:
    """A raw config tree (dict) for a small fast run: files if given, else the built-in synthetic generator."""
    data: dict = {"split": {"method": "chronological", "fractions": [0.7, 0.15, 0.15]}}
    if files:
        data["files"] = files
    else:
        data["dataset"] = "synthetic"
        data["synthetic"] = {"n_rows": 3000, "n_users": 200, "n_items": 300, "n_authors": 50, "n_dense": 1,
                             "seed": 1, **synthetic}
    return {
        "name": "tiny",
        "data": data,
        "schema": copy.deepcopy(SYNTHETIC_SCHEMA),
        "model": {"embedding_dim": 4, "hidden_units": [16, 8], "gate_hidden": 8},
        "train": {"epochs": epochs, "batch_size": 256, "eval_batch_size": 4096, "progress": False, "seed": 3,
                  "threads": 1},
    }


@pytest.fixture(scope="session")
def tiny_config_tree():
    """:func:`tiny_config` itself: call it to get a fresh raw config tree."""
    return tiny_config


@pytest.fixture(scope="session")
def synthetic_parquet(tmp_path_factory) -> Path:
    """3,000 rows of the synthetic generator (2 tasks, 3 domains, 1 dense column) as one parquet file."""
    from pepnet.datasets.synthetic import SyntheticSpec, write

    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write(SyntheticSpec(n_rows=3000, n_users=200, n_items=300, n_authors=50, n_dense=1, seed=1), path, progress=False)
    return path


@pytest.fixture
def tiny_config_file(tmp_path, synthetic_parquet) -> Path:
    """A YAML config in tmp_path reading :func:`synthetic_parquet`."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config([str(synthetic_parquet)])))
    return path


# ----------------------------------------------------------------------------- a tiny run, exported

TINY_SYNTHETIC = ["data.synthetic.n_rows=3000", "data.synthetic.n_users=300", "data.synthetic.n_items=500",
                  "train.epochs=1", "train.progress=false", "model.hidden_units=[16, 8]"]


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> SimpleNamespace:
    """The bundled synthetic config fitted small (``run``: run directory) and exported (``export``), once per
    session: fitting and ``torch.export`` are the slow part of the export and serving tests."""
    import pepnet
    from pepnet.cli import resolve_config
    from pepnet.export import export_run

    tmp = tmp_path_factory.mktemp("tiny_export")
    pepnet.fit(resolve_config("synthetic"), tmp / "run", overrides=TINY_SYNTHETIC, log=lambda _: None)
    export_run(tmp / "run", tmp / "export")
    return SimpleNamespace(run=tmp / "run", export=tmp / "export")
