"""A run directory is never mixed or overwritten by accident: a new run claims an empty (or new) folder, and
``overwrite`` removes only pepnet's own run files first; leftovers of killed writers are removed on start."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .fileio import atomic_write, remove_orphans

# everything pepnet writes into a run directory (files and folders)
RUN_FILES = ("config.yaml", "run.json", "layout.json", "checkpoint.pt", "model.pt", "history.csv", "metrics.json",
             "metrics.csv", "encoder", "refit", "stream.csv", "stream.png", "gates_epnet.csv", "gates_ppnet.csv",
             "gates.png")


def claim(out: Path, overwrite: bool = False) -> None:
    """Make ``out`` ready for a new run: it must not exist or be empty; with ``overwrite`` an earlier run's files
    (:data:`RUN_FILES`, links unlinked, never followed) are removed first and other files are left alone. A
    folder that cannot be written raises PermissionError now rather than after training."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; expected a folder for the run")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise FileExistsError(f"--out {out} is not empty ({shown}); give --resume to continue the run in it, "
                              "--overwrite to replace it, or a new folder")
    for name in entries if overwrite else ():
        p = out / name
        if name in RUN_FILES:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    probe = out / f".pepnet-write-test{os.getpid()}"
    atomic_write(probe, b"")
    probe.unlink()


def clean(out: Path, log: Callable[[str], None] = print) -> None:
    """Remove the temporary files that killed writers left in ``out`` (see :func:`pepnet.fileio.remove_orphans`)."""
    removed = remove_orphans(out) if out.is_dir() else []
    if removed:
        log(f"removed {len(removed)} temporary file(s) left by an interrupted run: "
            + ", ".join(str(p.relative_to(out)) for p in removed[:5]))
