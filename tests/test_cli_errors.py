"""Problems a user can fix give one `error:` line and exit status 2, never a traceback: a read-only folder in
fit / resume / predict / gates, a full disk, a model changed on resume, weights from another run, damaged or
missing run files (encoder.json, metrics.json, layout.json, vocabularies)."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "a"))


def one_error_line(args: list[str], expected: str) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], res.output  # beside the progress log, if any
    assert "Traceback" not in res.output, res.output
    return errors[0]


@pytest.fixture
def read_only(monkeypatch):
    """Make every file pepnet writes under a folder fail as on a read-only folder (EACCES); works as root too."""
    real, denied = os.open, []

    def fake(path, flags, *args, **kwargs):
        if flags & os.O_WRONLY and any(str(Path(path).resolve()).startswith(d) for d in denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr("pepnet.fileio.os.open", fake)
    return lambda folder: denied.append(str(folder.resolve()))


def test_read_only_folder_in_fit_resume_predict_and_gates(run, tiny_config_yaml, synthetic_parquet, tmp_path,
                                                          read_only):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    one_error_line(["fit", str(tiny_config_yaml), "--out", str(tmp_path / "ro" / "new")], "Permission denied")
    read_only(run)
    one_error_line(["fit", "--resume", "--out", str(run)], "Permission denied")
    one_error_line(["gates", str(run)], "check the folder's permissions")
    one_error_line(["predict", str(run), "--data", str(synthetic_parquet), "--out", str(tmp_path / "ro" / "p.pq")],
                   "Permission denied")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_really_read_only_folder(tiny_config_yaml, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(["fit", str(tiny_config_yaml), "--out", str(ro / "new")], "Permission denied")
    finally:
        ro.chmod(0o755)


def test_full_disk_during_a_checkpoint(run, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "history.csv"))

    monkeypatch.setattr("pepnet.fileio.os.fsync", full)
    one_error_line(["fit", "--resume", "--out", str(run)], "No space left on device")


def test_model_changed_on_resume(run):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden_units"] = [32, 4]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    one_error_line(["fit", "--resume", "--out", str(run)], "holds the weights of another model")


def test_model_pt_from_another_run(run, tiny_config_yaml, tmp_path):
    other = tmp_path / "b"
    pepnet.fit(tiny_config_yaml, other, overrides=["model.hidden_units=[8]", "train.epochs=1"], log=lambda _: None)
    shutil.copy(other / "model.pt", run / "model.pt")
    one_error_line(["evaluate", str(run)], "holds the weights of another model")


@pytest.mark.parametrize("name, damage, expected", [
    ("encoder/encoder.json", b'{"schema": {', "encoder file"),
    ("encoder/encoder.json", b'{"schema": {}}', "encoder file"),
    ("metrics.json", b"[1, 2", "metrics file"),
    ("metrics.json", b'{"rows": 3}', "metrics file"),
    ("layout.json", b"", "layout file"),
    ("layout.json", b'{"tasks": []}', "layout file"),
])
def test_damaged_run_files(run, name, damage, expected):
    (run / name).write_bytes(damage)
    one_error_line(["evaluate", str(run)], expected)


def test_truncated_or_missing_vocabulary(run):
    vocab = sorted((run / "encoder").glob("vocab.*.parquet"))[0]
    data = vocab.read_bytes()
    vocab.write_bytes(data[: len(data) // 2])
    one_error_line(["evaluate", str(run)], vocab.name)
    vocab.unlink()
    one_error_line(["evaluate", str(run)], vocab.name)
    assert json.loads((run / "encoder" / "encoder.json").read_text())["vocabs"]
