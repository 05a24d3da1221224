"""``pepnet bench``: training / inference throughput of our PEPNet path against its matmul bound and
against the reference implementation (:mod:`pepnet.bench.reference`), measured in one process on the same data.

Protocol. Every contender (the config, each ``--variant`` such as ``train.amp=bf16``, and the reference built
from the same config with pepnet's initial weights copied in) is built and warmed up (``warmup`` training steps
and inference batches). Then ``repeats`` rounds: in each round every contender runs one training window of
``steps`` steps, then every contender one inference window of ``steps`` batches (a window also ends after
``max_window_s`` seconds), in an order rotated round by round, and the matmul bound of every contender is
re-timed in the same round. Each figure, and each ratio (computed round by round, so both sides of a ratio saw
the same load), is reported as its median and interquartile range over the rounds. Training steps go through
:meth:`pepnet.train.trainer.Trainer.step` fed by :class:`~pepnet.data.batches.BatchLoader` (shuffled slices;
on CUDA through the prefetching loader); inference runs the model's forward under ``torch.inference_mode``.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch

from ..config import ExperimentConfig, TrainConfig, load_config
from ..data.batches import BatchLoader, Prefetcher, TensorData
from ..nn import PEPNet, build_model
from ..prepare import layout_from_encoder, prepare
from ..train.runtime import resolve_device, seed_everything
from ..train.trainer import Trainer
from .flops import Gemm, GemmRecorder, replay_seconds, sync
from .machine import CpuTimes, load_average, steal_fraction, steal_note
from .reference import ReferencePEPNet, ReferenceTrainer, copy_weights, local_ids, shuffled_batches

REFERENCE = "reference"
# figures measured each round (ratios to the reference are added per round)
FIGURES = ("train_sps", "infer_sps", "train_bound_sps", "infer_bound_sps")
T = TypeVar("T")


def time_window(step: Callable[[], int], device: torch.device, steps: int, max_window_s: float) -> float:
    """Samples / second over up to ``steps`` calls of ``step`` (each returns its batch size), ending early
    after ``max_window_s`` seconds (at least one call)."""
    sync(device)
    n, k, t0 = 0, 0, time.perf_counter()
    while k < steps:
        n += step()
        k += 1
        if time.perf_counter() - t0 > max_window_s:
            break
    sync(device)
    return n / (time.perf_counter() - t0)


def spread(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (25th and 75th percentiles) of ``values``."""
    q1, med, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


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


def _train_batches(data: TensorData, tc: TrainConfig, device: torch.device) -> Iterator:
    if tc.data_on_device:
        data = data.to(device)
    use_prefetch = device.type == "cuda" and tc.prefetch > 0 and data.sparse.device.type == "cpu"

    def epoch(e: int):
        loader = BatchLoader(data, tc.batch_size, shuffle=True, seed=tc.seed, drop_last=True)
        loader.epoch = e
        return Prefetcher(loader, device, tc.prefetch) if use_prefetch else loader

    return _cycle(epoch)


def _record(forward: Callable[[], torch.Tensor], model: torch.nn.Module, training: bool,
            amp: bool, device: torch.device) -> list[Gemm]:
    """The matrix products of one forward (and, with ``training``, backward) pass."""
    rec = GemmRecorder()
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    if training:
        model.train()
        with rec, ctx:
            logits = forward()
        with rec:
            logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.inference_mode(), rec, ctx:
            forward()
    return rec.gemms


@dataclass
class Contender:
    """One implementation under test: its training step and inference batch (each returns its batch size)
    and the matrix products of one training step and one inference batch."""

    name: str
    train_step: Callable[[], int]
    infer_step: Callable[[], int]
    train_gemms: list[Gemm]
    infer_gemms: list[Gemm]
    batch_size: int
    infer_batch_size: int
    info: dict = field(default_factory=dict)

    def flops(self, training: bool) -> float:
        return float(sum(g.flops for g in (self.train_gemms if training else self.infer_gemms)))


def _warm(c: Contender, warmup: int) -> Contender:
    for _ in range(warmup):
        c.train_step()
    for _ in range(warmup):
        c.infer_step()
    return c


def pepnet_contender(name: str, config: ExperimentConfig, data: TensorData, layout, device: torch.device,
                     infer_batch_size: int) -> Contender:
    """pepnet's own path: Trainer.step on BatchLoader batches; the (compiled, autocast) forward for inference."""
    tc = config.train
    seed_everything(tc.seed)
    model = build_model(layout, config.model)
    weights = [s.weight for s in config.schema_.labels.values()]
    trainer = Trainer(model, tc, list(layout.tasks), weights, device=device, log=lambda _: None)
    trainer.compile_for(None)  # a bench measures the steady state: train.compile=auto compiles where it can
    batches = _train_batches(data, tc, device)
    amp = trainer.amp_dtype is not None
    first = next(batches).to(device)
    infer_data = data.to(device) if tc.data_on_device else data
    ib = infer_data.batch(slice(0, infer_batch_size)).to(device)
    train_gemms = _record(lambda: model(first.sparse, first.dense), model, True, amp, device)
    infer_gemms = _record(lambda: model(ib.sparse, ib.dense), model, False, amp, device)
    infer_iter = _cycle(lambda e: BatchLoader(infer_data, infer_batch_size, drop_last=True))

    def train_step() -> int:
        model.train()
        b = next(batches)
        trainer.step(b)
        return len(b)

    def infer_step() -> int:
        model.eval()
        b = next(infer_iter).to(device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            torch.sigmoid(trainer.forward(b.sparse, b.dense).float())
        return len(b)

    return Contender(name, train_step, infer_step, train_gemms, infer_gemms, tc.batch_size, infer_batch_size,
                     {"amp": tc.amp, "compile": trainer.forward is not model, "data_on_device": tc.data_on_device})


def reference_contender(config: ExperimentConfig, prep, layout, device: torch.device,
                        infer_batch_size: int) -> Contender:
    """The reference implementation of the same config, starting from the same weights as pepnet's model;
    its batches are sliced from tensors already in memory (on the device with ``train.data_on_device``)."""
    tc = config.train
    seed_everything(tc.seed)
    enc, fields = prep.encoded["train"], prep.encoder.sparse_fields
    model = ReferencePEPNet([f.size for f in fields], layout, config.model)
    copy_weights(cast(PEPNet, build_model(layout, config.model)), model, fields)  # a PEPNet variant (checked above)
    weights = torch.tensor([s.weight for s in config.schema_.labels.values()], device=device)
    amp = tc.amp == "bf16"
    trainer = ReferenceTrainer(model, tc.embedding_lr, tc.dense_lr, device, weights, amp=amp)
    where = device if tc.data_on_device else torch.device("cpu")
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(where)
                    for a in (local_ids(enc.sparse, fields), enc.dense, enc.labels))
    batches = shuffled_batches(tensors, tc.batch_size, tc.seed)
    n = len(enc.labels) // infer_batch_size
    infer_iter = _cycle(lambda e: (tuple(t[i * infer_batch_size:(i + 1) * infer_batch_size].to(device)
                                         for t in tensors[:2]) for i in range(n)))
    first = tuple(t[:tc.batch_size].to(device) for t in tensors[:2])
    ib = tuple(t[:infer_batch_size].to(device) for t in tensors[:2])
    train_gemms = _record(lambda: model(*first), model, True, amp, device)
    infer_gemms = _record(lambda: model(*ib), model, False, amp, device)

    def train_step() -> int:
        model.train()
        trainer.step(next(batches))
        return tc.batch_size

    def infer_step() -> int:
        model.eval()
        sparse, dense = next(infer_iter)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            torch.sigmoid(model(sparse, dense).float())
        return len(sparse)

    return Contender(REFERENCE, train_step, infer_step, train_gemms, infer_gemms, tc.batch_size, infer_batch_size,
                     {"amp": tc.amp, "compile": False, "data_on_device": tc.data_on_device})


def rotated(items: list[T], r: int) -> list[T]:
    """The order of round ``r`` of an interleaved run: ``items`` rotated left by r, so that each leads once every
    ``len(items)`` rounds."""
    k = r % len(items)
    return items[k:] + items[:k]


def run_rounds(contenders: list[Contender], device: torch.device, repeats: int, steps: int, max_window_s: float,
               log: Callable[[str], None]) -> dict[str, list[dict[str, float]]]:
    """``repeats`` interleaved rounds (see the module docstring); contender name -> one dict of FIGURES per round."""
    rounds: dict[str, list[dict[str, float]]] = {c.name: [] for c in contenders}
    for r in range(repeats):
        order = rotated(contenders, r)
        got: dict[str, dict[str, float]] = {c.name: {} for c in contenders}
        for c in order:
            got[c.name]["train_sps"] = time_window(c.train_step, device, steps, max_window_s)
        for c in order:
            got[c.name]["infer_sps"] = time_window(c.infer_step, device, steps, max_window_s)
        for c in order:
            got[c.name]["train_bound_sps"] = c.batch_size / replay_seconds(c.train_gemms, device, 3, 0.1)
            got[c.name]["infer_bound_sps"] = c.infer_batch_size / replay_seconds(c.infer_gemms, device, 3, 0.1)
        for c in contenders:
            rounds[c.name].append(got[c.name])
        log(f"round {r + 1}/{repeats}: " + ", ".join(
            f"{c.name} train {got[c.name]['train_sps']:,.0f}/s infer {got[c.name]['infer_sps']:,.0f}/s"
            for c in contenders))
    return rounds


def summarise(contenders: list[Contender], rounds: dict[str, list[dict[str, float]]]) -> list[dict]:
    """One row per contender: median / IQR of every figure and of every ratio over the rounds."""
    ref = rounds.get(REFERENCE)
    rows = []
    for c in contenders:
        per = rounds[c.name]
        series: dict[str, list[float]] = {k: [x[k] for x in per] for k in FIGURES}
        series["train_fraction_of_bound"] = [x["train_sps"] / x["train_bound_sps"] for x in per]
        series["infer_fraction_of_bound"] = [x["infer_sps"] / x["infer_bound_sps"] for x in per]
        series["infer_over_train"] = [x["infer_sps"] / x["train_sps"] for x in per]
        if ref is not None and c.name != REFERENCE:
            for what in ("train", "infer"):
                series[f"{what}_vs_reference"] = [x[f"{what}_sps"] / y[f"{what}_sps"]
                                                  for x, y in zip(per, ref, strict=True)]
        rows.append({"variant": c.name, "batch_size": c.batch_size, "infer_batch_size": c.infer_batch_size, **c.info,
                     "train_flops_per_sample": c.flops(True) / c.batch_size,
                     "infer_flops_per_sample": c.flops(False) / c.infer_batch_size,
                     **{k: spread(v) for k, v in series.items()}, "rounds": series})
    return rows


def run_bench(config_path: str, *, device: str = "cpu", batch_size: int | None = None,
              infer_batch_size: int | None = None, steps: int = 10, repeats: int = 5, warmup: int = 3,
              max_window_s: float = 20.0, variants: dict[str, list[str]] | None = None,
              overrides: list[str] | None = None, reference: bool = True, threads: int | None = None,
              ablations: bool = False, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Benchmark the config (and each variant: label -> extra ``key=value`` overrides) and the reference
    implementation on one data set, interleaved over ``repeats`` rounds."""
    load_start, cpu_start = load_average(), CpuTimes.now()
    date = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
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
    ib = min(infer_batch_size or config.train.eval_batch_size, len(data))
    contenders, failed = [], []
    for name, extra in (variants or {"default": []}).items():
        cfg = load_config(config_path, base + list(extra))
        try:  # one failing variant (e.g. torch.compile on an odd platform) must not hide the rest
            contenders.append(_warm(pepnet_contender(name, cfg, data, layout, dev, ib), warmup))
        except Exception as exc:
            log(f"[{name}] failed: {type(exc).__name__}: {exc}")
            failed.append({"variant": name, "batch_size": cfg.train.batch_size,
                           "error": f"{type(exc).__name__}: {exc}"})
    if reference:
        contenders.append(_warm(reference_contender(config, prep, layout, dev, ib), warmup))
    log(f"{len(contenders)} contenders warmed up; {repeats} interleaved rounds of {steps} steps each")
    rounds = run_rounds(contenders, dev, repeats, steps, max_window_s, log)
    result = {
        "date": date,
        "command": command,
        "config": str(config_path),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "device_type": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # ACTIVE (libgomp's default) spins at barriers: on a busy 2-core machine that slows ops 10-100x
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (active)"),
        "cpu_count": os.cpu_count(),
        "repeats": repeats,
        "steps": steps,
        "train_rows": len(enc),
        "embedding_rows": prep.encoder.num_embeddings,
        "parameters": sum(p.numel() for p in build_model(layout, config.model).parameters()),
        "rows": summarise(contenders, rounds) + failed,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }
    if ablations:
        from .ablations import run_ablations

        result["ablations"] = run_ablations(config, layout, data, dev, repeats=repeats, log=log)
    result["load_average_start"] = load_start
    result["load_average_end"] = load_average()
    result["cpu_steal"] = steal_fraction(cpu_start, CpuTimes.now())
    return result


def _si(x: float | None, like: float | None = None) -> str:
    """``x`` with an SI suffix and two decimals (16.06k, 3.79M), or ``-`` for a missing figure; the suffix is
    the one ``like`` would get (so that the figures of one cell share it), by default ``x``'s."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    scale = abs(x if like is None else like)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if scale >= div:
            return f"{x / div:.2f}{suffix}"
    return f"{x:.1f}"


def _percent(x: float, like: float | None = None) -> str:
    return f"{x:.0%}"


def _times(x: float, like: float | None = None) -> str:
    return f"{x:.2f}x"


# how each summarised figure of a result row is written, as fmt(x, like): x in the unit ``like`` would get
# (the bench's table, benchmarks/cpu_tables.py)
FIGURE_FORMATS: dict[str, Callable[[float, float | None], str]] = {
    "train_sps": _si, "train_fraction_of_bound": _percent, "infer_sps": _si, "infer_fraction_of_bound": _percent,
    "train_vs_reference": _times, "infer_vs_reference": _times}


def format_spread(summary: dict, key: str, dash: str = "-") -> str:
    """``median [q1-q3]`` of the figure ``key`` summarised by :func:`spread`, written as :data:`FIGURE_FORMATS`
    says, all three in the median's unit; ``dash`` between the quartiles."""
    fmt, m = FIGURE_FORMATS[key], summary["median"]
    return f"{fmt(m, m)} [{fmt(summary['q1'], m)}{dash}{fmt(summary['q3'], m)}]"


def _ms(summary: dict, unit: str = " ms") -> str:
    """An ablation's spread: ``median [q1-q3]`` with two decimals and ``unit``."""
    return f"{summary['median']:.2f}{unit} [{summary['q1']:.2f}-{summary['q3']:.2f}]"


def _cell(r: dict, key: str) -> str:
    return format_spread(r[key], key) if r.get(key) is not None else "-"


def format_table(result: dict) -> str:
    """The human-readable report of :func:`run_bench`."""
    load0, load1 = result["load_average_start"], result["load_average_end"]
    lines = [f"pepnet bench {result['config']}  device {result['device']} ({result['device_type']}), "
             f"torch {result['torch']}, {result['threads']} threads (OMP_WAIT_POLICY {result['omp_wait_policy']}), "
             f"{result['date']}",
             f"load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load0)}, "
             f"at end {'/'.join(f'{x:.2f}' for x in load1)}; {result['cpu_count']} CPUs"
             + steal_note(result.get("cpu_steal")),
             f"train rows {result['train_rows']:,}, embedding rows {result['embedding_rows']:,}, "
             f"parameters {result['parameters']:,}, peak RSS {result['peak_rss_mib']:,.0f} MiB"
             + (f", peak GPU {result['peak_gpu_mib']:,.0f} MiB" if result.get("peak_gpu_mib") else "")]
    cols = [("variant", 13), ("batch", 6), ("compiled", 9), ("train/s", 22), ("of bound", 16), ("infer/s", 22),
            ("of bound", 16), ("train vs ref", 20), ("infer vs ref", 20), ("matmul FLOPs/sample", 20)]
    head = " ".join(f"{n:<{w}}" for n, w in cols)
    lines += ["", head, "-" * len(head)]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['variant']:<13} {r['batch_size']:<6} failed: {r['error'][:200]}")
            continue
        cells = [r["variant"], str(r["batch_size"]), "yes" if r.get("compile") else "no",
                 *(_cell(r, key) for key in FIGURE_FORMATS),
                 f"{_si(r['train_flops_per_sample'])} / {_si(r['infer_flops_per_sample'])}"]
        lines.append(" ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, cols, strict=True)))
    lines.append(f"median [interquartile range] over {result['repeats']} interleaved rounds of {result['steps']} "
                 "steps; train/s, infer/s: samples/s; of bound: samples/s over the rate a step would reach doing only "
                 "its own matrix products (timed in the same round); vs ref: over the reference implementation "
                 "in the same round; matmul FLOPs/sample: training / inference; compiled: torch.compile'd dense "
                 "part (train.compile, auto: where a compiler exists)")
    if "ablations" in result:
        lines += ["", f"ablations (ms per call at the bench batch size, median [interquartile range] over "
                      f"{result['repeats']} interleaved rounds; b / a taken round by round):"]
        for a in result["ablations"]:
            lines.append(f"  {a['name']:<44} a: {a['a_label']} {_ms(a['a_ms'])}   b: {a['b_label']} {_ms(a['b_ms'])}"
                         f"   b / a {_ms(a['b_over_a'], 'x')}  {a.get('note', '')}")
    return "\n".join(lines)
