"""Forward pass of an export, torch program against ONNX Runtime, at the batch sizes serving sees.

    python benchmarks/backends.py --export EXPORT_DIR [--rows 1 200 4096] [--repeats 5] [--threads 1]

``EXPORT_DIR`` must hold ``model.onnx`` (``pepnet export RUN --out DIR --format onnx``). Both backends score the
same encoded random rows; per batch size they are timed round by round in alternating order (``--repeats``
rounds, each the median of many calls), and the table gives the median and interquartile range of each
backend's milliseconds per call and of the ratio torch / ONNX Runtime taken round by round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pepnet.bench.machine import CpuTimes, steal_fraction, steal_note
from pepnet.export.serving import ExportedModel, _example_inputs


def per_call_ms(fn, seconds: float) -> float:
    """Median milliseconds of ``fn()`` over calls for about ``seconds`` (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="an export directory with model.onnx")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 200, 4096])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing window per backend, size and round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    models = {b: ExportedModel(args.export, backend=b) for b in ("torch", "onnx")}
    load, cpu_start = [os.getloadavg()[0]], CpuTimes.now()
    result: dict = {"export": str(args.export), "threads": args.threads, "sizes": {}}
    for rows in args.rows:
        sparse, dense = _example_inputs(models["torch"].encoder, rows, seed=rows)
        got: dict[str, list[float]] = {"torch": [], "onnx": []}
        for r in range(args.repeats):
            for b in (("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")):
                got[b].append(per_call_ms(lambda b=b, s=sparse, d=dense: models[b].forward(s, d),
                                          args.seconds))
        ratio = [t / o for t, o in zip(got["torch"], got["onnx"], strict=True)]
        result["sizes"][rows] = {**got, "ratio": ratio}
    load.append(os.getloadavg()[0])
    result["loadavg"] = load
    result["cpu_steal"] = steal_fraction(cpu_start, CpuTimes.now())
    print("| rows | torch ms | ONNX Runtime ms | torch / ONNX Runtime |\n|---|---|---|---|")
    for rows, r in result["sizes"].items():
        cells = [quartiles(r[k]) for k in ("torch", "onnx", "ratio")]
        print(f"| {rows} | " + " | ".join(f"{q2:.3f} [{q1:.3f}-{q3:.3f}]" for q1, q2, q3 in cells[:2])
              + " | {1:.2f}x [{0:.2f}-{2:.2f}x] |".format(*cells[2]))
    print(f"\n{args.threads} thread(s), {args.repeats} interleaved rounds; load average (1 min) {load[0]:.2f} at "
          f"start, {load[1]:.2f} at end" + steal_note(result["cpu_steal"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
