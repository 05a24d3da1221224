"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed over the target.

A process killed at any instant leaves either the previous complete file or the new one, never a truncated
file under the final name (checkpoints, metrics.json, run.json, encoder.json, results.json, manifests).
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | Path, *chunks: bytes | memoryview | str) -> None:
    """Write the concatenated ``chunks`` (``str`` as UTF-8) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
