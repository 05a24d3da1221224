"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed over the target.

A process killed at any instant leaves either the previous complete file or the new one, never a truncated
file under the final name (checkpoints, config.yaml, history.csv, metrics, run.json, encoder files, results,
manifests). The rename replaces a symbolic link at the target instead of writing through it, and the
temporary file is created exclusively without following links, so nothing outside the folder is written.
A kill leaves at most the temporary file ``.<name>.tmp<pid>`` behind: :func:`remove_orphans` deletes those
of processes that are gone.
"""
from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TMP = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>\d+)")


class DamagedFileError(ValueError):
    """A file pepnet wrote (encoder, metrics, layout, manifest) is missing, truncated or altered; names it."""


def atomic_write(path: str | Path, *chunks: bytes | memoryview | str) -> None:
    """Write the concatenated ``chunks`` (``str`` as UTF-8) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of an earlier process with the same id
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with open(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # named after the file being written, not its temporary name
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(df: Any, path: str | Path) -> None:
    """Write a polars frame as parquet atomically, with a CRC checksum in every page header (a reader that
    verifies them, as pepnet's does, detects flipped bytes in a data page)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(df.to_arrow(), buf, write_page_checksum=True)
    atomic_write(path, buf.getbuffer())


def write_figure(fig: Any, path: str | Path, dpi: int) -> None:
    """Save a matplotlib figure as PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, buf.getbuffer())


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``type: message`` of an exception on one line, at most ``limit`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: str | Path, what: str) -> Any:
    """The JSON content of ``path``; a missing, truncated or damaged file raises DamagedFileError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(f"{what} {path} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFileError(f"{what} {path} is damaged or truncated ({exc}); expected the JSON pepnet "
                               "writes") from None


def read_json_as(path: str | Path, what: str, build: Callable[[Any], T]) -> T:
    """``build(`` the JSON content of ``path`` ``)``; a missing or damaged file, or content ``build`` cannot use
    (a missing key, a wrong type), raises DamagedFileError naming the file."""
    data = read_json(path, what)
    try:
        return build(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DamagedFileError(f"{what} {path} is damaged ({one_line(exc)}); expected what pepnet writes") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files ``.<name>.tmp<pid>`` under ``folder`` left by killed writers (their process
    is gone); returns them."""
    removed = []
    for p in Path(folder).rglob(".*.tmp*"):
        m = TMP.fullmatch(p.name)
        if m and not p.is_symlink() and p.is_file() and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
