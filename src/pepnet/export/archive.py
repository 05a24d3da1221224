"""Loading a ``model.pt2`` without running code from it.

``torch.export.load`` unpickles some parts of an archive without the weights-only restriction (weights or constants
marked ``use_pickle``, example inputs it cannot read otherwise, opaque objects) and loads compiled
AOTInductor libraries it finds inside: a crafted archive runs code in the process that loads it.
:func:`load_program` first checks the archive against what ``torch.export.save`` writes for a pepnet model
(one graph in JSON, raw tensor payloads described by JSON configs, example inputs that are plain tensors)
and refuses anything else, naming the entry; then it loads with every ``torch.load`` forced to
``weights_only=True``.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# entries of an archive written by torch.export.save for one program named "model", below its root folder
ALLOWED = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                     r"|models/model\.json|data/sample_inputs/model\.pt"
                     r"|data/weights/(model_weights_config\.json|weight_\d+)"
                     r"|data/constants/(model_constants_config\.json|tensor_\d+))")
PAYLOAD_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
PAYLOAD = re.compile(r"(weight|tensor)_\d+")


class ExportError(RuntimeError):
    """The model could not be exported or loaded: the exported program disagrees with the eager model, or an
    export's file is damaged, or it holds something that would run code on load; the message names it."""


class UnsafeArchiveError(ExportError):
    """A ``model.pt2`` holds something that would be unpickled or executed on load; the message names it."""


def check_archive(path: Path) -> None:
    """Refuse ``path`` unless it holds only what ``torch.export.save`` writes for a plain tensor program."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1:
                raise UnsafeArchiveError(f"{path}: expected one root folder in the archive, found {sorted(roots)}")
            root = roots.pop() + "/"
            for name in names:
                if not ALLOWED.fullmatch(name[len(root):]):
                    raise UnsafeArchiveError(f"{path}: unexpected entry {name!r} (not a graph, a raw tensor or its "
                                             "description); refused: it could be unpickled or executed on load")
            for config in PAYLOAD_CONFIGS:
                if root + config not in names:
                    raise UnsafeArchiveError(f"{path}: {config} is missing")
                payloads = json.loads(zf.read(root + config)).get("config", {})
                for key, meta in payloads.items():
                    if meta.get("use_pickle") is not False or not PAYLOAD.fullmatch(str(meta.get("path_name"))):
                        raise UnsafeArchiveError(f"{path}: {config} entry {key!r} asks for a pickled object; pepnet "
                                                 "exports hold raw tensors only; refused without unpickling it")
            sample = root + "data/sample_inputs/model.pt"
            if sample in names:
                try:  # torch.export.load would retry a failure here without the weights-only guard
                    torch.load(io.BytesIO(zf.read(sample)), weights_only=True)
                except pickle.UnpicklingError:
                    raise UnsafeArchiveError(f"{path}: {sample} holds objects other than tensors; refused without "
                                             "unpickling it") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, RuntimeError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise UnsafeArchiveError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc}); "
                                 "truncated or damaged") from None


@contextmanager
def _weights_only() -> Iterator[None]:
    """Every ``torch.load`` in the block runs with ``weights_only=True``, whatever its caller asks."""
    key, before = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """``torch.export.load(path)`` after :func:`check_archive`, with every unpickling restricted to tensors."""
    path = Path(path)
    check_archive(path)
    with _weights_only():
        return torch.export.load(path)
