"""Provenance of a run: what it was trained on and with what (run.json), and the check that a resumed run
sees the same data. sha256 of files (:func:`file_sha256`), of every split's rows (:func:`split_fingerprints`),
the git revision and the package versions."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ExperimentConfig
from .data.sources import PROVENANCE
from .errors import DataError
from .fileio import atomic_write

if TYPE_CHECKING:
    from .prepare import Prepared

RUN_INFO = "run.json"


def git_revision() -> str | None:
    """The commit of pepnet's source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(files: list[str]) -> dict[str, str]:
    """file -> sha256 of each of ``files`` that is a regular file (generated data sets have none)."""
    return {f: file_sha256(f) for f in files if Path(f).is_file()}


def split_fingerprints(prep: Prepared) -> dict[str, str]:
    """sha256 of every split's rows (all columns but provenance; for files and built-in data sets alike)."""
    out = {}
    for name, fr in prep.frames.items():
        df = fr.df.drop([c for c in PROVENANCE if c in fr.df.columns])
        out[name] = hashlib.sha256(df.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
    return out


def check_same_data(out: Path, prep: Prepared) -> None:
    """On resume: the splits must be those the run started with (run.json), or the resumed run is not that run."""
    info = json.loads((out / RUN_INFO).read_text()) if (out / RUN_INFO).is_file() else {}
    before = info.get("split_fingerprints")
    if before:
        now = split_fingerprints(prep)
        changed = [k for k in before if now.get(k) != before[k]]
        if changed:
            raise DataError(f"--resume: the {', '.join(changed)} split(s) differ from those the run in {out} started "
                            "with (run.json split_fingerprints); expected the same data. Start a new run instead",
                            file=", ".join(sorted({f for fr in prep.frames.values() for f in fr.files})))


def write_run_info(out: Path, config: ExperimentConfig, prep: Prepared, info: dict | None = None) -> None:
    """run.json: :func:`run_info`, or ``info`` (computed once for many runs on ``prep``, e.g. the seeds of
    ``pepnet compare``) with this run's seed and config."""
    info = {**(info or run_info(config, prep)), "seed": config.train.seed,
            "deterministic": config.train.deterministic, "config": config.to_dict()}
    atomic_write(out / RUN_INFO, json.dumps(info, indent=1))


def run_info(config: ExperimentConfig, prep: Prepared) -> dict:
    """Seed, versions, platform, git revision, file and split fingerprints (sha256), rows, the config."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("pepnet", "torch", "numpy", "polars", "pyarrow", "pydantic"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    files = sorted({f for fr in prep.frames.values() for f in fr.files})
    info = {
        "seed": config.train.seed,
        "deterministic": config.train.deterministic,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "data_fingerprints": fingerprint(files),
        "split_fingerprints": split_fingerprints(prep),
        "rows": {k: v.df.height for k, v in prep.frames.items()},
        "config": config.to_dict(),
    }
    return info


__all__ = ["RUN_INFO", "check_same_data", "file_sha256", "fingerprint", "git_revision", "run_info",
           "split_fingerprints", "write_run_info"]
