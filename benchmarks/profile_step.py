"""Where a training step's time goes: torch.profiler over a few Trainer steps of a config.

python benchmarks/profile_step.py industrial --device cuda --batch-size 65536 --set train.amp=bf16
Prints the top kernels / operators by device (or CPU) time and the step's wall time with and without
a host-device sync per step.
"""
from __future__ import annotations

import argparse
import time
from itertools import islice

import torch
from torch.profiler import ProfilerActivity, profile

from pepnet.cli import resolve_config
from pepnet.config import load_config
from pepnet.data.batches import BatchLoader, TensorData
from pepnet.nn import build_model
from pepnet.prepare import layout_from_encoder, prepare
from pepnet.train.runtime import seed_everything
from pepnet.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    cfg = load_config(resolve_config(a.config),
                      [f"train.device={a.device}", f"train.batch_size={a.batch_size}", *a.set])
    seed_everything(0)
    prep = prepare(cfg, log=lambda _: None)
    data = TensorData(prep.encoded["train"])
    layout = layout_from_encoder(prep.encoder, cfg.model, len(prep.encoded["train"].domain_names))
    trainer = Trainer(build_model(layout, cfg.model), cfg.train, list(layout.tasks), log=print)
    trainer.compile_for(None)  # the steady state, as pepnet bench: train.compile=auto compiles where it can
    dev = trainer.device
    if cfg.train.data_on_device:
        data = data.to(dev)
    batches = [b.to(dev) for b in islice(BatchLoader(data, a.batch_size, shuffle=True, drop_last=True), 4)]
    for b in batches * 2:
        trainer.step(b)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(a.steps):
        trainer.step(batches[i % 4])
    sync()
    print(f"step wall time {1e3 * (time.perf_counter() - t0) / a.steps:.2f} ms "
          f"({a.batch_size * a.steps / (time.perf_counter() - t0):,.0f} samples/s, batches already on {dev})")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(a.steps):
            trainer.step(batches[i % 4])
        sync()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    main()
