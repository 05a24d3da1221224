"""A run directory is never mixed or overwritten by accident: a non-empty --out needs --resume or --overwrite;
predict never writes over its input; run files are written atomically and never through a link; leftovers of
killed writers are removed at the next start; resume overrides that cannot take effect are refused."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.config import ConfigError


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_fit_into_a_non_empty_out_is_refused(tiny_run, tiny_config_yaml, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(tiny_run, run)
    before = _snapshot(run)
    res = CliRunner().invoke(app, ["fit", str(tiny_config_yaml), "--out", str(run), "--set", "train.seed=4"])
    assert res.exit_code == 2 and res.output.startswith("error: --out ") and "is not empty" in res.output
    assert "--resume" in res.output and "--overwrite" in res.output
    assert _snapshot(run) == before  # config.yaml, run.json, checkpoints: untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        pepnet.fit(tiny_config_yaml, other, log=lambda _: None)


def test_overwrite_replaces_the_run_files_only(tiny_run, tiny_config_yaml, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(tiny_run, run)
    (run / "stream.csv").write_text("stale run file\n")
    (run / "notes.txt").write_text("the user's own file")
    res = CliRunner().invoke(app, ["fit", str(tiny_config_yaml), "--out", str(run), "--overwrite",
                                   "--set", "train.seed=4"])
    assert res.exit_code == 0, res.output
    assert not (run / "stream.csv").exists() and (run / "notes.txt").read_text() == "the user's own file"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 4


def test_predict_never_overwrites_its_input(tiny_run, synthetic_parquet, tmp_path):
    data = tmp_path / "rows.parquet"
    shutil.copy(synthetic_parquet, data)
    before = data.read_bytes()
    runner = CliRunner()
    for out in (str(data), str(tmp_path / "." / "rows.parquet")):
        res = runner.invoke(app, ["predict", str(tiny_run), "--data", str(data), "--out", out])
        assert res.exit_code == 2 and "is one of the --data files" in res.output, res.output
    res = runner.invoke(app, ["predict", str(tiny_run), "--data", str(data), "--out", str(tmp_path)])
    assert res.exit_code == 2 and res.output.startswith("error: --out") and "is a folder" in res.output
    assert data.read_bytes() == before


def test_run_files_are_not_written_through_links(tiny_run, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(tiny_run, run)
    victim = tmp_path / "victim.csv"
    victim.write_text("not pepnet's")
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to(victim)
    pepnet.fit(None, run, resume=True, log=lambda _: None)  # finished run: writes history.csv and metrics again
    assert victim.read_text() == "not pepnet's"
    assert not (run / "history.csv").is_symlink() and (run / "history.csv").read_text().startswith("epoch")


def test_a_failed_config_write_leaves_no_empty_config(tiny_config_yaml, tmp_path, monkeypatch):
    """A kill (here: a full disk) while config.yaml is written leaves no config.yaml at all, never 0 bytes; the
    next fit in that folder starts cleanly."""
    real = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "config.yaml":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr("pepnet.fileio.os.replace", full_disk)
    res = CliRunner().invoke(app, ["fit", str(tiny_config_yaml), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.startswith("error: No space left on device: ") \
        and "free some space" in res.output, res.output
    assert not (tmp_path / "r" / "config.yaml").exists() and not list((tmp_path / "r").glob(".*tmp*"))


def test_orphan_temporary_files_are_removed_at_the_next_start(tiny_run, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(tiny_run, run)
    orphan = run / ".checkpoint.pt.tmp99999999"
    orphan.write_bytes((run / "checkpoint.pt").read_bytes())
    logged: list[str] = []
    pepnet.fit(None, run, resume=True, log=logged.append)
    assert not orphan.exists()
    assert any("removed 1 temporary file(s)" in m and ".checkpoint.pt.tmp99999999" in m for m in logged)


def test_resume_refuses_overrides_that_cannot_take_effect(tiny_run, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(tiny_run, run)
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"--set train\.dense_lr cannot take effect"):
        pepnet.fit(None, run, resume=True, overrides=["train.dense_lr=0.05"], log=lambda _: None)
    res = CliRunner().invoke(app, ["fit", "--resume", "--out", str(run), "--set", "train.dense_lr=0.05"])
    assert res.exit_code == 2 and "cannot take effect" in res.output
    assert _snapshot(run) == before
    logged: list[str] = []
    pepnet.fit(None, run, resume=True, overrides=["train.eval_batch_size=512"], log=logged.append)
    assert any("--resume: applying train.eval_batch_size=512" in m for m in logged)
