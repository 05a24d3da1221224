"""Command line: a thin layer over the Python API in :mod:`pepnet.run`.

pepnet fit CONFIG --out RUN_DIR [--set key=value ...] [--resume [--data NEW_FILE]]
pepnet stream CONFIG --data DIR_OF_PERIOD_FILES --out RUN_DIR [--passes N]
pepnet evaluate RUN_DIR [--data FILE]
pepnet predict RUN_DIR --data FILE --out preds.parquet
pepnet quickstart [--out RUN_DIR]
pepnet compare CONFIG --out DIR [--models a,b,...] [--seeds N] [--ablations]
pepnet export RUN_DIR (--out EXPORT_DIR | --publish MODELS_DIR)
pepnet serve EXPORT_DIR|MODELS_DIR [--host 127.0.0.1] [--port 8000] [--workers N]
pepnet seesaw CONFIG --out DIR [--seeds N] [--compare COMPARE_DIR]
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from .config import ExperimentConfig

class _PlainHelp:
    """``--help`` shown without a value placeholder (typer would print ``--help <bool>``)."""

    def get_help_option(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Command(_PlainHelp, typer.core.TyperCommand):
    pass


class _Group(_PlainHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="PEPNet for multi-domain, multi-task recommendation.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"pepnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, metavar="",
                                       help="print pepnet's version and exit")) -> None:
    """PEPNet for multi-domain, multi-task recommendation."""

BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def _flag(default: bool, *names: str, help: str) -> Any:
    """A boolean option shown in --help without a value placeholder (typer would print ``--resume <bool>``)."""
    return typer.Option(default, *names, help=help, metavar="")


_USER_ERRORS = (("pepnet.config", "ConfigError"), ("pepnet.errors", "DataError"),
                ("pepnet.train.checkpoint", "CheckpointError"), ("pepnet.train.runtime", "TrainingError"),
                ("pepnet.export.archive", "ExportError"), ("pepnet.fileio", "DamagedFileError"))


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix; read from the modules already imported (one that is not cannot have raised
    its error), so that the CLI imports nothing heavy before a command needs it."""
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, name in _USER_ERRORS:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _friendly(fn: Callable) -> Callable:
    """Turn the errors a user can fix (bad config, bad data, damaged checkpoint) into one clear line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        shown = warnings.formatwarning
        with warnings.catch_warnings():  # the process's warning settings are restored on return
            warnings.simplefilter("default")
            warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, OSError):  # a missing file, a read-only folder, a full disk, ...
                    typer.echo(f"error: {_os_error(exc)}", err=True)
                elif isinstance(exc, _user_errors()):
                    typer.echo(f"error: {exc}", err=True)
                else:
                    raise
                raise typer.Exit(2) from None
            finally:
                warnings.formatwarning = shown

    return wrapper


def _os_error(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to do where it is clear."""
    import errno

    if exc.strerror is None or exc.filename is None:  # raised by pepnet with its own message
        return str(exc)
    full = "; free some space or write elsewhere"
    advice = {errno.ENOSPC: full, errno.EDQUOT: full,
              errno.EACCES: "; check the folder's permissions or write elsewhere",
              errno.EROFS: "; the file system is read-only: write elsewhere",
              errno.EISDIR: "; expected a file name, not a folder"}.get(exc.errno or 0, "")
    return f"{exc.strerror}: {exc.filename}{advice}"


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


def _load_config(path: str, overrides: list[str] | None) -> ExperimentConfig:
    """The validated experiment config (``--set`` applied); imports no torch, so a bad config answers at once."""
    from .config import load_config

    return load_config(resolve_config(path), overrides)


@app.command(cls=_Command)
@_friendly
def fit(
    config: str | None = typer.Argument(None, help="YAML experiment file, or a bundled config name (ciao, "
                                           "synthetic); not needed with --resume"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key: --set train.epochs=3"),
    resume: bool = _flag(False, "--resume", help="continue the run in --out from its last checkpoint"),
    overwrite: bool = _flag(False, "--overwrite", help="replace the run in a non-empty --out (its run "
                            "files are removed first); without it a non-empty --out is refused"),
    data: list[str] | None = typer.Option(None, "--data", help="with --resume: new period file(s) to learn "
                                             "online (evaluate on each, then train on it), as `pepnet stream` does"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="data-parallel processes on this machine (runs torchrun; "
                              "gloo on CPU, nccl on GPU)"),
) -> None:
    """Train a model and evaluate it on the test split."""
    if config is None and not resume:
        raise typer.BadParameter("give a CONFIG (a YAML file or a bundled config name), or --resume")
    if resume:
        cfg = None
    else:
        assert config is not None  # checked above
        cfg = _load_config(config, set_)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .train.distributed import launch

        argv = ["fit", *([config] if config else []), "--out", str(out), *[a for s in set_ or [] for a in ("--set", s)]]
        argv += (["--resume"] if resume else []) + (["--overwrite"] if overwrite else [])
        raise typer.Exit(launch(nproc, argv))

    if data:
        if not resume:
            raise typer.BadParameter("--data needs --resume (use `pepnet stream` to start an online run)")
        _stream_into(out, data, None, set_, 1)
        return
    from .run import fit as fit_run

    run = fit_run(out / "config.yaml" if cfg is None else cfg, out, resume=resume, overrides=set_ if resume else None,
                  overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        _show(run.report, out)


def _publish(run_dir: Path, models_dir: Path, formats: tuple[str, ...] = ("torch",), auxiliary: bool = False) -> int:
    """Export ``run_dir`` as the next version of ``models_dir`` (see pepnet.export.publish)."""
    from .export import export_run
    from .export.publish import publish

    version = publish(models_dir, lambda folder: export_run(run_dir, folder, formats, auxiliary))
    typer.echo(f"published version {version} to {models_dir} ({models_dir / 'versions' / str(version)})")
    return version


def _format_option() -> Any:
    return typer.Option(
        "torch",
        "--format",
        help="export format. torch: model.pt2 (torch.export); onnx: model.pt2 and model.onnx, which `pepnet serve` "
        "and Predictor then score with ONNX Runtime (faster; needs pip install 'pepnet[onnx]')",
    )


def _auxiliary_option() -> Any:
    return _flag(False, "--auxiliary", help="also score the auxiliary (unreported) tasks; by default their towers "
                 "are left out of the exported model")


def _formats(format_: str) -> tuple[str, ...]:
    """The files of an export asked for with ``--format``: the torch program always, ONNX beside it."""
    from .export.serving import FORMATS

    if format_ not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}; got {format_!r}")
    return ("torch", format_) if format_ != "torch" else ("torch",)


def _stream_into(out: Path, data: list[str], config: Path | None, set_: list[str] | None, passes: int,
                 publish_to: Path | None = None, formats: tuple[str, ...] = ("torch",),
                 auxiliary: bool = False) -> None:
    from .stream import STREAM_CSV, STREAM_PNG, period_files, stream

    files = [f for d in data for f in period_files(d)]
    after = (lambda _record: _publish(out, publish_to, formats, auxiliary)) if publish_to else None
    run = stream(files, out, config, overrides=set_, passes=passes, after_period=after)
    last = run.history[-1] if run.history else {}
    typer.echo(f"\n{len(run.history)} period(s) in {out}; last progressive mean AUC {last.get('mean_auc')}")
    typer.echo(f"written: {out / STREAM_CSV}, {out / STREAM_PNG}, {out / 'model.pt'}")


@app.command("stream", cls=_Command)
@_friendly
def stream_cmd(
    config: str = typer.Argument(
        ..., help="YAML experiment file or bundled config name (ignored when --out holds a run)"
    ),
    data: list[str] = typer.Option(
        ..., "--data", help="a folder of period files (sorted by name = time order) or files"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (created, or continued if it holds a run)"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key (new runs only)"),
    passes: int = typer.Option(1, "--passes", min=1, help="training passes over each period"),
    publish_to: Path | None = typer.Option(
        None,
        "--publish",
        help="after each period, export the model as the "
        "next version of this models directory (watched by `pepnet serve`)",
    ),
    format_: str = _format_option(),
    auxiliary: bool = _auxiliary_option(),
) -> None:
    """Online training: for each period, evaluate the current model on it, then train on it."""
    if auxiliary and publish_to is None:
        raise typer.BadParameter("--auxiliary applies to what --publish exports; give --publish MODELS_DIR")
    cfg = None if (out / "config.yaml").is_file() else resolve_config(config)
    _stream_into(out, data, cfg, set_, passes, publish_to, _formats(format_), auxiliary)


@app.command(cls=_Command)
@_friendly
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    data: list[str] | None = typer.Option(None, "--data", help="files to evaluate on (default: the run's test split)"),
    out: Path | None = typer.Option(None, "--out", help="write metrics.json / metrics.csv into this folder"),
) -> None:
    """Per-domain x per-task AUC, GAUC and logloss of a trained run."""
    from .run import Run

    report = Run.load(run_dir).evaluate(data or None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report.to_json(out / "metrics.json")
        report.to_csv(out / "metrics.csv")
    _show(report, out)


@app.command(cls=_Command)
@_friendly
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    data: list[str] = typer.Option(..., "--data", help="parquet or CSV files to score"),
    out: Path = typer.Option(..., "--out", help="output parquet file"),
    keep: list[str] | None = typer.Option(
        None,
        "--keep",
        help="input columns to carry into the output besides the domain, user, item and time columns: --keep col1,col2",
    ),
    auxiliary: bool = _flag(False, "--auxiliary", help="also write p_<task> for the auxiliary (unreported) tasks"),
) -> None:
    """Write p_<task> for every input row, with its domain, user, item and time columns, to a parquet file."""
    from .fileio import write_parquet
    from .run import Run

    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; expected the name of the parquet file to write")
    if any(out.resolve() == Path(d).resolve() for d in data):
        raise FileExistsError(
            f"--out {out} is one of the --data files; writing the predictions there would destroy "
            "the input. Choose another file name"
        )
    columns = [c.strip() for item in keep or [] for c in item.split(",") if c.strip()]
    preds = Run.load(run_dir).predict(data, keep=columns, auxiliary=auxiliary)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(preds, out)
    typer.echo(f"wrote {preds.height:,} rows to {out}")


@app.command(cls=_Command)
@_friendly
def bench(
    config: str = typer.Argument(..., help="YAML experiment file or bundled config name (industrial, ciao, ...)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="training batch (default: the config's)"),
    infer_batch_size: int | None = typer.Option(
        None, "--infer-batch-size", help="inference batch (default: train.eval_batch_size)"
    ),
    steps: int = typer.Option(10, "--steps", help="steps per timed window"),
    repeats: int = typer.Option(
        5,
        "--repeats",
        min=1,
        help="interleaved rounds: each contender is timed once per "
        "round; the median and interquartile range over rounds are reported",
    ),
    warmup: int = typer.Option(3, "--warmup", help="untimed steps of each contender first"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key for every variant"),
    variant: list[str] | None = typer.Option(None, "--variant", help="'label: key=value key=value'; repeatable"),
    reference: bool = _flag(
        True, "--reference/--no-reference", help="also time the reference implementation (pepnet.bench.reference)"
    ),
    ablations: bool = _flag(False, "--ablations",
                            help="also time tower-by-tower vs stacked towers, sparse vs dense grads"),
    json_out: Path | None = typer.Option(None, "--json", help="write the full result as JSON here"),
) -> None:
    """Training / inference samples/s vs the matmul bound and a reference implementation, interleaved."""
    import json

    from .bench import format_table, run_bench

    variants = None
    if variant:
        variants = {}
        for v in variant:
            label, _, rest = v.partition(":")
            variants[label.strip()] = rest.split()
    result = run_bench(
        str(resolve_config(config)),
        device=device,
        batch_size=batch_size,
        infer_batch_size=infer_batch_size,
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        overrides=set_,
        variants=variants,
        reference=reference,
        ablations=ablations,
        command="pepnet " + " ".join(sys.argv[1:]),
    )
    typer.echo(format_table(result))
    if json_out is not None:
        from .fileio import atomic_write

        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(json_out, json.dumps(result, indent=1))
        typer.echo(f"written: {json_out}")


@app.command("export", cls=_Command)
@_friendly
def export_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    out: Path | None = typer.Option(None, "--out", help="export directory (model.pt2 + encoder/ + manifest.json)"),
    publish_to: Path | None = typer.Option(
        None,
        "--publish",
        help="models directory: write the export as "
        "versions/<N>/ and point `current` at it (watched by `pepnet serve`)",
    ),
    format_: str = _format_option(),
    auxiliary: bool = _auxiliary_option(),
) -> None:
    """Export the best model for serving (torch.export program + encoder), verified against the eager model."""
    from .export import export_run

    if (out is None) == (publish_to is None):
        raise typer.BadParameter("give one of --out EXPORT_DIR or --publish MODELS_DIR")
    formats = _formats(format_)
    if publish_to is not None:
        _publish(run_dir, publish_to, formats, auxiliary)
        return
    assert out is not None  # exactly one of --out / --publish (checked above)
    path = export_run(run_dir, out, formats, auxiliary)
    typer.echo(f"exported to {path} (load with pepnet.export.Predictor or torch.export.load)")


@app.command(cls=_Command)
@_friendly
def serve(
    source: Path = typer.Argument(
        ...,
        help="an export directory (`pepnet export --out`) or a models directory "
        "(`pepnet export --publish`; watched for new versions)",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback by default)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    workers: int = typer.Option(1, "--workers", min=1, help="server processes, each with its own model"),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", min=0.0, help="longest wait to coalesce concurrent requests into one forward pass"
    ),
    max_batch_rows: int = typer.Option(
        4096, "--max-batch-rows", min=1, help="most rows per request (larger: 413) and per coalesced batch"
    ),
    max_body_bytes: int = typer.Option(8 << 20, "--max-body-bytes", min=1, help="largest request body (larger: 413)"),
    timeout_s: float = typer.Option(10.0, "--timeout-s", min=0.001, help="longest time a request may take (then 503)"),
    poll_s: float = typer.Option(
        1.0, "--poll-s", min=0.01, help="how often a models directory is checked for a new version"
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads per worker (docs/serving.md)"),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="forward pass: torch (model.pt2), onnx (ONNX Runtime on model.onnx), auto: onnx when the export has "
        "model.onnx and onnxruntime is installed",
    ),
    access_log: bool = _flag(False, "--access-log", help="log every request"),
) -> None:
    """Score requests over HTTP: POST /v1/score, /healthz, /readyz, /v1/metadata, /metrics (docs/serving.md)."""
    from .export.publish import current_version, is_models_dir
    from .export.serving import BACKENDS, MODEL_FILE
    from .serve.app import Settings, run

    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if is_models_dir(source) and current_version(source) is None:
        raise FileNotFoundError(
            f"{source} has no published version yet (no 'current'); publish one with "
            "`pepnet export RUN_DIR --publish MODELS_DIR`"
        )
    if not is_models_dir(source) and not (source / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{source} is neither an export directory (no {MODEL_FILE}) nor a models directory "
            "(no 'current'); run `pepnet export RUN_DIR --out DIR` or `--publish DIR`"
        )
    run(
        Settings(str(source), max_wait_ms, max_batch_rows, max_body_bytes, timeout_s, poll_s, threads, backend),
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
    )


@app.command(cls=_Command)
@_friendly
def gates(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    data: list[str] | None = typer.Option(None, "--data", help="rows to average over (default: the run's test split)"),
    out: Path | None = typer.Option(None, "--out", help="folder for gates_*.csv and gates.png (default: RUN_DIR)"),
) -> None:
    """What the gates learned: mean EPNet gate per domain x field and PPNet gate per domain x layer x task."""
    from .gate_analysis import run_gates, top_fields
    from .run import Run

    run = Run.load(run_dir)
    encoded = run._encode_files(data)[1] if data else run.test_data()
    summary = run_gates(run, encoded)
    paths = summary.write(out or run_dir)
    if summary.epnet is not None and summary.epnet.width > 9:  # more fields than fit a terminal: the top ones
        typer.echo(top_fields(summary.epnet))
    with __import__("polars").Config(tbl_rows=60, tbl_cols=40, float_precision=3):
        for table in (summary.epnet if summary.epnet is not None and summary.epnet.width <= 9 else None, summary.ppnet):
            if table is not None:
                typer.echo(table)
    typer.echo("written: " + ", ".join(str(p) for p in paths))


@app.command(cls=_Command)
@_friendly
def report(
    path: Path = typer.Argument(
        ..., help="a run directory (`pepnet fit`) or a comparison directory (`pepnet compare`)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="HTML file to write (default: PATH/report.html); its PNGs are written beside it"
    ),
) -> None:
    """One self-contained HTML page: curves, per-domain AUC / GAUC with bootstrap intervals, calibration,
    gates, provenance; for a comparison, the models side by side with paired differences."""
    from .report import write_report

    paths = write_report(path, out, log=typer.echo)
    typer.echo("written: " + ", ".join(str(p) for p in paths))


@app.command(cls=_Command)
@_friendly
def inspect(
    run_dir: Path = typer.Argument(..., help="a run directory written by `pepnet fit`"),
    row: str = typer.Option(..., "--row", help="one request as a JSON object of column -> value"),
) -> None:
    """Print one request's scores and its EPNet / PPNet gate values."""
    from .inspect_row import format_inspection, inspect_row, parse_row
    from .run import Run

    try:
        parsed = parse_row(row)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_inspection(inspect_row(Run.load(run_dir), parsed)))


@app.command(cls=_Command)
@_friendly
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="run directory"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key"),
    overwrite: bool = _flag(False, "--overwrite", help="replace an earlier quickstart run in --out"),
) -> None:
    """Train PEPNet on the vendored Ciao data (28 domains, tasks like and helpful) and print the table."""
    from .run import fit as fit_run

    typer.echo("pepnet quickstart: PEPNet on Ciao (Tang et al. 2012), chronological 80/10/10 split")
    run = fit_run(BUNDLED_CONFIGS / "ciao.yaml", out, overrides=set_, overwrite=overwrite)
    _show(run.report, out)


@app.command(cls=_Command)
@_friendly
def compare(
    config: str = typer.Argument(..., help="YAML experiment file, or a bundled config name (ciao, synthetic)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for results.json / .csv / .md / .png and the runs"),
    models: list[str] | None = typer.Option(
        None,
        "--models",
        help="models to compare, comma-separated or repeated "
        "(default: shared_bottom,mmoe,ple,star,epnet_only,ppnet_only,pepnet,gbdt)",
    ),
    seeds: int = typer.Option(3, "--seeds", help="seeds per model (train.seed, train.seed+1, ...)"),
    ablations: bool = _flag(False, "--ablations", help="also run PEPNet's ablation grid (one flag changed each)"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key for every model"),
) -> None:
    """Baselines and ablations side by side: every model x seed on one prepared data set; mean +- std tables and
    every model paired by seed against the GBDT (else shared-bottom, else the first model)."""
    cfg = _load_config(config, set_)
    from .compare import compare as run_compare
    from .compare import format_tables

    names = [m.strip() for item in (models or []) for m in item.split(",") if m.strip()] or None
    try:
        result = run_compare(cfg, out, models=names, seeds=seeds, ablations=ablations)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_tables(result, per_domain=False))


@app.command("seesaw", cls=_Command)
@_friendly
def seesaw_cmd(
    config: str = typer.Argument(..., help="YAML experiment file, or a bundled config name (ciao, seesaw, ...)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for results.json / .md / .png and the runs"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per model (train.seed, train.seed+1, ...)"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a config key for every model"),
    compare_dirs: list[str] | None = typer.Option(
        None,
        "--compare",
        help="a `pepnet compare` folder on the same data and seeds: its models join the benchmark table",
    ),
    min_class: int = typer.Option(
        100, "--min-class", min=1, help="fewest positive and negative test labels of a domain x task cell for a verdict"
    ),
    resume: bool = _flag(False, "--resume", help="reuse the runs already in --out"),
) -> None:
    """Domain and task seesaw: per domain, a model on its rows alone vs a domain-blind shared model on all rows vs
    PEPNet; per task, single-task vs all tasks vs PEPNet. Paired differences per domain x task and verdicts."""
    from .seesaw import seesaw

    try:
        result = seesaw(
            resolve_config(config),
            out,
            seeds=seeds,
            overrides=set_,
            compare_dirs=compare_dirs,
            min_class=min_class,
            resume=resume,
        )
    except (ValueError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("\n".join(result["verdicts"]))


def main() -> None:
    # OpenMP threads that busy-wait between parallel regions slow training several-fold when other processes share
    # the CPU (BENCHMARKS.md); the policy is read once, when torch loads its OpenMP runtime, so it is set here,
    # before any command imports torch. A policy the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="pepnet")


if __name__ == "__main__":
    main()
