"""Checkpoints written atomically (temporary file, fsync, rename) with a sha256 that is verified on load."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupted; the message names the file."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(obj: Any, path: str | Path) -> str:
    """Serialise ``obj`` with torch.save and write it atomically; the sha256 goes to ``path.sha256``.
    Returns the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    _atomic_write(path, data)
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint after checking its sha256; a damaged file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    side = path.with_name(path.name + ".sha256")
    if side.is_file():
        expected = side.read_text().split()[0]
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CheckpointError(f"checkpoint {path} is corrupted or truncated: sha256 {actual[:16]}..., "
                                  f"expected {expected[:16]}... ({len(data)} bytes)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
