"""The ONNX format of an export, scored by ONNX Runtime (optional extra ``pepnet[onnx]``).

``pepnet export --format onnx`` converts the same ``torch.export`` program that ``model.pt2`` holds into
``model.onnx`` (opset of ``torch.onnx``'s exporter, dynamic batch dimension, weights inside the file), with the
signature ``(sparse int64 [B, Fs], dense float32 [B, Fd]) -> logits float32 [B, T]``. :class:`OnnxProgram` runs
it with ONNX Runtime on the CPU and is called like the torch program, so :mod:`pepnet.export.serving` uses
either one. ONNX Runtime runs the whole graph in C++: on a one-row request that is several times faster than the
torch program, whose ~200 operators are each dispatched from Python (BENCHMARKS.md, "Serving").

Loading is from the file's bytes, after the manifest's sha256 check: an ONNX file that points to external
weight files (which ONNX Runtime would read from paths the file names) is refused, and no custom operator
library is ever registered.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .archive import ExportError

ONNX_FILE = "model.onnx"
INPUTS = ("sparse", "dense")
RUNTIME = ("onnxruntime", "onnx")  # what scoring needs: ONNX Runtime, and onnx to inspect the file before it loads


def available() -> bool:
    """Whether the packages :class:`OnnxProgram` needs are installed (``pip install 'pepnet[onnx]'``)."""
    return all(importlib.util.find_spec(m) is not None for m in RUNTIME)


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ExportError(f"{what} needs the optional ONNX packages: pip install 'pepnet[onnx]' ({module} is not "
                          "installed)")


def write_onnx(program: torch.export.ExportedProgram, example: tuple[torch.Tensor, torch.Tensor],
               path: Path) -> None:
    """Convert ``program`` (dynamic batch dimension) to ONNX at ``path``, weights inside the file."""
    _require("onnxscript", "pepnet export --format onnx")
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, example, input_names=list(INPUTS), output_names=["logits"],
                                             dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises several error types
        raise ExportError(f"conversion to ONNX failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    assert onnx_program is not None  # dynamo=True always returns the program
    onnx_program.save(str(path), external_data=False)


class OnnxProgram:
    """``model.onnx`` in an ONNX Runtime session, called like the torch program: ``(sparse int64 [B, Fs],
    dense float32 [B, Fd]) -> logits float32 [B, T]`` (torch tensors in and out)."""

    def __init__(self, path: Path, threads: int | None = None):
        for module in RUNTIME:
            _require(module, f"scoring {path} with ONNX Runtime")
        import onnxruntime as ort

        data = path.read_bytes()
        self._refuse_external_data(path, data)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own error types for a damaged file
            raise ExportError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise ExportError(f"{path}: expected the inputs {INPUTS}, found {names}")

    @staticmethod
    def _refuse_external_data(path: Path, data: bytes) -> None:
        import onnx

        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf's DecodeError and others
            raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ExportError(f"{path}: weight {tensor.name!r} is stored in an external file; pepnet exports "
                                  "keep every weight inside model.onnx; refused")

    def __call__(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"sparse": np.ascontiguousarray(sparse.numpy()),
                                      "dense": np.ascontiguousarray(dense.numpy())})[0]
        return torch.from_numpy(out)
