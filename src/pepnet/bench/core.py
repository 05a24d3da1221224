"""``pepnet bench``: training / inference throughput of our PEPNet path against the FLOP bound and
against a straightforward implementation, measured in one process on the same data.

Protocol: for each variant (the config, plus ``--variant`` overrides such as ``train.amp=bf16``) build
the model from the same seed, run ``warmup`` steps, then ``windows`` timed windows of ``steps`` steps each
(a window also ends after ``max_window_s`` seconds); speed = median over windows of samples / second.
Training steps go through :meth:`pepnet.train.trainer.Trainer.step` (the real training path) fed by
:class:`~pepnet.data.batches.BatchLoader` (shuffled slices; on CUDA through the prefetching loader);
inference runs the model's forward under ``torch.inference_mode``.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import ExperimentConfig, TrainConfig, load_config
from ..data.batches import BatchLoader, Prefetcher, TensorData
from ..nn import build_model
from ..prepare import layout_from_encoder, prepare
from ..train.runtime import resolve_device, seed_everything
from ..train.trainer import Trainer
from .flops import GemmRecorder, replay_seconds
from .naive import NaivePEPNet, NaiveTrainer, RowDataset, copy_weights, local_ids


@dataclass
class Timing:
    """Samples / second of each timed window; ``median`` is what the table shows."""

    per_window: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_window) if self.per_window else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_windows(step: Callable[[], int], device: torch.device, warmup: int, steps: int, windows: int,
                 max_window_s: float) -> Timing:
    """Run ``warmup`` calls of ``step`` (each returns its batch size), then ``windows`` windows of up to
    ``steps`` calls (or ``max_window_s`` seconds, at least one call); samples/s per window."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = Timing()
    for _ in range(windows):
        n, k, t0 = 0, 0, time.perf_counter()
        while k < steps:
            n += step()
            k += 1
            if time.perf_counter() - t0 > max_window_s:
                break
        _sync(device)
        out.per_window.append(n / (time.perf_counter() - t0))
    return out


def _cycle(make: Callable[[int], Any]) -> Iterator:
    """Endless iteration over epochs: ``make(epoch)`` returns an iterable of batches."""
    epoch = 0
    while True:
        empty = True
        for b in make(epoch):
            empty = False
            yield b
        if empty:
            raise ValueError("the training split has fewer rows than one batch; lower --batch-size or add rows")
        epoch += 1


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _GpuUtil:
    """Mean GPU utilisation (NVML's % of time a kernel ran) sampled in a thread while active."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self._stop = device, [], threading.Event()

    def __enter__(self) -> "_GpuUtil":
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # no NVML bindings: report None
                return self
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _train_batches(data: TensorData, tc: TrainConfig, device: torch.device) -> Iterator:
    if tc.data_on_device:
        data = data.to(device)
    use_prefetch = device.type == "cuda" and tc.prefetch > 0 and data.sparse.device.type == "cpu"

    def epoch(e: int):
        loader = BatchLoader(data, tc.batch_size, shuffle=True, seed=tc.seed, drop_last=True)
        loader.epoch = e
        return Prefetcher(loader, device, tc.prefetch) if use_prefetch else loader

    return _cycle(epoch)


def _gemm_bound(model, trainer: Trainer, batch, training: bool) -> tuple[float, float]:
    """(matmul FLOPs of one step on ``batch``, seconds those matmuls take alone on this machine)."""
    b = batch.to(trainer.device)
    rec = GemmRecorder()
    ctx = torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.amp_dtype is not None)
    if training:
        model.train()
        with rec, ctx:
            logits = model(b.sparse, b.dense)
        with rec:
            logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.inference_mode(), rec, ctx:
            model(b.sparse, b.dense)
    return float(rec.flops), replay_seconds(rec.gemms, trainer.device)


def bench_variant(name: str, config: ExperimentConfig, data: TensorData, layout, device: torch.device, *,
                  warmup: int, steps: int, windows: int, max_window_s: float, infer_batch_size: int,
                  log: Callable[[str], None]) -> dict:
    """Train and inference throughput, FLOP bound and memory of one configuration."""
    tc = config.train
    seed_everything(tc.seed)
    model = build_model(layout, config.model)
    weights = [s.weight for s in config.schema_.labels.values()]
    trainer = Trainer(model, tc, list(layout.tasks), weights, device=device, log=lambda _: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batches = _train_batches(data, tc, device)
    first = next(batches)
    train_flops, train_gemm_s = _gemm_bound(trainer.model, trainer, first, training=True)
    infer_batch = data.batch(slice(0, min(infer_batch_size, len(data))))
    infer_flops, infer_gemm_s = _gemm_bound(trainer.model, trainer, infer_batch, training=False)
    log(f"[{name}] matmuls alone: train step {train_gemm_s * 1e3:.2f} ms, forward {infer_gemm_s * 1e3:.2f} ms")

    model.train()

    def train_step() -> int:
        b = next(batches)
        trainer.step(b)
        return len(b)

    with _GpuUtil(device) as util:
        train = time_windows(train_step, device, warmup, steps, windows, max_window_s)
    log(f"[{name}] train {train.median:,.0f} samples/s (windows: {', '.join(f'{v:,.0f}' for v in train.per_window)})")

    model.eval()
    infer_data = data.to(device) if tc.data_on_device else data
    infer_iter = _cycle(lambda e: BatchLoader(infer_data, infer_batch_size, drop_last=True))
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.amp_dtype is not None)

    def infer_step() -> int:
        b = next(infer_iter).to(device, non_blocking=True)
        with torch.inference_mode(), ctx:
            torch.sigmoid(trainer.forward(b.sparse, b.dense).float())
        return len(b)

    infer = time_windows(infer_step, device, warmup, steps, windows, max_window_s)
    log(f"[{name}] inference {infer.median:,.0f} samples/s")
    B = tc.batch_size
    row = {
        "variant": name,
        "batch_size": B,
        "infer_batch_size": infer_batch_size,
        "amp": tc.amp,
        "compile": tc.compile,
        "data_on_device": tc.data_on_device,
        "train_sps": train.median,
        "train_sps_windows": train.per_window,
        "infer_sps": infer.median,
        "infer_sps_windows": infer.per_window,
        "train_flops_per_sample": train_flops / B,
        "infer_flops_per_sample": infer_flops / infer_batch_size,
        "train_matmul_tflops": train_flops / train_gemm_s / 1e12,
        "infer_matmul_tflops": infer_flops / infer_gemm_s / 1e12,
        "train_bound_sps": B / train_gemm_s,
        "infer_bound_sps": infer_batch_size / infer_gemm_s,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "gpu_util_pct": util.mean,
    }
    row["train_fraction_of_bound"] = row["train_sps"] / row["train_bound_sps"]
    row["infer_fraction_of_bound"] = row["infer_sps"] / row["infer_bound_sps"]
    row["infer_over_train"] = row["infer_sps"] / row["train_sps"]
    del trainer, model, batches
    return row


def bench_naive(config: ExperimentConfig, prep, layout, device: torch.device, *, warmup: int, steps: int,
                windows: int, max_window_s: float, log: Callable[[str], None]) -> dict:
    """Training throughput of the straightforward implementation (fp32, DataLoader, per-field modules)."""
    tc = config.train
    seed_everything(tc.seed)
    enc = prep.encoded["train"]
    fields = prep.encoder.sparse_fields
    naive = NaivePEPNet([f.size for f in fields], layout, config.model)
    copy_weights(build_model(layout, config.model), naive, fields)
    weights = torch.tensor([s.weight for s in config.schema_.labels.values()], device=device)
    trainer = NaiveTrainer(naive, tc.embedding_lr, tc.dense_lr, device, weights)
    ds = RowDataset(local_ids(enc.sparse, fields), enc.dense, enc.labels)
    g = torch.Generator().manual_seed(tc.seed)
    batches = _cycle(lambda e: torch.utils.data.DataLoader(ds, batch_size=tc.batch_size, shuffle=True,
                                                           drop_last=True, generator=g))

    def step() -> int:
        b = next(batches)
        trainer.step(b)
        return len(b[2])

    t = time_windows(step, device, warmup, steps, windows, max_window_s)
    log(f"[naive] train {t.median:,.0f} samples/s")
    return {"variant": "naive", "batch_size": tc.batch_size, "amp": "none", "train_sps": t.median,
            "train_sps_windows": t.per_window, "peak_rss_mib": peak_rss_mib()}


def run_bench(config_path: str, *, device: str = "cpu", batch_size: int | None = None,
              infer_batch_size: int | None = None, steps: int = 20, windows: int = 5, warmup: int = 5,
              max_window_s: float = 20.0, variants: dict[str, list[str]] | None = None,
              overrides: list[str] | None = None, naive: bool = True, naive_max_window_s: float = 10.0,
              threads: int | None = None, ablations: bool = False, command: str = "",
              log: Callable[[str], None] = print) -> dict:
    """Benchmark the config (and each variant: label -> extra ``key=value`` overrides) on one data set."""
    if threads:
        torch.set_num_threads(threads)
    base = list(overrides or [])
    if batch_size:
        base.append(f"train.batch_size={batch_size}")
    base.append(f"train.device={device}")
    config = load_config(config_path, base)
    dev = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    t0 = time.perf_counter()
    prep = prepare(config, log=log)
    log(f"data prepared in {time.perf_counter() - t0:.1f} s")
    enc = prep.encoded["train"]
    data = TensorData(enc)
    layout = layout_from_encoder(prep.encoder, config.model, len(enc.domain_names))
    ib = infer_batch_size or config.train.eval_batch_size
    common = dict(warmup=warmup, steps=steps, windows=windows, log=log)
    rows = []
    for name, extra in (variants or {"default": []}).items():
        cfg = load_config(config_path, base + list(extra))
        try:
            rows.append(bench_variant(name, cfg, data, layout, dev, max_window_s=max_window_s, infer_batch_size=ib, **common))
        except Exception as exc:  # one failing variant (e.g. torch.compile on an odd platform) must not hide the rest
            log(f"[{name}] failed: {type(exc).__name__}: {exc}")
            rows.append({"variant": name, "batch_size": cfg.train.batch_size, "error": f"{type(exc).__name__}: {exc}"})
    if naive:
        n = bench_naive(config, prep, layout, dev, max_window_s=naive_max_window_s, **common)
        for r in rows:
            if "train_sps" in r:
                r["train_speedup_vs_naive"] = r["train_sps"] / n["train_sps"]
        rows.append(n)
    result = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config": str(config_path),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "device_type": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # ACTIVE (libgomp's default) spins at barriers: on a busy 2-core machine that slows ops 10-100x
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (active)"),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "train_rows": len(enc),
        "embedding_rows": prep.encoder.num_embeddings,
        "parameters": sum(p.numel() for p in build_model(layout, config.model).parameters()),
        "rows": rows,
    }
    if ablations:
        from .ablations import run_ablations

        result["ablations"] = run_ablations(config, layout, data, dev, log=log)
    result["load_average_end"] = list(os.getloadavg())
    return result


def _si(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:.1f}{unit}"


def format_table(result: dict) -> str:
    """The human-readable report of :func:`run_bench`."""
    lines = [f"pepnet bench {result['config']}  device {result['device']} ({result['device_type']}), "
             f"torch {result['torch']}, {result['threads']} threads (OMP_WAIT_POLICY {result.get('omp_wait_policy', '?')}), load average {result['load_average'][0]:.2f} "
             f"-> {result['load_average_end'][0]:.2f}, {result['date']}",
             f"train rows {result['train_rows']:,}, embedding rows {result['embedding_rows']:,}, "
             f"parameters {result['parameters']:,}"]
    first = next((r for r in result["rows"] if "train_flops_per_sample" in r), None)
    if first:
        lines.append(f"matmul FLOPs per sample: forward {_si(first['infer_flops_per_sample'])}, training "
                     f"{_si(first['train_flops_per_sample'])} ({first['train_flops_per_sample'] / first['infer_flops_per_sample']:.2f}x)")
    head = (f"{'variant':<16}{'batch':>7}{'train/s':>10}{'of bound':>9}{'bound/s':>10}{'mm TFLOP/s':>11}"
            f"{'infer/s':>10}{'of bound':>9}{'inf/train':>10}{'vs naive':>9}{'RSS MiB':>9}{'GPU MiB':>9}{'GPU %':>7}")
    lines += ["", head, "-" * len(head)]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['variant']:<16}{r['batch_size']:>7}  failed: {r['error'][:200]}")
            continue

        def f(key, fmt="{:.0%}"):
            v = r.get(key)
            return fmt.format(v) if v is not None else "-"
        lines.append(
            f"{r['variant']:<16}{r['batch_size']:>7}{_si(r['train_sps']):>10}{f('train_fraction_of_bound'):>9}"
            f"{_si(r.get('train_bound_sps')):>10}{f('train_matmul_tflops', '{:.3f}'):>11}{_si(r.get('infer_sps')):>10}"
            f"{f('infer_fraction_of_bound'):>9}{f('infer_over_train', '{:.1f}x'):>10}"
            f"{f('train_speedup_vs_naive', '{:.2f}x'):>9}{r['peak_rss_mib']:>9.0f}{f('peak_gpu_mib', '{:.0f}'):>9}"
            f"{f('gpu_util_pct', '{:.0f}'):>7}")
    lines.append("train/s, infer/s: median samples/s over timed windows; bound/s: samples/s if a step did only its "
                 "matrix products at the rate measured for the model's own GEMM shapes (mm TFLOP/s); "
                 "vs naive: train/s over the straightforward implementation's (fp32) in the same run")
    if "ablations" in result:
        lines += ["", "ablations (median ms per step at the bench batch size):"]
        for a in result["ablations"]:
            lines.append(f"  {a['name']:<44} {a['a_label']:>12} {a['a_ms']:8.2f} ms   {a['b_label']:>12} {a['b_ms']:8.2f} ms"
                         f"   ({a['b_ms'] / a['a_ms']:.2f}x)  {a.get('note', '')}")
    return "\n".join(lines)
