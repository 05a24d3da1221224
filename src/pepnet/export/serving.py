"""Serving export.

``export_run(run_dir, out_dir)`` writes

- ``model.pt2``: the best model as a ``torch.export`` ExportedProgram with a dynamic batch dimension,
  ``(sparse int64 [B, Fs], dense float32 [B, Fd]) -> logits float32 [B, T]``; it runs without pepnet's
  Python model code (``torch.export.load(path).module()``);
- ``encoder/``: the run's encoder, so raw rows are encoded exactly as in training;
- ``manifest.json``: tasks, input fields, versions, the largest difference between the exported and
  the eager model on a verification batch (the export is refused if it exceeds 1e-5), and the sha256 of
  every other file of the export (``files``), verified when a Predictor loads it.

``Predictor(out_dir).predict(frame)`` encodes raw rows (a polars DataFrame or files) and returns
probabilities; it is what a serving process needs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ..data.encoder import Encoder
from ..data.sources import Frame, read_files
from ..data.validate import validate
from ..fileio import atomic_write, read_json
from ..provenance import file_sha256
from .archive import ExportError, load_program

MODEL_FILE = "model.pt2"
MANIFEST = "manifest.json"
TOLERANCE = 1e-5


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
        "files": file_digests(out),
    }
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


def file_digests(export_dir: Path) -> dict[str, str]:
    """sha256 of every file of an export but the manifest, by path relative to ``export_dir``."""
    return {p.relative_to(export_dir).as_posix(): file_sha256(p) for p in sorted(export_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}


def verify_export(export_dir: Path) -> dict:
    """The manifest of ``export_dir`` after checking the sha256 of every file it lists (a damaged, truncated or
    replaced file raises ExportError naming it)."""
    manifest = read_json(export_dir / MANIFEST, "export manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise ExportError(f"{export_dir / MANIFEST} lists no file digests (an export from an older pepnet, or "
                          "edited); export the run again")
    for name, digest in files.items():
        path = export_dir / name
        if not path.is_file() or path.is_symlink():
            raise ExportError(f"export file {path} is missing (listed in {MANIFEST})")
        actual = file_sha256(path)
        if actual != digest:
            raise ExportError(f"export file {path} is damaged or was replaced: sha256 {actual[:16]}..., the "
                              f"manifest says {str(digest)[:16]}...")
    return manifest


class Predictor:
    """Scores raw rows with an exported model: encoder + ExportedProgram, no training code. Loading verifies
    every file against the manifest's sha256 and refuses an archive that would unpickle or execute anything
    (:mod:`pepnet.export.archive`)."""

    def __init__(self, export_dir: str | Path):
        d = Path(export_dir)
        if not (d / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{d} is not an export directory (no {MODEL_FILE}); run `pepnet export` first")
        self.manifest = verify_export(d)
        self.encoder = Encoder.load(d / "encoder")
        self.module = load_program(d / MODEL_FILE).module()

    @torch.no_grad()
    def predict(self, data: pl.DataFrame | str | list[str], batch_size: int = 65536) -> pl.DataFrame:
        """Probabilities ``p_<task>`` for every row, beside the domain and user columns, in input order.
        Domains never seen in training give a DataWarning (they are scored with the out-of-vocabulary row)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if not isinstance(data, (pl.DataFrame, str, list)):
            raise TypeError(f"data must be a polars DataFrame, a file name or a list of file names; got "
                            f"{type(data).__name__}" + (" (call .collect() first)" if isinstance(data, pl.LazyFrame)
                                                         else ""))
        frame = read_files([data] if isinstance(data, str) else data) if not isinstance(data, pl.DataFrame) \
            else Frame(data.with_columns(pl.lit(0, dtype=pl.UInt16).alias("__file"),
                                         pl.int_range(pl.len(), dtype=pl.Int64).alias("__row")), ["<frame>"])
        schema = self.encoder.schema
        validate(frame, schema, labels=False)
        self.encoder.warn_unseen_domains(frame.df, "the scored rows")
        enc = self.encoder.transform(frame.df)
        sparse, dense = torch.from_numpy(enc.sparse), torch.from_numpy(enc.dense)
        probs = np.concatenate([
            torch.sigmoid(self.module(sparse[i:i + batch_size], dense[i:i + batch_size])).numpy()
            for i in range(0, len(enc), batch_size)
        ]) if len(enc) else np.zeros((0, len(self.encoder.task_names)), dtype=np.float32)
        keys = frame.df.select(schema.domain, schema.user)
        return keys.with_columns([pl.Series(f"p_{t}", probs[:, i]) for i, t in enumerate(self.encoder.task_names)])
