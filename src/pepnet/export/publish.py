"""Published model versions: ``MODELS_DIR/versions/<N>/`` (export directories) and ``MODELS_DIR/current``.

``publish`` writes a new export into a hidden folder under ``versions/``, renames it to the next free number
(a rename is atomic; a number already taken by another publisher makes it take the next one), then replaces
``current`` (a small text file holding the number) atomically. A reader therefore never sees a half-written
version nor a ``current`` that points at one. Numbering and the switch of ``current`` happen under an exclusive
lock on ``MODELS_DIR/.publish.lock`` (``flock``), so that concurrent publishers leave ``current`` at the newest
version, never at an older one. ``pepnet serve MODELS_DIR`` watches ``current``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ..fileio import atomic_write

VERSIONS = "versions"
CURRENT = "current"
LOCK = ".publish.lock"


def is_models_dir(path: str | Path) -> bool:
    return (Path(path) / CURRENT).is_file() or (Path(path) / VERSIONS).is_dir()


def version_dir(models_dir: str | Path, version: int) -> Path:
    return Path(models_dir) / VERSIONS / str(version)


def current_version(models_dir: str | Path) -> int | None:
    """The number in ``MODELS_DIR/current``, or None when nothing is published yet."""
    path = Path(models_dir) / CURRENT
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{path} holds {text[:40]!r}; expected a version number")
    return int(text)


def published(models_dir: str | Path) -> list[int]:
    """The version numbers under ``versions/``, ascending."""
    d = Path(models_dir) / VERSIONS
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def publish(models_dir: str | Path, write: Callable[[Path], object]) -> int:
    """``write(folder)`` fills a fresh export folder; it becomes ``versions/<N>`` and ``current`` points at N.
    Returns N. If ``write`` raises, nothing is published and the partial folder is removed."""
    versions = Path(models_dir) / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    staging = versions / f".incoming-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        with _locked(Path(models_dir) / LOCK):  # the export above is written outside the lock: it takes long
            n = (published(models_dir) or [0])[-1] + 1
            while True:
                try:
                    os.rename(staging, versions / str(n))  # fails if the name exists: never replaces a version
                    break
                except OSError:
                    if not (versions / str(n)).exists():
                        raise
                    n += 1
            atomic_write(Path(models_dir) / CURRENT, f"{n}\n")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return n


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
