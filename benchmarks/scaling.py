"""Streaming scale test: one training pass over synthetic parquet of growing size, small model.

python benchmarks/scaling.py --rows 1000000 10000000 [--threads 2] [--omp-wait-policy passive] [--out scaling.json]

Each size runs in two subprocesses: the first writes the data (row groups of 500k rows, not timed), the
second fits the encoder on the first row group and times one pass of ParquetStream + Trainer.step, so
its peak RSS is that of the training pass alone. Reports seconds per million samples (and how much of
it the consumer spent waiting for the stream), peak resident memory, and the load average.

``--omp-wait-policy`` sets OMP_WAIT_POLICY for the timed process (libgomp reads it when torch loads).
With the default ACTIVE policy OpenMP threads spin at every barrier; on a 2-core machine that other
processes keep busy a spinning thread steals the core its partner needs and each parallel op slows by
10-100x (measured: torch.unique on 37k ids 2 ms -> 60-300 ms; this was the 150 s per 1M samples first
recorded). PASSIVE makes waiting threads sleep. On an idle machine ACTIVE is a little faster.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW_GROUP = 500_000


def _spec(rows: int):
    from pepnet.datasets.synthetic import SyntheticSpec

    return SyntheticSpec(n_rows=rows, n_users=100_000, n_items=200_000, tasks=("click", "like"), seed=0)


def write_data(rows: int, path: str) -> None:
    from pepnet.datasets.synthetic import write

    write(_spec(rows), Path(path), chunk_rows=ROW_GROUP, progress=False)


def one(path: str, rows: int, threads: int, batch_size: int) -> dict:
    import polars as pl
    import pyarrow.parquet as pq
    import torch

    from pepnet.config import load_config
    from pepnet.data.encoder import Encoder
    from pepnet.data.stream import ParquetStream
    from pepnet.nn import build_model
    from pepnet.prepare import layout_from_encoder
    from pepnet.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = load_config("synthetic.yaml", ["model.hidden_units=[32]", "model.embedding_dim=8", "train.device=cpu"])
    enc = Encoder(cfg.schema_).fit(pl.from_arrow(pq.ParquetFile(path).read_row_group(0)))
    layout = layout_from_encoder(enc, cfg.model, _spec(rows).n_domains)
    trainer = Trainer(build_model(layout, cfg.model), cfg.train, enc.task_names, log=lambda _: None)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, n, wait = time.perf_counter(), 0, 0.0
    it = iter(ParquetStream([path], enc, batch_size=batch_size, prefetch=2))
    while True:
        tw = time.perf_counter()
        b = next(it, None)
        wait += time.perf_counter() - tw
        if b is None:
            break
        trainer.step(b)
        n += len(b)
    dt = time.perf_counter() - t0
    return {"rows": rows, "samples": n, "seconds": dt, "s_per_million": dt / n * 1e6,
            "wait_s_per_million": wait / n * 1e6, "threads": threads, "batch_size": batch_size,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: active)"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_pass_mib": rss0,
            "load_average": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--omp-wait-policy", choices=["passive", "active", "inherit"], default="passive")
    ap.add_argument("--out", default="scaling.json")
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write:
        write_data(a.n, a.write)
        return
    if a.one:
        print(json.dumps(one(a.one, a.n, a.threads, a.batch_size)))
        return
    env = dict(os.environ)
    if a.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy.upper()
    results = []
    for rows in a.rows:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / f"s{rows}.parquet")
            subprocess.run([sys.executable, __file__, "--write", path, "--n", str(rows)], check=True)
            out = subprocess.run([sys.executable, __file__, "--one", path, "--n", str(rows),
                                  "--threads", str(a.threads), "--batch-size", str(a.batch_size)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"the timed pass over {rows:,} rows failed:\n{out.stderr[-4000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['rows']:>12,} rows  {r['s_per_million']:8.1f} s per 1M samples (waiting for data "
              f"{r['wait_s_per_million']:.1f})  peak RSS {r['peak_rss_mib']:7.0f} MiB  load {r['load_average'][0]:.1f}"
              f"  OMP_WAIT_POLICY={r['omp_wait_policy']}", flush=True)
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
