"""Command line: a thin layer over the Python API in :mod:`pepnet.run`.

pepnet fit CONFIG --out RUN_DIR [--set key=value ...] [--resume]
pepnet evaluate RUN_DIR [--data FILE]
pepnet predict RUN_DIR --data FILE --out preds.parquet
pepnet quickstart [--out RUN_DIR]
"""
from __future__ import annotations

import sys
import warnings
from functools import wraps
from pathlib import Path
from typing import Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="PEPNet for multi-domain, multi-task recommendation.")

BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def _friendly(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, bad data, damaged checkpoint) into one clear line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from .config import ConfigError
        from .data.errors import DataError
        from .train.checkpoint import CheckpointError
        from .train.trainer import TrainingError

        warnings.simplefilter("default")
        warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError, CheckpointError, TrainingError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _show(report, out: Path | None = None) -> None:
    typer.echo(report.format_overall())
    typer.echo("")
    typer.echo(report.format_table())
    if out is not None:
        typer.echo(f"\nwritten: {out / 'metrics.json'}, {out / 'metrics.csv'}")


def resolve_config(path: str) -> Path:
    """A config path, or the name of a bundled config (``ciao``, ``synthetic``, ...)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (BUNDLED_CONFIGS / path, BUNDLED_CONFIGS / f"{path}.yaml"):
        if cand.is_file():
            return cand
    names = sorted(c.stem for c in BUNDLED_CONFIGS.glob("*.yaml"))
    raise FileNotFoundError(f"config {path!r} is neither a file nor a bundled config ({', '.join(names)})")


@app.command()
@_friendly
def fit(
    config: str = typer.Argument(..., help="YAML experiment file, or a bundled config name (ciao, synthetic)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key: --set train.epochs=3"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
) -> None:
    """Train a model and evaluate it on the test split."""
    from .run import fit as fit_run

    run = fit_run(resolve_config(config) if not resume else out / "config.yaml", out, resume=resume, overrides=set_)
    _show(run.report, out)


@app.command()
@_friendly
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    data: Optional[list[str]] = typer.Option(None, "--data", help="files to evaluate on (default: the run's test split)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write metrics.json / metrics.csv into this folder"),
) -> None:
    """Per-domain x per-task AUC, GAUC and logloss of a trained run."""
    from .run import Run

    report = Run.load(run_dir).evaluate(data or None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.to_json(out / "metrics.json")
        report.to_csv(out / "metrics.csv")
    _show(report, out)


@app.command()
@_friendly
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    data: list[str] = typer.Option(..., "--data", help="parquet or CSV files to score"),
    out: Path = typer.Option(..., "--out", help="output parquet file"),
) -> None:
    """Write p_<task> for every input row (with its domain and user) to a parquet file."""
    from .run import Run

    preds = Run.load(run_dir).predict(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    preds.write_parquet(out)
    typer.echo(f"wrote {preds.height:,} rows to {out}")


@app.command()
@_friendly
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="run directory"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key"),
) -> None:
    """Train PEPNet on the vendored Ciao data (28 domains, tasks like and helpful) and print the table."""
    from .run import fit as fit_run

    typer.echo("pepnet quickstart: PEPNet on Ciao (Tang et al. 2012), chronological 80/10/10 split")
    run = fit_run(BUNDLED_CONFIGS / "ciao.yaml", out, overrides=set_)
    _show(run.report, out)


def main() -> None:
    app(prog_name="pepnet")


if __name__ == "__main__":
    sys.exit(main())
