"""Where a served request's time goes, stage by stage, in process: parse, encode, forward pass, JSON answer.

    python benchmarks/serve_stages.py --export EXPORT_DIR [--seconds 1]

``EXPORT_DIR``: an export of a Ciao run (``pepnet export RUN --out DIR [--format onnx]``). Builds the request
bodies that ``benchmarks/serve_load.py`` sends (single rows; one user and context with 200 candidates) from the
latest Ciao rows, and times each stage of the server's path on them (the same functions ``pepnet serve`` calls),
one thread, the median over ``--seconds`` of calls per stage. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np
import polars as pl
import torch
from backends import per_call_ms  # benchmarks/backends.py (this script's folder is on sys.path)
from starlette.responses import JSONResponse

from pepnet.bench.machine import CpuTimes, steal_fraction, steal_note
from pepnet.datasets.ciao import ratings_path
from pepnet.export.serving import ExportedModel, frame_of
from pepnet.serve.app import answer
from pepnet.serve.requests import input_fields, parse


def stage_ms(model: ExportedModel, fields: list, bodies: list[bytes], seconds: float) -> list[float]:
    """Median ms of parse, validate + encode, forward and the JSON answer over ``bodies`` (used in turn), each
    stage timed for about ``seconds``."""
    frames = [parse(b, "application/json", fields, 1 << 20)[0] for b in bodies]
    encoded = [model.encode(frame_of(f)) for f in frames]
    answers = [answer(model, model.forward(*e), []) for e in encoded]
    body, frame, enc, reply = (itertools.cycle(x) for x in (bodies, frames, encoded, answers))
    return [
        per_call_ms(lambda: parse(next(body), "application/json", fields, 1 << 20), seconds),
        per_call_ms(lambda: model.encode(frame_of(next(frame))), seconds),
        per_call_ms(lambda: model.forward(*next(enc)), seconds),
        per_call_ms(lambda: JSONResponse(next(reply)), seconds),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per stage and request kind")
    ap.add_argument("--candidates", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ExportedModel(args.export)
    model.encoder.build_lookups()
    fields = input_fields(model.encoder)
    cols = [f.name for f in fields]
    data = pl.read_parquet(ratings_path()).select(cols).tail(20000)
    schema = model.encoder.schema
    context_cols = [schema.domain, schema.user, *([schema.time] if schema.time else [])]
    items = data.select([c for c in cols if c not in context_cols]).unique(maintain_order=True)
    rng = np.random.default_rng(0)
    kinds = {
        "single row": [json.dumps({"rows": [r]}).encode() for r in data.sample(40, seed=1).to_dicts()],
        f"{args.candidates} candidates": [
            json.dumps({"context": {c: r[c] for c in context_cols},
                        "candidates": items[rng.choice(items.height, args.candidates, replace=False)].to_dicts()
                        }).encode()
            for r in data.sample(40, seed=2).to_dicts()
        ],
    }
    load, cpu = os.getloadavg()[0], CpuTimes.now()
    print(f"backend {model.backend}, tasks {model.tasks}, 1 thread, median over {args.seconds:g} s of calls, ms\n")
    print("| request | parse | validate + encode | forward | JSON answer | sum |")
    print("|---|---|---|---|---|---|")
    for kind, bodies in kinds.items():
        stages = stage_ms(model, fields, bodies, args.seconds)
        print(f"| {kind} | " + " | ".join(f"{x:.3f}" for x in stages) + f" | {sum(stages):.3f} |")
    print(f"\nload average (1 min) {load:.2f} at start, {os.getloadavg()[0]:.2f} at end"
          + steal_note(steal_fraction(cpu, CpuTimes.now())))


if __name__ == "__main__":
    main()
