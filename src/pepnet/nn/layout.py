"""ModelLayout: everything a model needs to know about its inputs, as plain data (no encoder)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import read_json_as

GROUPS = ("general", "domain_side", "user_prior", "item_prior", "author_prior")


@dataclass(frozen=True)
class ModelLayout:
    """Input layout. Field indices count sparse fields first, then dense fields (as FeatureEmbedding emits them).

    num_embeddings: rows of the fused table; n_sparse / n_dense: field counts; tasks: task names;
    groups: group name -> field indices (general E, domain_side F_d, user/item/author priors);
    n_domains: number of domains seen in training (for models with domain-specific parameters);
    domain_field: index of the field holding the domain id, or None;
    oov_dropout: (sparse field index, its OOV row, probability) for fields with ``oov_dropout`` (training only).
    """

    num_embeddings: int
    n_sparse: int
    n_dense: int
    tasks: tuple[str, ...]
    groups: dict[str, list[int]] = field(default_factory=dict)
    n_domains: int = 1
    domain_field: int | None = None
    domain_offset: int = 0
    oov_dropout: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @classmethod
    def from_dict(cls, d: dict) -> ModelLayout:
        """Inverse of ``dataclasses.asdict`` (as stored in a run's layout.json)."""
        return cls(**{**d, "tasks": tuple(d["tasks"]), "groups": {k: list(v) for k, v in d["groups"].items()},
                      "oov_dropout": [tuple(t) for t in d.get("oov_dropout", [])]})

    @classmethod
    def read(cls, path: str | Path) -> ModelLayout:
        """The layout stored in a run's layout.json; a missing or damaged file raises DamagedFileError."""
        return read_json_as(path, "layout file", cls.from_dict)

    def group(self, name: str) -> list[int]:
        return list(self.groups.get(name, []))
