"""Serving export.

``export_run(run_dir, out_dir)`` writes

- ``model.pt2``: the best model as a ``torch.export`` ExportedProgram with a dynamic batch dimension,
  ``(sparse int64 [B, Fs], dense float32 [B, Fd]) -> logits float32 [B, T]``; it runs without pepnet's
  Python model code (``torch.export.load(path).module()``). T counts the exported tasks (the manifest's
  ``tasks``): the reported ones, as serving answers only those; the towers of auxiliary tasks are left out of
  the program (:func:`pepnet.nn.towers.select_tasks`), unless ``auxiliary=True`` (``--auxiliary``) keeps them;
- ``model.onnx`` with ``formats=("torch", "onnx")`` (``pepnet export --format onnx``): the same program in
  ONNX, scored by ONNX Runtime (:mod:`pepnet.export.onnxrt`), checked against the eager model like the program;
- ``encoder/``: the run's encoder, so raw rows are encoded exactly as in training;
- ``manifest.json``: tasks, input fields, versions, the largest difference between the exported and
  the eager model on a verification batch (the export is refused if it exceeds 1e-5), the first rows of
  that batch with their logits (``verification``): loading an export checks that its program reproduces them,
  and the sha256 of every other file of the export (``files``), verified before anything is loaded.

``ExportedModel(out_dir).score(frame)`` encodes raw rows and returns probabilities: the one path that
``Predictor(out_dir).predict(frame)`` (a polars DataFrame or files) and ``pepnet serve`` both use. Its
``backend`` runs the forward pass: ``"torch"`` (the program), ``"onnx"`` (ONNX Runtime) or ``"auto"``: ONNX
Runtime when the export has ``model.onnx`` and onnxruntime is installed, which is faster (BENCHMARKS.md).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ..data.encoder import Encoder, transform
from ..data.sources import FILE_COL, ROW_COL, Frame, read_files
from ..data.validate import validated
from ..fileio import atomic_write, read_json
from ..predictions import prediction_frame
from ..provenance import file_sha256
from . import onnxrt
from .archive import ExportError, load_program

MODEL_FILE = "model.pt2"
MANIFEST = "manifest.json"
TOLERANCE = 1e-5
VERIFY_ROWS = 16  # rows of the verification batch stored in the manifest (checked whenever an export is loaded)
FORMATS = ("torch", "onnx")
BACKENDS = ("auto", *FORMATS)


def _example_inputs(encoder: Encoder, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid inputs: every sparse id inside its own field's rows of the fused table."""
    g = torch.Generator().manual_seed(seed)
    sparse = (
        torch.stack([f.offset + torch.randint(0, f.size, (rows,), generator=g) for f in encoder.sparse_fields], 1)
        if encoder.sparse_fields
        else torch.zeros(rows, 0, dtype=torch.long)
    )
    dense = torch.randn(rows, len(encoder.dense_fields), generator=g)
    return sparse.long(), dense


Program = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sparse, dense) -> logits: torch or ONNX Runtime


def _checked(name: str, module: Program, check: tuple[torch.Tensor, torch.Tensor],
             eager: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The logits of ``module`` on ``check`` and their largest |difference| from the eager model's logits
    ``eager``; ExportError beyond the tolerance."""
    with torch.no_grad():
        got = module(*check)
    diff = float((got - eager).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"{name} differs from the eager model by {diff:.3g} (> {TOLERANCE})")
    return diff, got


def export_run(run_dir: str | Path, out_dir: str | Path, formats: Sequence[str] = ("torch",),
               auxiliary: bool = False) -> Path:
    """Export the best model of ``run_dir`` (see module docstring) in ``formats`` (``model.pt2`` always, plus
    ``model.onnx`` with ``"onnx"``), scoring the reported tasks (every task with ``auxiliary``); returns
    ``out_dir``."""
    from ..nn.towers import select_tasks
    from ..run import Run

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; expected some of {list(FORMATS)}")
    run = Run.load(run_dir, device="cpu")
    model, encoder = run.model.eval(), run.encoder
    tasks = encoder.task_names if auxiliary else encoder.reported_tasks
    if tasks != encoder.task_names:
        select_tasks(model, [encoder.task_names.index(t) for t in tasks])
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
        eager = model(*check)
    diffs: dict[str, float] = {}
    diffs["torch"], logits = _checked("the exported program", program.module(), check, eager)
    torch.export.save(program, out / MODEL_FILE)
    if "onnx" in formats:
        onnxrt.write_onnx(program, example, out / onnxrt.ONNX_FILE)
        diffs["onnx"], _ = _checked("the ONNX model", onnxrt.OnnxProgram(out / onnxrt.ONNX_FILE), check, eager)
    encoder.save(out / "encoder")
    manifest = {
        "model": run.config.model.name,
        "tasks": tasks,  # the program's outputs, in this order
        "inputs": {
            "sparse": [{"name": f.name, "offset": f.offset, "size": f.size} for f in encoder.sparse_fields],
            "dense": [f.name for f in encoder.dense_fields],
        },
        "output": "logits float32 [B, T]; probability = sigmoid(logit)",
        "formats": ["torch", *(["onnx"] if "onnx" in formats else [])],
        "max_abs_diff_vs_eager": max(diffs.values()),
        "max_abs_diff_vs_eager_by_format": diffs,
        "verification": {
            "sparse": check[0][:VERIFY_ROWS].tolist(),
            "dense": check[1][:VERIFY_ROWS].tolist(),
            "logits": logits[:VERIFY_ROWS].tolist(),
        },
        "torch": torch.__version__,
        "source_run": str(Path(run_dir).resolve()),
        "files": file_digests(out),
    }
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


def file_digests(export_dir: Path) -> dict[str, str]:
    """sha256 of every file of an export but the manifest, by path relative to ``export_dir``."""
    return {
        p.relative_to(export_dir).as_posix(): file_sha256(p)
        for p in sorted(export_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def verify_export(export_dir: Path) -> dict:
    """The manifest of ``export_dir`` after checking the sha256 of every file it lists (a damaged, truncated or
    replaced file raises ExportError naming it)."""
    manifest = read_json(export_dir / MANIFEST, "export manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise ExportError(
            f"{export_dir / MANIFEST} lists no file digests (an export from an older pepnet, or "
            "edited); export the run again"
        )
    for name, digest in files.items():
        path = export_dir / name
        if not path.is_file() or path.is_symlink():
            raise ExportError(f"export file {path} is missing (listed in {MANIFEST})")
        actual = file_sha256(path)
        if actual != digest:
            raise ExportError(
                f"export file {path} is damaged or was replaced: sha256 {actual[:16]}..., the "
                f"manifest says {str(digest)[:16]}..."
            )
    return manifest


def verify(module: Program, manifest: dict) -> float:
    """Largest |logit difference| of ``module`` on the manifest's stored verification batch; raises ExportError
    when it exceeds the tolerance (a damaged or mismatched program). Manifests without a batch give 0."""
    check = manifest.get("verification")
    if not check:
        return 0.0
    sparse = torch.tensor(check["sparse"], dtype=torch.long).reshape(len(check["logits"]), -1)
    dense = torch.tensor(check["dense"], dtype=torch.float32).reshape(len(check["logits"]), -1)
    with torch.no_grad():
        got = module(sparse, dense)
    diff = float((got - torch.tensor(check["logits"], dtype=torch.float32)).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the program's logits on the manifest's verification batch differ by {diff:.3g} "
            f"(> {TOLERANCE}); the export is damaged or its files do not belong together"
        )
    return diff


class ExportedModel:
    """One loaded export: the encoder, the exported program and the manifest. :meth:`score` (= :meth:`encode`
    then :meth:`forward`) is THE path from raw rows to probabilities, shared by :class:`Predictor` and the
    HTTP server (``pepnet serve``), so both encode exactly as training did."""

    def __init__(self, export_dir: str | Path, version: str | None = None, backend: str = "auto"):
        d = Path(export_dir)
        if not (d / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{d} is not an export directory (no {MODEL_FILE}); run `pepnet export` first")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
        self.dir = d
        self.manifest = verify_export(d)  # every file's sha256, before anything is loaded
        has_onnx = onnxrt.ONNX_FILE in self.manifest["files"]  # a model.onnx the manifest does not list is ignored
        if backend == "onnx" and not has_onnx:
            raise FileNotFoundError(f"{d}: the export has no {onnxrt.ONNX_FILE} (its manifest lists none); export "
                                    "with `pepnet export --format onnx`")
        self.encoder = Encoder.load(d / "encoder")
        self.backend = "onnx" if backend == "onnx" or (backend == "auto" and has_onnx and onnxrt.available()) \
            else "torch"
        self.module = (
            onnxrt.OnnxProgram(d / onnxrt.ONNX_FILE)
            if self.backend == "onnx"
            else load_program(d / MODEL_FILE).module()  # refuses archives that would unpickle or execute
        )
        self.verify_diff = verify(self.module, self.manifest)
        self.version = version if version is not None else d.name
        self.tasks: list[str] = self.manifest["tasks"]  # the program's outputs: the reported tasks, or every task

    @property
    def row_independent(self) -> bool:
        """Whether a row's encoding ignores the other rows of its frame (no ``realtime`` statistic), so that
        frames may be concatenated before encoding (the server's micro-batches)."""
        return not any(s.realtime for s in self.encoder.schema.stats)

    def encode(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate raw rows and encode them as training did: (sparse int64 [N, Fs], dense float32 [N, Fd])."""
        frame = validated(frame, self.encoder.schema, labels=False)  # ISO date text in the time column is parsed
        enc = transform(self.encoder, frame)  # names the file and row of a value the encoder cannot read
        return torch.from_numpy(enc.sparse), torch.from_numpy(enc.dense)

    @torch.no_grad()
    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, batch_size: int = 65536) -> np.ndarray:
        """Probabilities float32 [N, T] (the exported tasks, ``self.tasks`` order) of encoded rows, ``batch_size``
        at a time."""
        if len(sparse) == 0:
            return np.zeros((0, len(self.tasks)), dtype=np.float32)
        return np.concatenate(
            [
                torch.sigmoid(self.module(sparse[i : i + batch_size], dense[i : i + batch_size])).numpy()
                for i in range(0, len(sparse), batch_size)
            ]
        )

    def score(self, frame: Frame, batch_size: int = 65536) -> np.ndarray:
        """:meth:`encode` then :meth:`forward`: probabilities float32 [N, T] of raw rows, in input order."""
        return self.forward(*self.encode(frame), batch_size=batch_size)


def frame_of(df: pl.DataFrame, name: str = "<frame>") -> Frame:
    """A frame of rows given in memory, with provenance columns so that errors name the row (0-based)."""
    provenance = {
        FILE_COL: pl.Series(FILE_COL, np.zeros(df.height, dtype=np.uint16)),
        ROW_COL: pl.Series(ROW_COL, np.arange(df.height, dtype=np.int64)),
    }  # put together from Series, as with_columns would (which runs a query: 3x slower for a served request)
    return Frame(pl.DataFrame([provenance.pop(c, df[c]) for c in df.columns] + list(provenance.values())), [name])


class Predictor:
    """Scores raw rows with an exported model: encoder + ExportedProgram, no training code. Loading verifies
    every file against the manifest's sha256 and refuses an archive that would unpickle or execute anything
    (:mod:`pepnet.export.archive`)."""

    def __init__(self, export_dir: str | Path, backend: str = "auto"):
        self.model = ExportedModel(export_dir, backend=backend)
        self.encoder, self.module, self.manifest = self.model.encoder, self.model.module, self.model.manifest

    def predict(
        self,
        data: pl.DataFrame | str | list[str],
        batch_size: int = 65536,
        keep: Sequence[str] = (),
        auxiliary: bool = False,
    ) -> pl.DataFrame:
        """Probabilities ``p_<task>`` of the reported tasks (all tasks with ``auxiliary``) for every row, in input
        order, beside the domain, user, item and time columns and the ``keep`` columns. Domains never seen in
        training give a DataWarning (they are scored with the out-of-vocabulary row)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if auxiliary and self.model.tasks != self.encoder.task_names:
            raise ValueError(f"this export scores the reported tasks {self.model.tasks} only; for the auxiliary tasks "
                             "too, export with `pepnet export --auxiliary` (export_run(..., auxiliary=True))")
        if not isinstance(data, (pl.DataFrame, str, list)):
            raise TypeError(
                f"data must be a polars DataFrame, a file name or a list of file names; got "
                f"{type(data).__name__}" + (" (call .collect() first)" if isinstance(data, pl.LazyFrame) else "")
            )
        frame = (
            read_files([data] if isinstance(data, str) else data)
            if not isinstance(data, pl.DataFrame)
            else frame_of(data)
        )
        probs = self.model.score(frame, batch_size)
        self.encoder.warn_unseen_domains(frame.df, "the scored rows")
        return prediction_frame(frame.df, self.encoder, probs, keep, auxiliary, self.model.tasks)
