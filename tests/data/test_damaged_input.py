"""Damaged input is never used silently: truncated CSV lines, flipped bytes in a parquet page (where the file
has page checksums), values that do not fit float32 and fractional ids are refused naming file, column, row."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pepnet.config import SchemaConfig
from pepnet.data.sources import read_files, read_table
from pepnet.data.validate import validate
from pepnet.errors import DataError, DataWarning
from pepnet.fileio import write_parquet

SCHEMA = {
    "domain": "domain", "user": "user", "labels": {"click": "click"},
    "features": [{"name": "user"}, {"name": "item"}, {"name": "domain"}, {"name": "price", "kind": "dense"}],
    "stats": [{"name": "item_price", "keys": ["item"], "stat": "mean", "target": "spend"}],
    "groups": {"general": ["user", "item", "domain", "price"], "domain_side": ["domain"], "user_prior": ["user"],
               "item_prior": ["item", "item_price"]},
}
CSV = "domain,user,item,price,spend,click\n" + "".join(f"d{i % 2},{i},{i % 7},{i / 10},{i},{i % 2}\n"
                                                       for i in range(8))


def frame(**columns) -> pl.DataFrame:
    df = pl.read_csv(CSV.encode())
    return df.with_columns(**{k: pl.Series(k, v) for k, v in columns.items()})


def check(df: pl.DataFrame, tmp_path: Path, labels: bool = True) -> None:
    path = tmp_path / "rows.parquet"
    df.write_parquet(path)
    validate(read_files([str(path)]), SchemaConfig.model_validate(SCHEMA), labels=labels)


# ----------------------------------------------------------------------------- truncated CSV


@pytest.mark.parametrize("cut, line", [
    (CSV[: CSV.index("d1,5,")] + "d1,5,5\n" + CSV[CSV.index("d0,6,"):], 7),  # a row missing fields
    (CSV[:-6], 9),                                                          # last line cut inside a field
    (CSV[:-2], 9),                                                          # cut right before the last field
])
def test_truncated_csv_names_the_line(tmp_path, cut, line):
    path = tmp_path / "log.csv"
    path.write_text(cut)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=rf"line {line}\b"):
            read_table(path)


def test_quoted_csv_rows_are_counted_too(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('a,b,c\n"x, y",2,3\n"z",5\n')
    with pytest.raises(DataError, match=r"line 3 has 2 field\(s\), the header 3 \(the file looks truncated\)"):
        read_table(path)


def test_last_line_without_newline_is_named(tmp_path):
    """A cut inside the last value leaves a complete-looking row: only the missing newline tells, so it is
    named in a warning (a file that legitimately ends without one still reads)."""
    path = tmp_path / "log.csv"
    path.write_text(CSV[:-1])  # every field there, no final newline: a cut inside "11" would look the same
    with pytest.warns(DataWarning, match=r"log\.csv, line 9: the last line does not end with a newline"):
        df = read_table(path)
    assert df.height == 8
    path.write_text(CSV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_table(path).height == 8  # a complete file: no warning


# ----------------------------------------------------------------------------- parquet page checksums


def _flip_in_data_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata.row_group(0).column(1)  # 'user'
    start = meta.dictionary_page_offset if meta.has_dictionary_page else meta.data_page_offset
    offset = start + meta.total_compressed_size // 2
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_checksummed_page_are_refused(tmp_path):
    df = pl.DataFrame({"domain": ["a"] * 1000, "user": np.arange(1000, dtype=np.int64)})
    path = tmp_path / "log.parquet"
    write_parquet(df, path)  # pepnet writes page checksums in every parquet file
    assert read_table(path)["user"].to_list() == list(range(1000))
    _flip_in_data_page(path)
    with pytest.raises(DataError, match=r"log\.parquet: cannot read file .*(checksum|CRC)"):
        read_table(path)


def test_a_file_without_checksums_cannot_be_checked(tmp_path):
    """Documented limit: without page checksums (most writers omit them) a flipped byte in a plain-encoded page
    changes values and nothing in the file can tell."""
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"domain": ["a"] * 1000, "user": np.arange(1000, dtype=np.int64)}), path,
                   compression="none", use_dictionary=False)
    _flip_in_data_page(path)
    assert read_table(path)["user"].to_list() != list(range(1000))


def test_pepnet_parquet_files_carry_page_checksums(tmp_path):
    from pepnet.datasets.synthetic import SyntheticSpec, write

    write_parquet(pl.DataFrame({"x": [1, 2]}), tmp_path / "a.parquet")
    write(SyntheticSpec(n_rows=100, n_users=10, n_items=10, n_authors=5), tmp_path / "s.parquet", progress=False)
    for name in ("a.parquet", "s.parquet"):
        data = bytearray((tmp_path / name).read_bytes())
        meta = pq.ParquetFile(tmp_path / name).metadata.row_group(0).column(0)
        data[meta.data_page_offset + meta.total_compressed_size - 2] ^= 0xFF  # the page's last byte
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(DataError):
            read_table(tmp_path / name)


# ----------------------------------------------------------------------------- impossible values


@pytest.mark.parametrize("labels", [True, False])  # fit (labels) and predict (no labels) validate alike
def test_dense_value_beyond_float32_names_file_column_row(tmp_path, labels):
    with pytest.raises(DataError) as err:
        check(frame(price=[0.1, 0.2, 0.3, 1e39, 0.5, 0.6, 0.7, 0.8]), tmp_path, labels)
    e = err.value
    assert (Path(e.file).name, e.column, e.row) == ("rows.parquet", "price", 3)
    assert "1e+39, which does not fit float32" in str(e)
    check(frame(price=[0.1, 0.2, 0.3, 3e38, 0.5, 0.6, 0.7, -3e38]), tmp_path, labels)  # within float32


def test_mean_statistic_target_beyond_float32_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"column 'spend', row 5: target of stat feature 'item_price' holds -2e\+40"):
        check(frame(spend=[1.0, 2.0, 3.0, 4.0, 5.0, -2e40, 7.0, 8.0]), tmp_path)


@pytest.mark.parametrize("labels", [True, False])
def test_fractional_ids_are_refused(tmp_path, labels):
    with pytest.raises(DataError, match=r"column 'item', row 2: id 119\.9 is not a whole number"):
        check(frame(item=[1.0, 2.0, 119.9, 4.0, 5.0, 6.0, 7.0, 8.0]), tmp_path, labels)
    check(frame(item=[1.0, 2.0, 119.0, 4.0, 5.0, 6.0, 7.0, 8.0]), tmp_path, labels)  # whole numbers stored as floats
