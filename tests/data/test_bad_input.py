"""Bad input: every case gives one clear error (file, column, first offending row, what was expected) or a
documented warning; tested on the validation functions and through the public paths (pepnet.fit, the CLI)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

import pepnet
from pepnet.cli import app
from pepnet.config import ConfigError, SchemaConfig, parse_config
from pepnet.data.encoder import Encoder, hash_ids
from pepnet.data.sources import read_files
from pepnet.data.split import split_frame
from pepnet.data.validate import drop_missing, validate
from pepnet.errors import DataError, DataWarning

SCHEMA = {
    "domain": "domain",
    "user": "user",
    "time": "ts",
    "labels": {"click": "click", "like": "like"},
    "features": [{"name": "user"}, {"name": "item"}, {"name": "domain"}, {"name": "price", "kind": "dense"}],
    "groups": {"general": ["user", "item", "domain", "price"], "domain_side": ["domain"],
               "user_prior": ["user"], "item_prior": ["item"]},
}


def logs(n: int = 240, seed: int = 0, domains=("books", "games", "music")) -> pl.DataFrame:
    """A small interaction log that satisfies SCHEMA; both classes of both tasks in every domain."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "domain": [domains[i % len(domains)] for i in range(n)],
        "user": rng.integers(0, 30, n),
        "item": rng.integers(0, 50, n),
        "price": rng.normal(size=n),
        "ts": np.arange(n, dtype=np.int64) + 1_700_000_000,
        "click": (np.arange(n) // len(domains)) % 2,
        "like": (np.arange(n) // len(domains) // 2) % 2,
    })


def schema() -> SchemaConfig:
    return SchemaConfig.model_validate(SCHEMA)


def write(df: pl.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return str(path)


def config(files, split=None, schema_=None, **train) -> dict:
    """A raw config tree for a fast run on ``files``."""
    return {
        "data": {"files": list(files), "split": split or {"method": "random", "fractions": [0.6, 0.2, 0.2]}},
        "schema": schema_ or SCHEMA,
        "model": {"embedding_dim": 4, "hidden_units": [8], "gate_hidden": 4},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "deterministic": True, "threads": 1, **train},
    }


def check(path: str | list[str]) -> None:
    validate(read_files([path] if isinstance(path, str) else path), schema())


def set_value(df: pl.DataFrame, col: str, row: int, value) -> pl.DataFrame:
    values = df[col].to_list()
    values[row] = value
    return df.with_columns(pl.Series(col, values))


# ----------------------------------------------------------------------------- columns


def test_missing_column_is_named_with_a_suggestion(tmp_path):
    path = write(logs().rename({"price": "prise"}), tmp_path / "a.parquet")
    with pytest.raises(DataError) as err:
        check(path)
    e = err.value
    assert (e.file, e.column) == (path, "price")
    assert "dense feature 'price'" in str(e) and "did you mean 'prise'?" in str(e)


def test_missing_label_column_lists_the_columns(tmp_path):
    path = write(logs().drop("like"), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"column 'like': column is missing \(needed as label of task 'like'\)"):
        check(path)


def test_extra_column_is_a_warning_not_an_error(tmp_path):
    path = write(logs().with_columns(pl.lit("x").alias("comment")), tmp_path / "a.parquet")
    with pytest.warns(DataWarning, match=r"not referenced by the schema are ignored: \['comment'\]"):
        check(path)


# ----------------------------------------------------------------------------- values


def test_string_in_dense_feature_csv_names_file_column_row(tmp_path):
    df = logs().with_columns(pl.col("price").round(3).cast(pl.String))
    path = write(set_value(df, "price", 17, "n/a"), tmp_path / "a.csv")
    with pytest.raises(DataError) as err:
        check(path)
    e = err.value
    assert (e.file, e.column, e.row) == (path, "price", 17)
    assert "expected numbers (dense feature 'price')" in str(e) and "'n/a'" in str(e)


def test_numbers_stored_as_text_are_not_coerced(tmp_path):
    path = write(logs().with_columns(pl.col("price").cast(pl.String)), tmp_path / "a.parquet")
    with pytest.raises(DataError, match="found dtype String, first value .stored as text.") as err:
        check(path)
    assert err.value.row == 0


@pytest.mark.parametrize("bad, what", [(float("nan"), "NaN"), (float("inf"), "infinity"), (-float("inf"), "infinity"),
                                       (None, "a null")])
def test_non_finite_dense_value_names_row(tmp_path, bad, what):
    path = write(set_value(logs(), "price", 42, bad), tmp_path / "a.parquet")
    with pytest.raises(DataError) as err:
        check(path)
    assert (err.value.file, err.value.column, err.value.row) == (path, "price", 42)
    assert f"holds {what}; expected a finite number" in str(err.value)


def test_row_is_counted_within_the_file_that_holds_it(tmp_path):
    a = write(logs(seed=1), tmp_path / "a.parquet")
    b = write(set_value(logs(seed=2), "price", 7, float("nan")), tmp_path / "b.parquet")
    with pytest.raises(DataError) as err:
        check([a, b])
    assert (err.value.file, err.value.row) == (b, 7)
    assert str(err.value).startswith(f"file {b}, column 'price', row 7:")


@pytest.mark.parametrize(("col", "bad", "match"), [
    ("price", float("inf"), "expected a finite number"),
    ("click", 2.0, "expected 0, 1 or null"),
    ("domain", None, "null"),
])
def test_the_first_of_two_offending_rows_is_named(tmp_path, col, bad, match):
    """Two bad rows (the later one written first): the error names the earlier row, 17, not 150."""
    df = logs().with_columns(pl.col("click").cast(pl.Float64))
    path = write(set_value(set_value(df, col, 150, bad), col, 17, bad), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=match) as err:
        check(path)
    assert (err.value.file, err.value.column, err.value.row) == (path, col, 17)


@pytest.mark.parametrize("value", [2, -1, 0.5])
def test_label_outside_0_1_null(tmp_path, value):
    df = logs().with_columns(pl.col("click").cast(pl.Float64))
    path = write(set_value(df, "click", 99, value), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"expected 0, 1 or null") as err:
        check(path)
    assert (err.value.column, err.value.row) == ("click", 99)
    assert f"is {float(value)}" in str(err.value)


def test_null_labels_are_missing_labels_not_errors(tmp_path):
    every_third = pl.int_range(pl.len()) % 3 == 0
    df = logs().with_columns(pl.when(every_third).then(None).otherwise(pl.col("like")).alias("like"))
    frame = read_files([write(df, tmp_path / "a.parquet")])
    validate(frame, schema())
    y = Encoder(schema()).fit(frame.df).transform(frame.df).labels
    assert np.isnan(y[::3, 1]).all() and not np.isnan(y[:, 0]).any()


def test_drop_missing_removes_unlabelled_rows_and_says_how_many(tmp_path):
    # like = stars >= 4, star 0 means "no rating"; rows 0, 5, 10, ... have star 0
    df = logs().with_columns(stars=pl.when(pl.int_range(pl.len()) % 5 == 0).then(0).otherwise(pl.col("like") * 4 + 1))
    labels = {"click": "click", "like": {"column": "stars", "threshold": 4, "missing_values": [0]}}
    path = write(df, tmp_path / "a.parquet")
    kept = parse_config(config([path], schema_={**SCHEMA, "labels": dict(labels)}))
    labels["like"]["drop_missing"] = True
    dropped = parse_config(config([path], schema_={**SCHEMA, "labels": labels}))
    for cfg, rows in ((kept, 240), (dropped, 240 - 48)):
        logged: list[str] = []
        frame = drop_missing(read_files([path]), cfg.schema_, logged.append)
        assert frame.df.height == rows and (frame.df["stars"] != 0).all() == (rows < 240)
        assert logged == ([] if rows == 240 else ["dropped 48 rows without a 'like' label (column 'stars' null or one "
                                                  "of [0.0]), as drop_missing asks"])
    assert frame.locate(0) == (path, 1)  # provenance survives: the first kept row is row 1 of the file
    everything = {**labels, "like": {**labels["like"], "missing_values": [0, 1, 5]}}
    with pytest.raises(DataError, match="every row lacks a label marked drop_missing"):
        drop_missing(read_files([path]), parse_config(config([path], schema_={**SCHEMA, "labels": everything})).schema_)


# ----------------------------------------------------------------------------- files


def test_truncated_parquet_names_the_file(tmp_path):
    good = tmp_path / "good.parquet"
    logs().write_parquet(good)
    raw = good.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 3, 10):
        bad = tmp_path / f"cut{cut}.parquet"
        bad.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="cannot read file .*expected a readable parquet or CSV file") as err:
            check(str(bad))
        assert err.value.file == str(bad)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="file does not exist"):
        check(str(tmp_path / "nope.parquet"))
    other = tmp_path / "a.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="unknown file type '.json'"):
        check(str(other))


def test_empty_split_is_an_error(tmp_path):
    path = write(logs(n=30), tmp_path / "a.parquet")
    cfg = parse_config(config([path], split={"method": "random", "fractions": [0.8, 0.2, 0.0]}))
    frame = read_files([path])
    with pytest.raises(DataError, match=r"the test split is empty .*expected at least one row in each split"):
        split_frame(frame, cfg.data, cfg.schema_)


def test_empty_test_file_through_fit(tmp_path):
    train = write(logs(), tmp_path / "train.parquet")
    valid = write(logs(seed=1), tmp_path / "valid.parquet")
    test = write(logs().head(0), tmp_path / "test.parquet")
    cfg = config([train], split={"method": "files", "valid_files": [valid], "test_files": [test]})
    with pytest.raises(DataError, match="the test split is empty") as err:
        pepnet.fit(parse_config(cfg), tmp_path / "run", log=lambda _: None)
    assert err.value.file == test


# ----------------------------------------------------------------------------- ids beyond int32 / int64


def test_huge_integer_ids_vocabulary_and_hashing(tmp_path):
    """2**62 user ids (Int64), uint64 item ids near 2**64 (parquet) and the same as CSV (polars reads Int128)."""
    n = 60
    base = logs(n=n)
    user = pl.Series("user", [2**62 + (i % 7) for i in range(n)], dtype=pl.Int64)
    item = pl.Series("item", [2**64 - 1 - (i % 5) for i in range(n)], dtype=pl.UInt64)
    df = base.with_columns(user, item)
    schema_ = SchemaConfig.model_validate({**SCHEMA, "features": SCHEMA["features"] + [
        {"name": "user_h", "column": "user", "hash_buckets": 97},
        {"name": "item_h", "column": "item", "hash_buckets": 97}]})
    pq = write(df, tmp_path / "big.parquet")
    csv = write(df, tmp_path / "big.csv")
    assert pl.read_parquet(pq)["item"].dtype == pl.UInt64
    from_csv = read_files([csv]).df
    assert from_csv["item"].dtype.is_integer()  # Int128 in polars 2.1: never float (no precision loss)
    enc = Encoder(schema_).fit(read_files([pq]).df)
    a = enc.transform(read_files([pq]).df)
    b = enc.transform(from_csv)
    np.testing.assert_array_equal(a.sparse, b.sparse)  # same ids whatever integer type the reader chose
    for j, f in enumerate(enc.sparse_fields):
        assert ((a.sparse[:, j] >= f.offset) & (a.sparse[:, j] < f.offset + f.size)).all()
    names = [f.name for f in enc.sparse_fields]
    user = a.sparse[:, names.index("user")]
    assert len(np.unique(user)) == 7 and (user > enc.fields[names.index("user")].offset).all()
    assert len(np.unique(a.sparse[:, names.index("item")])) == 5
    # an id never seen in training (beyond the vocabulary's type, too) maps to the OOV row, without error
    unseen = df.head(2).with_columns(pl.Series("user", [2**64 - 2, 3], dtype=pl.UInt64))
    u = enc.transform(unseen).sparse[:, names.index("user")]
    assert (u == enc.fields[names.index("user")].offset).all()
    # hashing is by value modulo 2**64: identical for Int64 / UInt64 / Int128 representations
    h64 = hash_ids(pl.Series([2**62, -5, None], dtype=pl.Int64), 1000)
    hu = hash_ids(pl.Series([2**62, 2**64 - 5, None], dtype=pl.UInt64), 1000)
    h128 = hash_ids(pl.Series([2**62, 2**64 - 5, None], dtype=pl.Int128), 1000)
    np.testing.assert_array_equal(h64, hu)
    np.testing.assert_array_equal(hu, h128)
    assert h64[2] == 0 and (h64[:2] >= 1).all() and (h64[:2] <= 1000).all()
    with pytest.raises(DataError, match="outside"):
        hash_ids(pl.Series("item", [2**70], dtype=pl.Int128), 10)


def test_ids_beyond_64_bits_in_csv_name_the_row(tmp_path):
    df = logs(n=20).with_columns(pl.col("item").cast(pl.String))
    path = write(set_value(df, "item", 13, str(2**64 + 5)), tmp_path / "a.csv")
    assert read_files([path]).df["item"].dtype == pl.Int128
    with pytest.raises(DataError, match=r"id 18446744073709551621 is outside \[-2\*\*63, 2\*\*64\)") as err:
        check(path)
    assert (err.value.file, err.value.column, err.value.row) == (path, "item", 13)


def test_sparse_dtype_differing_from_training_names_the_file(tmp_path):
    train = write(logs(), tmp_path / "train.parquet")
    valid = write(logs(seed=1), tmp_path / "valid.parquet")
    ids = set_value(logs(seed=2), "item", 0, None).with_columns(("i" + pl.col("item").cast(pl.String)).alias("item"))
    test = write(ids, tmp_path / "test.parquet")
    cfg = config([train], split={"method": "files", "valid_files": [valid], "test_files": [test]})
    with pytest.raises(DataError, match="cannot be matched to the training vocabulary of dtype Int64") as err:
        pepnet.fit(parse_config(cfg), tmp_path / "run", log=lambda _: None)
    assert (err.value.file, err.value.column, err.value.row) == (test, "item", 1)  # row 0 is null


def test_huge_ids_train_end_to_end(tmp_path):
    df = logs().with_columns(
        (pl.col("user").cast(pl.Int64) + 2**62).alias("user"),
        (pl.lit(2**64 - 1000, dtype=pl.UInt64) + pl.col("item").cast(pl.UInt64)).alias("item"),
    )
    path = write(df, tmp_path / "big.parquet")
    tree = config([path])
    tree["schema"] = {**SCHEMA, "features": [{"name": "user", "hash_buckets": 64}, {"name": "item"},
                                             {"name": "domain"}, {"name": "price", "kind": "dense"}]}
    run = pepnet.fit(parse_config(tree), tmp_path / "run", log=lambda _: None)
    assert math.isfinite(run.report.summary()["mean_auc"])


# ----------------------------------------------------------------------------- splits without a class, unseen domains


def test_single_class_task_and_unseen_domain(tmp_path):
    """Policy: a task with one class in a split -> warning, AUC undefined (null, never 0.5); a domain the training
    split never had -> warning, scored with the OOV domain embedding, reported under its own name."""
    train = write(logs(domains=("books", "games")), tmp_path / "train.parquet")
    valid = write(logs(seed=1, domains=("books", "games")), tmp_path / "valid.parquet")
    test_df = logs(seed=2, domains=("books", "games", "toys")).with_columns(pl.lit(0).alias("like"))
    test = write(test_df, tmp_path / "test.parquet")
    cfg = parse_config(config([train], split={"method": "files", "valid_files": [valid], "test_files": [test]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = pepnet.fit(cfg, tmp_path / "run", log=lambda _: None)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("test split has only negative labels for task 'like'" in m for m in msgs), msgs
    assert any("domains never seen in training: ['toys']" in m for m in msgs), msgs
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["overall"]["like"]["auc"] is None and metrics["overall"]["like"]["gauc"] is None
    assert metrics["overall"]["click"]["auc"] is not None
    toys = [r for r in metrics["per_domain"] if r["domain"] == "toys"]
    assert {r["task"] for r in toys} == {"click", "like"} and toys[0]["rows"] == (test_df["domain"] == "toys").sum()
    assert "toys" in run.report.format_table()
    # the unseen domain is encoded as the domain field's OOV row (row 0 of that field)
    enc = run.encoder
    field = enc.fields[enc.field_index("domain")]
    toy_rows = (test_df["domain"] == "toys").to_numpy()
    ids = enc.transform(test_df).sparse[:, enc.field_index("domain")]
    assert (ids[toy_rows] == field.offset).all() and (ids[~toy_rows] > field.offset).all()


@pytest.mark.parametrize("value, kind", [(0, "negative"), (1, "positive")])
def test_split_with_one_class_warns_and_trains(tmp_path, value, kind):
    df = logs().with_columns(pl.lit(value).alias("like"))
    path = write(df, tmp_path / "a.parquet")
    with pytest.warns(DataWarning, match=f"train split has only {kind} labels for task 'like'"):
        run = pepnet.fit(parse_config(config([path])), tmp_path / "run", log=lambda _: None)
    overall = {r["task"]: r for r in run.report.overall()}
    assert math.isnan(overall["like"]["auc"]) and math.isnan(overall["like"]["gauc"])
    assert not math.isnan(overall["click"]["auc"]) and not math.isnan(overall["like"]["logloss"])
    assert "—" in run.report.format_table()  # shown as undefined, not as a number


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("override, message", [
    ("train.dense_lr=-0.1", r"train.dense_lr: Input should be greater than 0 \(got -0.1\)"),
    ("train.embeding_lr=0.1", r"train.embeding_lr: unknown key; did you mean 'embedding_lr'\?"),
    ("model.hidden_units=[]", r"model.hidden_units: List should have at least 1 item"),
    ("model.hidden_units=[16,0]", r"hidden_units must be positive"),
    ("train.epochs=0", r"train.epochs: Input should be greater than 0"),
    ("data.split.fractions=[0.5,0.5,0.5]", r"split fractions must be >= 0, train > 0 and sum to 1"),
    ("train.on_nan=ignore", r"train.on_nan: Input should be 'error' or 'skip'"),
    ("train.memory_limit_gb=0", r"train.memory_limit_gb: Input should be greater than 0"),
])
def test_bad_config_values(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config(["x.parquet"]), "exp.yaml", [override])


def test_schema_group_typo_is_named():
    tree = config(["x.parquet"])
    tree["schema"] = {**SCHEMA, "groups": {**SCHEMA["groups"], "item_prior": ["itme"]}}
    with pytest.raises(ConfigError,
                       match=r"groups.item_prior: 'itme' is not a declared feature; did you mean 'item'\?"):
        parse_config(tree)


# ----------------------------------------------------------------------------- the public paths


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_cli_data_error_exit_2_one_line(tmp_path):
    """A real process: exit status 2 and exactly one `error:` line naming file, column and row."""
    path = write(set_value(logs(), "price", 5, float("inf")), tmp_path / "a.parquet")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(config([path])))
    proc = subprocess.run([sys.executable, "-m", "pepnet", "fit", str(cfg), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert line == (f"error: file {path}, column 'price', row 5: dense feature 'price' holds infinity; "
                    "expected a finite number")


@pytest.mark.parametrize("case", ["truncated", "config_typo", "negative_lr"])
def test_cli_exit_2(tmp_path, case):
    good = write(logs(), tmp_path / "a.parquet")
    tree, sets = config([good]), []
    if case == "truncated":
        raw = Path(good).read_bytes()
        Path(good).write_bytes(raw[: len(raw) // 3])
    elif case == "config_typo":
        tree["train"]["batchsize"] = 3
    else:
        sets = ["--set", "train.embedding_lr=-1"]
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["fit", str(cfg), "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    expect = {"truncated": f"error: file {good}: cannot read file",
              "config_typo": f"error: invalid configuration in {cfg}:",
              "negative_lr": f"error: invalid configuration in {cfg}:"}[case]
    assert line.startswith(expect), line
    detail = {"truncated": "expected a readable parquet",
              "config_typo": "train.batchsize: unknown key; did you mean 'batch_size'?",
              "negative_lr": "train.embedding_lr: Input should be greater than 0"}[case]
    assert detail in result.stderr
