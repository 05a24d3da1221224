"""Streaming scale test: one training pass over synthetic parquet of growing size, small model.

python benchmarks/scaling.py --rows 1000000 10000000 [--threads 2] [--out scaling.json]
Each size runs in its own subprocess (so peak RSS is per size): write the data (row groups of 500k
rows, not timed), fit the encoder on the first row group, then time one pass of ParquetStream +
Trainer.step. Reports seconds per million samples and peak resident memory.
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


def one(rows: int, threads: int, tmp: str) -> dict:
    import polars as pl
    import pyarrow.parquet as pq
    import torch

    from pepnet.config import load_config
    from pepnet.data.encoder import Encoder
    from pepnet.data.stream import ParquetStream
    from pepnet.datasets.synthetic import SyntheticSpec, write
    from pepnet.nn import build_model
    from pepnet.run import layout_from_encoder
    from pepnet.train.trainer import Trainer

    torch.set_num_threads(threads)
    spec = SyntheticSpec(n_rows=rows, n_users=100_000, n_items=200_000, tasks=("click", "like"), seed=0)
    path = write(spec, Path(tmp) / f"s{rows}.parquet", chunk_rows=500_000, progress=False)[0]
    cfg = load_config("synthetic.yaml", ["model.hidden_units=[32]", "model.embedding_dim=8", "train.device=cpu"])
    enc = Encoder(cfg.schema_).fit(pl.from_arrow(pq.ParquetFile(path).read_row_group(0)))
    layout = layout_from_encoder(enc, cfg.model, spec.n_domains)
    trainer = Trainer(build_model(layout, cfg.model), cfg.train, enc.task_names, log=lambda _: None)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, n = time.perf_counter(), 0
    for b in ParquetStream([path], enc, batch_size=4096, prefetch=2):
        trainer.step(b)
        n += len(b)
    dt = time.perf_counter() - t0
    return {"rows": rows, "samples": n, "seconds": dt, "s_per_million": dt / n * 1e6,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_pass_mib": rss0,
            "load_average": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="scaling.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.threads, a.tmp)))
        return
    results = []
    for rows in a.rows:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--one", str(rows), "--threads", str(a.threads), "--tmp", tmp],
                                 capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['rows']:>12,} rows  {r['s_per_million']:8.1f} s per 1M samples  peak RSS {r['peak_rss_mib']:7.0f} MiB"
              f"  load {r['load_average'][0]:.1f}", flush=True)
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
