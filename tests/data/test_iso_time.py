"""ISO dates and datetimes as text in the time column are parsed; anything else names its row."""
from __future__ import annotations

import polars as pl
import pytest

from pepnet.config import SchemaConfig
from pepnet.data.sources import read_files
from pepnet.data.split import time_seconds
from pepnet.data.validate import validated
from pepnet.errors import DataError

SCHEMA = SchemaConfig.model_validate({"domain": "d", "user": "u", "time": "t", "labels": {"click": "y"},
                                      "features": [{"name": "u"}, {"name": "d"}],
                                      "groups": {"general": ["u", "d"], "domain_side": ["d"]}})


def _csv(tmp_path, times: list[str]) -> str:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"d": ["书"] * len(times), "u": list(range(len(times))), "t": times,
                  "y": [0, 1] * (len(times) // 2) + [0] * (len(times) % 2)}).write_csv(path)
    return str(path)


def test_iso_dates_and_datetimes_are_parsed_to_unix_seconds(tmp_path):
    times = ["2024-05-01", "2024-05-01 13:45:00", "2024-05-01T13:45:00.5", "2024-05-01T13:45:00Z",
             "2024-05-01T21:45:00+08:00", "2024-05-01 13:45"]
    frame = validated(read_files([_csv(tmp_path, times)]), SCHEMA, log=lambda _: None)
    assert frame.df["t"].dtype == pl.Datetime("us")
    secs = time_seconds(frame.df["t"]).to_list()
    day = 1714521600  # 2024-05-01T00:00:00Z
    assert secs == [day, day + 49500, day + 49500, day + 49500, day + 49500, day + 49500]


def test_a_time_that_is_no_date_names_file_column_and_row(tmp_path):
    path = _csv(tmp_path, ["2024-05-01", "2024-05-02", "yesterday"])
    with pytest.raises(DataError) as err:
        validated(read_files([path]), SCHEMA, log=lambda _: None)
    text = str(err.value)
    assert "rows.csv" in text and "column 't'" in text
    assert "'yesterday' is not an ISO date" in text and "row 2" in text  # the data row numbered as in the file
