"""Checkpoints written atomically (temporary file, fsync, rename) with a sha256 that is verified on load.

File layout: one header line ``PEPNET-CHECKPOINT sha256=<64 hex digits>\n`` followed by the torch.save
bytes. The digest lives in the same file as the data, so a single atomic rename publishes both: a process
killed at any instant leaves either the previous complete checkpoint or the new one, never a pair that
disagrees. A truncated or altered file fails the digest check and is named on load.

The digest only catches accidents: anyone can compute it for a file they wrote. What keeps a crafted file
from running code is the loader: ``torch.load(..., weights_only=True)`` rebuilds tensors, numbers, strings
and containers and refuses every other pickled object, so a checkpoint holds only those (the trainer keeps
its random states as tensors and numbers).
"""
from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupted; the message names the file."""


MAGIC = b"PEPNET-CHECKPOINT sha256="
HEADER_LEN = len(MAGIC) + 64 + 1


def save_checkpoint(obj: Any, path: str | Path) -> str:
    """Serialise ``obj`` with torch.save and write it atomically, digest header first. Returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getbuffer()  # no extra copy of a large state
    digest = hashlib.sha256(payload).hexdigest()
    atomic_write(path, MAGIC + digest.encode() + b"\n", payload)
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint after checking its sha256; a damaged file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = memoryview(path.read_bytes())
    header = bytes(data[:HEADER_LEN])
    if len(data) < HEADER_LEN or not header.startswith(MAGIC) or not header.endswith(b"\n"):
        raise CheckpointError(f"checkpoint {path} is truncated or not a pepnet checkpoint ({len(data)} bytes; "
                              f"expected a header line starting with {MAGIC.decode()!r})")
    expected = header[len(MAGIC):-1].decode("ascii", errors="replace")
    actual = hashlib.sha256(data[HEADER_LEN:]).hexdigest()
    if actual != expected:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: sha256 of its data {actual[:16]}..., "
                              f"expected {expected[:16]}... ({len(data)} bytes)")
    try:
        return torch.load(io.BytesIO(data[HEADER_LEN:]), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object that is not a tensor or a plain value
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|$)", str(exc), re.M)
        reason = found.group(1) if found else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain values, which pepnet "
                              f"never writes; refused without running them ({reason})") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None


def load_weights(model: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu") -> None:
    """Load the weights file ``path`` into ``model``; weights of another model (other layers or shapes, e.g. a
    model.pt from another run) raise CheckpointError naming the file and the first differences."""
    state = load_checkpoint(path, map_location=map_location)
    load_state(model, state, path)


def load_state(model: torch.nn.Module, state: Any, path: str | Path) -> None:
    """``model.load_state_dict(state)``, raising CheckpointError naming ``path`` when they do not match."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint {path} holds the weights of another model (another run, or a changed "
                              f"model or data since it was written): {detail}") from None
