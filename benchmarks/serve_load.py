"""Serving benchmark: `pepnet serve` with a Ciao model, driven over loopback by a concurrent client.

    python benchmarks/serve_load.py --run runs/quickstart --out benchmarks/results/serve

Exports the run (``--run``: a Ciao run directory, e.g. from ``pepnet quickstart``), publishes it as version 1 of
a models directory, starts ``pepnet serve`` on a free 127.0.0.1 port and measures, each phase bounded in
requests and seconds:

- single-row requests, one client: p50 / p99 latency;
- 200-candidate ranking requests (one user and context, 200 items), one client: p50 / p99, candidates/s;
- ranking requests at 8, 32 and 64 concurrent clients: rows/s, against the in-process Predictor's rows/s on
  200-row frames (the same encode + forward code), measured in the same run before and after the server phases;
- a new version published in the middle of a 32-client phase: p99 and errors from the publish until the swap
  has served for one second.

``--format onnx`` exports ``model.onnx`` too, so that server and Predictor score with ONNX Runtime.

Prints a markdown table and writes ``serve_load.json`` into ``--out``. The client is asyncio with one
keep-alive connection per simulated client, in this process; it shares the CPU with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from pepnet.bench.machine import CpuTimes, steal_fraction, steal_note
from pepnet.datasets.ciao import ratings_path
from pepnet.export import export_run
from pepnet.export.publish import publish
from pepnet.export.serving import ExportedModel, frame_of
from pepnet.serve.launch import running_server


def request_bytes(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/score HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> tuple[int, bytes]:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return status, await reader.readexactly(length)


async def drive(port: int, bodies: list[bytes], clients: int, max_requests: int, seconds: float,
                on_start=None) -> dict:
    """``clients`` connections each sending the bodies round-robin until ``max_requests`` in all or ``seconds``."""
    latencies: list[tuple[float, float]] = []  # (finish time, latency)
    versions: list[tuple[float, str]] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                t0 = time.perf_counter()
                status, payload = await _one(reader, writer, bodies[i % len(bodies)])
                t1 = time.perf_counter()
                i += clients
                if status != 200:
                    errors += 1
                    continue
                latencies.append((t1, t1 - t0))
                v = payload[payload.index(b'"model_version":"') + 17:]
                versions.append((t1, v[:v.index(b'"')].decode()))
        finally:
            writer.close()

    start = time.perf_counter()
    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    if on_start:
        tasks.append(asyncio.create_task(on_start()))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    return {"latencies": latencies, "versions": versions, "errors": errors, "wall": wall, "start": start}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def summarise(res: dict, rows_per_request: int) -> dict:
    lat = [x for _, x in res["latencies"]]
    return {"requests": len(lat), "errors": res["errors"], "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "rows_per_s": len(lat) * rows_per_request / res["wall"]}


def predictor_rows_per_s(model: ExportedModel, frames: list[pl.DataFrame], seconds: float) -> float:
    """Rows/s of the in-process encode + forward (``ExportedModel.score``) on the given frames, one at a time."""
    rows, start = 0, time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        rows += len(model.score(frame_of(frames[i % len(frames)])))
        i += 1
    return rows / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a Ciao run directory (pepnet quickstart --out DIR)")
    ap.add_argument("--out", default="benchmarks/results/serve", help="folder for the models dir and the JSON")
    ap.add_argument("--seconds", type=float, default=8.0, help="longest time per phase")
    ap.add_argument("--requests", type=int, default=3000, help="most requests per phase")
    ap.add_argument("--candidates", type=int, default=200, help="candidates per ranking request")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the Predictor")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--format", choices=["torch", "onnx"], default="torch",
                    help="export format; with onnx, server and Predictor score with ONNX Runtime (backend auto)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    models = out / "models"
    if models.exists():
        shutil.rmtree(models)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    export_run(args.run, out / "export", ("torch", "onnx") if args.format == "onnx" else ("torch",))
    print(f"exported {args.run} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    publish(models, lambda folder: shutil.copytree(out / "export", folder))

    model = ExportedModel(out / "export")
    cols = [f.name for f in __import__("pepnet.serve.requests", fromlist=["input_fields"]).input_fields(model.encoder)]
    data = pl.read_parquet(ratings_path()).select(cols).tail(20000)  # the latest rows, as the test split's period
    rng = np.random.default_rng(0)
    singles = [request_bytes({"rows": [r]}) for r in data.sample(500, seed=1).to_dicts()]
    schema = model.encoder.schema
    context_cols = [schema.domain, schema.user, *([schema.time] if schema.time else [])]
    item_cols = [c for c in cols if c not in context_cols]
    items = data.select(item_cols).unique(maintain_order=True)
    rank_frames, rank_bodies = [], []
    for r in data.sample(40, seed=2).to_dicts():
        cand = items[rng.choice(items.height, args.candidates, replace=False)]
        ctx = {c: r[c] for c in context_cols}
        rank_bodies.append(request_bytes({"context": ctx, "candidates": cand.to_dicts()}))
        rank_frames.append(cand.with_columns([pl.lit(v, dtype=data.schema[c]).alias(c) for c, v in ctx.items()])
                           .select(cols))

    load, cpu_start = [os.getloadavg()], CpuTimes.now()
    results: dict = {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(), "threads": args.threads,
                     "backend": model.backend}
    offline = [predictor_rows_per_s(model, rank_frames, args.seconds / 2)]
    with running_server(models, "--threads", str(args.threads), "--max-wait-ms", str(args.max_wait_ms),
                        "--poll-s", "0.2", log=out / "server.log") as port:
        loop = asyncio.new_event_loop()
        run = loop.run_until_complete
        run(drive(port, singles[:50] + rank_bodies[:5], 4, 100, 5))  # warm-up
        results["single"] = summarise(run(drive(port, singles, 1, args.requests, args.seconds)), 1)
        rank = summarise(run(drive(port, rank_bodies, 1, args.requests, args.seconds)), args.candidates)
        rank["candidates_per_s"] = rank.pop("rows_per_s")
        results["ranking"] = rank
        for c in (8, 32, 64):
            results[f"clients_{c}"] = summarise(run(drive(port, rank_bodies, c, args.requests, args.seconds)),
                                                args.candidates)
            load.append(os.getloadavg())
        published: dict = {}

        async def swap_later() -> None:
            await asyncio.sleep(args.seconds / 4)
            published["t"] = time.perf_counter()
            published["version"] = await asyncio.to_thread(
                publish, models, lambda folder: shutil.copytree(out / "export", folder))

        swap = run(drive(port, rank_bodies, 32, 10 * args.requests, 2 * args.seconds, swap_later))
        loop.close()
    offline.append(predictor_rows_per_s(model, rank_frames, args.seconds / 2))
    load.append(os.getloadavg())
    new = str(published["version"])
    first_new = min((t for t, v in swap["versions"] if v == new), default=float("nan"))
    window = [x for t, x in swap["latencies"] if published["t"] <= t <= first_new + 1.0]
    results["swap"] = {"requests": len(swap["latencies"]), "errors": swap["errors"], "window_requests": len(window),
                       "window_p99_ms": pct(window, 99), "swap_s": first_new - published["t"],
                       "versions_seen": sorted({v for _, v in swap["versions"]})}
    results["predictor_rows_per_s"] = offline
    results["loadavg"] = [round(x[0], 2) for x in load]
    results["cpu_steal"] = steal_fraction(cpu_start, CpuTimes.now())
    (out / "serve_load.json").write_text(json.dumps(results, indent=1))
    print(table(results, args.candidates))


def table(r: dict, candidates: int) -> str:
    pred = statistics.mean(r["predictor_rows_per_s"])
    lines = ["| measurement | p50 ms | p99 ms | rows/s | vs Predictor | errors |", "|---|---|---|---|---|---|",
             (f"| single row, 1 client | {r['single']['p50_ms']:.2f} | {r['single']['p99_ms']:.2f} | "
              f"{r['single']['rows_per_s']:,.0f} | | {r['single']['errors']} |"),
             (f"| {candidates} candidates, 1 client | {r['ranking']['p50_ms']:.2f} | {r['ranking']['p99_ms']:.2f} | "
              f"{r['ranking']['candidates_per_s']:,.0f} | {r['ranking']['candidates_per_s'] / pred:.0%} | "
              f"{r['ranking']['errors']} |")]
    for c in (8, 32, 64):
        x = r[f"clients_{c}"]
        lines.append(f"| {candidates} candidates, {c} clients | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                     f"{x['rows_per_s']:,.0f} | {x['rows_per_s'] / pred:.0%} | {x['errors']} |")
    s = r["swap"]
    lines.append(f"| swap during 32 clients ({s['window_requests']} requests from publish to swap + 1 s; swapped "
                 f"after {s['swap_s']:.2f} s) | | {s['window_p99_ms']:.2f} | | | {s['errors']} |")
    lines.append(f"\nin-process Predictor, {candidates}-row frames: "
                 + " / ".join(f"{x:,.0f}" for x in r["predictor_rows_per_s"]) + " rows/s (before / after); "
                 f"load average (1 min) during the run: {', '.join(str(x) for x in r['loadavg'])}"
                 f"{steal_note(r.get('cpu_steal'))}; "
                 f"{r['cpus']} CPUs, {r['threads']} thread(s), backend {r.get('backend', 'torch')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
