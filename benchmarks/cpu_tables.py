"""BENCHMARKS.md's CPU tables from `pepnet bench --json` files: one row per run and variant, then what is reported.

python benchmarks/cpu_tables.py benchmarks/results/cpu_ciao_2026-12-04.json \
    benchmarks/results/cpu_ciao_2026-12-04_pm.json
Every figure is the run's median [interquartile range]. The "reported" row gives, per figure, the latest run's
median [IQR] where every run's median lies inside every other run's IQR, and otherwise the range of the medians
(a figure that moved more than its IQR between runs of the same day is reported as a range).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pepnet.bench.core import FIGURE_FORMATS, format_spread

# the figures, written as the bench writes them (FIGURE_FORMATS), with their column labels
FIGURES = (("train_sps", "train samples/s"), ("train_fraction_of_bound", "of bound"),
           ("infer_sps", "inference samples/s"), ("infer_fraction_of_bound", "of bound"),
           ("train_vs_reference", "training vs reference"), ("infer_vs_reference", "inference vs reference"))


def cell(key: str, s: dict) -> str:
    return format_spread(s, key, dash="–")


def reported(key: str, spreads: list[dict]) -> str:
    """The latest median [IQR] if the runs agree within their IQRs, else the range of their medians."""
    agree = all(o["q1"] <= s["median"] <= o["q3"] for s in spreads for o in spreads)
    if agree:
        return cell(key, spreads[-1])
    lo, hi = min(s["median"] for s in spreads), max(s["median"] for s in spreads)
    fmt = FIGURE_FORMATS[key]
    return f"{fmt(lo, hi)}–{fmt(hi, hi)} ({len(spreads)} runs)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="pepnet bench --json files of one config, oldest first")
    runs = [json.loads(p.read_text()) for p in ap.parse_args().runs]
    print("| run | variant | " + " | ".join(label for _, label in FIGURES) + " |")
    print("| --- | --- |" + " --- |" * len(FIGURES))
    variants = [r["variant"] for r in runs[0]["rows"]]
    for run in runs:
        when = f"{run['date'][11:16]} UTC, load {run['load_average_start'][0]:.2f} -> {run['load_average_end'][0]:.2f}"
        for row in run["rows"]:
            cells = [cell(k, row[k]) if k in row else "" for k, _ in FIGURES]
            print(f"| {when} | {row['variant']} | " + " | ".join(cells) + " |")
    for v in variants:
        rows = [next(r for r in run["rows"] if r["variant"] == v) for run in runs]
        cells = [f"**{reported(k, [r[k] for r in rows])}**" if k in rows[0] else "" for k, _ in FIGURES]
        print(f"| reported | {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
