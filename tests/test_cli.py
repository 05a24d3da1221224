"""The command line (fit -> evaluate -> predict, clear errors) and the Python API it wraps
(pepnet.fit, Run.load, Run.evaluate, Run.predict), on a 3,000-row synthetic parquet file."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import typer
import yaml
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.metrics import MetricsReport

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RUN_FILES = ("config.yaml", "encoder/encoder.json", "layout.json", "model.pt", "checkpoint.pt", "history.csv",
             "metrics.json", "metrics.csv", "run.json")


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, synthetic_parquet, tiny_config_tree):
    """One `pepnet fit` run shared by the tests of this module: (config path, run directory, CLI result)."""
    tiny_config = tiny_config_tree
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config([str(synthetic_parquet)])))
    result = _cli("fit", config, "--out", root / "run", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    return config, root / "run", result


# ----------------------------------------------------------------------------- command line


def test_fit_writes_a_run_directory_and_prints_the_table(fitted):
    _, run, result = fitted
    for name in RUN_FILES:
        assert (run / name).is_file(), f"{name} missing from the run directory"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2  # the --set override is what the run used and saved
    assert pl.read_csv(run / "history.csv").height == 2
    report = MetricsReport.from_json(run / "metrics.json")
    assert report.task_names == ["click", "like"]
    assert "click" in result.stdout and "like" in result.stdout and "metrics.json" in result.stdout
    assert 0.0 <= report.get("click")["auc"] <= 1.0


def test_evaluate_reproduces_the_test_metrics(fitted, tmp_path):
    _, run, _ = fitted
    result = _cli("evaluate", run, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert "click" in result.stdout
    assert MetricsReport.from_json(tmp_path / "ev" / "metrics.json").to_dict() == \
        MetricsReport.from_json(run / "metrics.json").to_dict()


def test_evaluate_on_other_files(fitted, synthetic_parquet, tmp_path):
    _, run, _ = fitted
    result = _cli("evaluate", run, "--data", synthetic_parquet, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    report = MetricsReport.from_json(tmp_path / "ev" / "metrics.json")
    assert report.get("click")["rows"] == pl.read_parquet(synthetic_parquet).height


def test_predict_writes_one_row_per_input_row(fitted, synthetic_parquet, tmp_path):
    _, run, _ = fitted
    out = tmp_path / "preds" / "p.parquet"
    result = _cli("predict", run, "--data", synthetic_parquet, "--out", out)
    assert result.exit_code == 0, result.output
    preds, data = pl.read_parquet(out), pl.read_parquet(synthetic_parquet)
    assert preds.height == data.height
    assert {"p_click", "p_like"} <= set(preds.columns)
    assert preds["user_id"].to_list() == data["user_id"].to_list()      # input order kept
    assert preds["domain_id"].to_list() == data["domain_id"].to_list()
    for col in ("p_click", "p_like"):
        p = preds[col].to_numpy()
        assert np.all((p > 0) & (p < 1)) and p.std() > 0
    assert f"{data.height:,} rows" in result.stdout


def test_predict_carries_the_keys_and_the_kept_columns(fitted, synthetic_parquet, tmp_path):
    """Each prediction row carries its domain, user, item and time (the schema's keys) and the --keep columns,
    so it joins back to its input row by key, not only by position."""
    _, run, _ = fitted
    out = tmp_path / "p.parquet"
    result = _cli("predict", run, "--data", synthetic_parquet, "--out", out,
                  "--keep", "author_id,d0", "--keep", "user_id")
    assert result.exit_code == 0, result.output
    preds, data = pl.read_parquet(out), pl.read_parquet(synthetic_parquet)
    keys = ["domain_id", "user_id", "item_id", "time", "author_id", "d0"]
    assert preds.columns == [*keys, "p_click", "p_like"]
    assert preds.select(keys).equals(data.select(keys))


def test_predict_refuses_a_kept_column_the_input_lacks(fitted, synthetic_parquet, tmp_path):
    _, run, _ = fitted
    line = _one_error_line(_cli("predict", run, "--data", synthetic_parquet, "--out", tmp_path / "p.parquet",
                                "--keep", "order_id"))
    assert "'order_id'" in line and "input does not have it" in line and not (tmp_path / "p.parquet").exists()


def test_predict_needs_no_label_columns(fitted, synthetic_parquet, tmp_path):
    _, run, _ = fitted
    unlabelled = tmp_path / "new.parquet"
    pl.read_parquet(synthetic_parquet).drop("click", "like").head(50).write_parquet(unlabelled)
    result = _cli("predict", run, "--data", unlabelled, "--out", tmp_path / "p.parquet")
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "p.parquet").height == 50


def test_bad_config_key_exits_2_with_one_line(tmp_path, tiny_config_tree, synthetic_parquet):
    tree = tiny_config_tree([str(synthetic_parquet)])
    tree["model"]["embeding_dim"] = 8
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    line = _one_error_line(_cli("fit", path, "--out", tmp_path / "run"))
    assert "model.embeding_dim" in line and "did you mean 'embedding_dim'" in line and "bad.yaml" in line
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("override,fragment", [
    ("train.epochs=0", "train.epochs"),
    ("model.hidden_units=[]", "model.hidden_units"),
    ("train.dense_lr", "key.path=value"),
])
def test_bad_override_exits_2_with_one_line(tiny_config_file, tmp_path, override, fragment):
    line = _one_error_line(_cli("fit", tiny_config_file, "--out", tmp_path / "run", "--set", override))
    assert fragment in line


def test_missing_config_or_run_directory_exits_2(tmp_path):
    assert "nope.yaml" in _one_error_line(_cli("fit", tmp_path / "nope.yaml", "--out", tmp_path / "run"))
    assert "not a run directory" in _one_error_line(_cli("evaluate", tmp_path))


# ----------------------------------------------------------------------------- Python API


def test_python_api_fit_load_evaluate_predict(tiny_config_file, synthetic_parquet, tmp_path):
    run = pepnet.fit(tiny_config_file, out=tmp_path / "run", overrides=["train.seed=5"], log=lambda _: None)
    assert isinstance(run, pepnet.Run) and run.config.train.seed == 5
    assert run.report.task_names == ["click", "like"]

    loaded = pepnet.Run.load(tmp_path / "run")
    assert loaded.report.to_dict() == run.report.to_dict()
    assert loaded.evaluate().to_dict() == run.report.to_dict()       # test split, same numbers

    preds = loaded.predict(str(synthetic_parquet))
    assert preds.columns[-2:] == ["p_click", "p_like"] and preds.height == 3000
    direct = run.predict([str(synthetic_parquet)])
    np.testing.assert_allclose(preds["p_click"].to_numpy(), direct["p_click"].to_numpy(), rtol=1e-6)

    on_file = loaded.evaluate(str(synthetic_parquet))
    assert on_file.get("like")["rows"] == 3000


def test_python_api_accepts_a_config_object(tiny_config_tree, tmp_path):
    from pepnet.config import parse_config

    config = parse_config(tiny_config_tree(n_rows=2000))
    run = pepnet.fit(config, out=tmp_path / "run", log=lambda _: None)
    assert (tmp_path / "run" / "model.pt").is_file()
    assert set(run.report.domain_names) <= {"0", "1", "2"} and run.report.domain_names


def test_version_prints_the_package_version():
    result = _cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"pepnet {pepnet.__version__}"


def test_flags_show_no_value_placeholder_in_help():
    """Boolean flags (--resume, --help, ...) take no value: no command's help may suggest one."""
    commands = [[], *([name] for name in typer.main.get_command(app).commands)]  # type: ignore[attr-defined]
    assert len(commands) > 10
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "160", "NO_COLOR": "1"})
        assert result.exit_code == 0 and "--help" in result.output, result.output
        assert "<bool>" not in result.output, (command, [ln for ln in result.output.splitlines() if "<bool>" in ln])


_STARTUP_PROBE = """
import os, sys
from pepnet.cli import main
sys.argv = ["pepnet", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(f"exit={code} torch={'torch' in sys.modules} polars={'polars' in sys.modules} "
      f"omp={os.environ.get('OMP_WAIT_POLICY')}")
"""


@pytest.mark.parametrize("args,code", [(["--help"], 0), (["--version"], 0), (["fit", "--help"], 0),
                                       (["fit", "{bad}", "--out", "{out}"], 2),
                                       (["compare", "no_such_config", "--out", "{out}"], 2)])
def test_help_version_and_config_errors_do_not_import_torch(tmp_path, args, code):
    """`pepnet --help` and a config error answer without loading torch or polars (their import is most of a
    second); OMP_WAIT_POLICY is set to PASSIVE before any command could import torch."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epochs: -1}\n")
    argv = [a.format(bad=bad, out=tmp_path / "run") for a in args]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", _STARTUP_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert f"exit={code} torch=False polars=False omp=PASSIVE" in proc.stdout, proc.stdout + proc.stderr


def test_a_wait_policy_the_user_set_is_kept(monkeypatch):
    from pepnet.cli import main

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr("sys.argv", ["pepnet", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
