"""Serving export.

``export_run(run_dir, out_dir)`` writes

- ``model.pt2``: the best model as a ``torch.export`` ExportedProgram with a dynamic batch dimension,
  ``(sparse int64 [B, Fs], dense float32 [B, Fd]) -> logits float32 [B, T]``; it runs without pepnet's
  Python model code (``torch.export.load(path).module()``);
- ``encoder/``: the run's encoder, so raw rows are encoded exactly as in training;
- ``manifest.json``: tasks, input fields, versions, and the largest difference between the exported and
  the eager model on a verification batch (the export is refused if it exceeds 1e-5).

``Predictor(out_dir).predict(frame)`` encodes raw rows (a polars DataFrame or files) and returns
probabilities; it is what a serving process needs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch

from ..data.encoder import Encoder
from ..data.sources import Frame, read_files
from ..data.validate import validate
from ..fileio import atomic_write
from ..predictions import prediction_frame

MODEL_FILE = "model.pt2"
MANIFEST = "manifest.json"
TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The model could not be exported, or the exported program disagrees with the eager model."""


def _example_inputs(encoder: Encoder, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid inputs: every sparse id inside its own field's rows of the fused table."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([f.offset + torch.randint(0, f.size, (rows,), generator=g) for f in encoder.sparse_fields], 1) \
        if encoder.sparse_fields else torch.zeros(rows, 0, dtype=torch.long)
    dense = torch.randn(rows, len(encoder.dense_fields), generator=g)
    return sparse.long(), dense


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the best model of ``run_dir`` (see module docstring); returns ``out_dir``."""
    from ..run import Run

    run = Run.load(run_dir, device="cpu")
    model, encoder = run.model.eval(), run.encoder
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    example = _example_inputs(encoder, 64)
    try:
        program = torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch}))
    except Exception as exc:  # torch.export raises several error types
        raise ExportError(f"torch.export failed for model {run.config.model.name!r}: {exc}") from exc
    check = _example_inputs(encoder, 257, seed=1)
    with torch.no_grad():
        diff = float((program.module()(*check) - model(*check)).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"exported model differs from the eager model by {diff:.3g} (> {TOLERANCE})")
    torch.export.save(program, out / MODEL_FILE)
    encoder.save(out / "encoder")
    manifest = {
        "model": run.config.model.name,
        "tasks": encoder.task_names,
        "inputs": {
            "sparse": [{"name": f.name, "offset": f.offset, "size": f.size} for f in encoder.sparse_fields],
            "dense": [f.name for f in encoder.dense_fields],
        },
        "output": "logits float32 [B, T]; probability = sigmoid(logit)",
        "max_abs_diff_vs_eager": diff,
        "torch": torch.__version__,
        "source_run": str(Path(run_dir).resolve()),
    }
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


class Predictor:
    """Scores raw rows with an exported model: encoder + ExportedProgram, no training code."""

    def __init__(self, export_dir: str | Path):
        d = Path(export_dir)
        if not (d / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{d} is not an export directory (no {MODEL_FILE}); run `pepnet export` first")
        self.encoder = Encoder.load(d / "encoder")
        self.module = torch.export.load(d / MODEL_FILE).module()
        self.manifest = json.loads((d / MANIFEST).read_text())

    @torch.no_grad()
    def predict(self, data: pl.DataFrame | str | list[str], batch_size: int = 65536, keep: Sequence[str] = (),
                auxiliary: bool = False) -> pl.DataFrame:
        """Probabilities ``p_<task>`` of the reported tasks (all tasks with ``auxiliary``) for every row, in input
        order, beside the domain, user, item and time columns and the ``keep`` columns."""
        frame = read_files([data] if isinstance(data, str) else data) if not isinstance(data, pl.DataFrame) \
            else Frame(data.with_columns(pl.lit(0, dtype=pl.UInt16).alias("__file"),
                                         pl.int_range(pl.len(), dtype=pl.Int64).alias("__row")), ["<frame>"])
        schema = self.encoder.schema
        validate(frame, schema, labels=False)
        enc = self.encoder.transform(frame.df)
        sparse, dense = torch.from_numpy(enc.sparse), torch.from_numpy(enc.dense)
        probs = np.concatenate([
            torch.sigmoid(self.module(sparse[i:i + batch_size], dense[i:i + batch_size])).numpy()
            for i in range(0, len(enc), batch_size)
        ]) if len(enc) else np.zeros((0, len(self.encoder.task_names)), dtype=np.float32)
        return prediction_frame(frame.df, self.encoder, probs, keep, auxiliary)
