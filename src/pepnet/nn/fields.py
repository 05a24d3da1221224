"""FieldSelect: a group of fields taken out of an embedded batch."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FieldSelect(nn.Module):
    """emb float [B, F, d] -> float [B, len(fields), d]: the fields ``fields`` (indices into F), in that order.

    Taken as slices of consecutive fields joined by one ``cat``, not by ``index_select``: a slice's backward adds its
    gradient into a fixed range, where index_select's backward is an ``index_add`` that a compiled graph runs with
    atomic adds (bundled Ciao config, batch 1024: 1.2 ms of a 54 ms training step for its three groups, against
    0.55 ms for the slices' forward and backward).
    """

    def __init__(self, fields: Sequence[int]):
        super().__init__()
        self.fields = tuple(int(f) for f in fields)
        self.runs: list[tuple[int, int]] = []  # [start, stop) of each run of consecutive fields
        for f in self.fields:
            if self.runs and self.runs[-1][1] == f:
                self.runs[-1] = (self.runs[-1][0], f + 1)
            else:
                self.runs.append((f, f + 1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        parts = [emb[:, start:stop] for start, stop in self.runs] or [emb[:, :0]]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"fields={list(self.fields)}"
