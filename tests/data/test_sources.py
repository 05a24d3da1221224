"""Reading several files (parquet and CSV), joining side tables, provenance of rows for error messages."""
from __future__ import annotations

import polars as pl
import pytest

import pepnet
from pepnet.config import SideTable
from pepnet.data.sources import join_side_tables, read_files
from pepnet.datasets.synthetic import SyntheticSpec, generate
from pepnet.errors import DataError


def test_several_files_keep_their_provenance(tmp_path):
    a = pl.DataFrame({"u": [1, 2, 3], "y": [0, 1, 0]})
    b = pl.DataFrame({"u": [4, 5], "y": [1, 1]})
    a.write_parquet(tmp_path / "a.parquet")
    b.write_csv(tmp_path / "b.csv")
    frame = read_files([str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")])
    assert frame.df["u"].to_list() == [1, 2, 3, 4, 5]
    assert frame.locate(4) == (str(tmp_path / "b.csv"), 1)  # second data row of b.csv
    assert frame.locate(0) == (str(tmp_path / "a.parquet"), 0)


def test_side_table_join_and_errors(tmp_path):
    inter = pl.DataFrame({"user": [1, 2, 1, 3], "y": [0, 1, 1, 0]})
    inter.write_parquet(tmp_path / "i.parquet")
    pl.DataFrame({"user": [1, 2, 3], "age": [20, 30, 40]}).write_csv(tmp_path / "users.csv")
    frame = join_side_tables(read_files([str(tmp_path / "i.parquet")]),
                             [SideTable(path=str(tmp_path / "users.csv"), key="user")])
    assert frame.df["age"].to_list() == [20, 30, 20, 40]  # order of the interactions is kept
    pl.DataFrame({"user": [1, 1], "age": [20, 21]}).write_csv(tmp_path / "dup.csv")
    with pytest.raises(DataError, match=r"dup\.csv.*column 'user'.*row 1.*repeats"):
        join_side_tables(read_files([str(tmp_path / "i.parquet")]),
                         [SideTable(path=str(tmp_path / "dup.csv"), key="user")])


def test_fit_with_side_tables_and_csv(tmp_path):
    """An item table joined on item_id supplies a feature the interactions lack."""
    df = generate(SyntheticSpec(n_rows=3000, n_users=200, n_items=300, seed=3))
    items = df.group_by("item_id").agg(pl.col("item_category").first()).sort("item_id")
    df.drop("item_category").write_csv(tmp_path / "logs.csv")
    items.write_parquet(tmp_path / "items.parquet")
    from pepnet.cli import resolve_config

    run = pepnet.fit(resolve_config("synthetic"), tmp_path / "run", log=lambda _: None, overrides=[
        "data.dataset=null", f"data.files=[{tmp_path / 'logs.csv'}]",
        f"data.side_tables=[{{path: {tmp_path / 'items.parquet'}, key: item_id}}]",
        "train.epochs=1", "train.progress=false", "model.hidden_units=[8]",
    ])
    cat = run.encoder.vocabs["item_category"]
    assert 1 < len(cat) <= 50
    assert run.report.get("click")["rows"] == 300
