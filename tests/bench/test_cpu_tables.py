"""benchmarks/cpu_tables.py reports a figure as the latest median [IQR] only where the runs agree within their
interquartile ranges, and as the range of the medians where one moved more than its IQR (issue 20's rule)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_tables.py"


def _module():
    spec = importlib.util.spec_from_file_location("cpu_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reported_is_a_range_only_where_runs_disagree():
    t = _module()
    a = {"median": 1.30, "q1": 1.25, "q3": 1.40}
    b = {"median": 1.35, "q1": 1.28, "q3": 1.38}       # each median inside the other's IQR
    c = {"median": 1.50, "q1": 1.45, "q3": 1.55}       # outside a's IQR
    assert t.reported("train_vs_reference", [a, b]) == "1.35x [1.28x–1.38x]"
    assert t.reported("train_vs_reference", [a, c]) == "1.30x–1.50x (2 runs)"
    assert t.reported("train_fraction_of_bound", [{"median": 0.7, "q1": 0.69, "q3": 0.71},
                                                  {"median": 0.8, "q1": 0.6, "q3": 0.9}]) == "70%–80% (2 runs)"


def test_table_from_bench_json(tmp_path, capsys, monkeypatch):
    t = _module()

    def run(hour: str, train: float) -> dict:
        s = {"median": train, "q1": train * 0.98, "q3": train * 1.02}
        ratio = {"median": 1.3, "q1": 1.2, "q3": 1.4}
        default = {"variant": "default", **{k: s for k, _ in t.FIGURES if k.endswith("_sps")},
                   "train_fraction_of_bound": ratio, "infer_fraction_of_bound": ratio,
                   "train_vs_reference": ratio, "infer_vs_reference": ratio}
        reference = {"variant": "reference", **{k: s for k, _ in t.FIGURES if k.endswith("_sps")},
                     "train_fraction_of_bound": ratio, "infer_fraction_of_bound": ratio}
        return {"date": f"2026-12-04T{hour}:00+00:00", "load_average_start": [0.5, 0, 0],
                "load_average_end": [1.5, 0, 0], "rows": [default, reference]}

    paths = []
    for i, (hour, train) in enumerate((("11:57", 1000.0), ("15:51", 2000.0))):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run(hour, train)))
    monkeypatch.setattr("sys.argv", ["cpu_tables.py", *map(str, paths)])
    t.main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 4 + 2                      # header, 2 runs x 2 variants, 2 reported rows
    assert lines[2].startswith("| 11:57 UTC, load 0.50 -> 1.50 | default | 1.00k [0.98k–1.02k] |")
    reported = lines[6].split(" | ")
    assert reported[2] == "**1.00k–2.00k (2 runs)**"   # train samples/s moved: a range
    assert reported[-1] == "**1.30x [1.20x–1.40x]** |"  # the ratio agreed: the latest median [IQR]
    assert lines[7].endswith("|  |  |")                 # the reference has no ratio to itself


def test_cells_write_figures_as_the_bench_does_in_the_medians_unit():
    t = _module()
    from pepnet.bench.core import format_spread

    s = {"median": 3.79e6, "q1": 0.98e6, "q3": 4.1e6}
    assert t.cell("train_sps", s) == "3.79M [0.98M–4.10M]"        # one unit per cell, millions as M
    assert format_spread(s, "train_sps") == "3.79M [0.98M-4.10M]"  # the bench's own table: a hyphen
    assert t.cell("infer_fraction_of_bound", {"median": 0.86, "q1": 0.79, "q3": 1.04}) == "86% [79%–104%]"
    assert t.reported("train_sps", [{"median": 980.0, "q1": 970.0, "q3": 990.0},
                                    {"median": 1500.0, "q1": 1400.0, "q3": 1600.0}]) == "0.98k–1.50k (2 runs)"
