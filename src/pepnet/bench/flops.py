"""FLOPs of a model and the matmul throughput a machine reaches at the model's own GEMM shapes.

:class:`GemmRecorder` watches one real forward (or forward + backward) pass and records every matrix
product the dispatcher runs (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``linear``) with its operand shapes, strides and
dtypes; :func:`replay_seconds` re-runs exactly those products on random operands and times them. The
sum of their times is the time a step would take if it did nothing but its matrix products at the rate
this machine reaches for these shapes: the FLOP bound.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_GEMMS = {aten.mm.default: "mm", aten.addmm.default: "addmm", aten.bmm.default: "bmm", aten.baddbmm.default: "baddbmm",
          aten.linear.default: "linear"}  # nn.Linear under inference_mode reaches the dispatcher as linear
_REPLAY = {"linear": torch.nn.functional.linear}


@dataclass(frozen=True)
class Gemm:
    """One recorded matrix product: op name, operand (shape, stride, dtype) and scalar kwargs."""

    op: str
    operands: tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]
    kwargs: tuple[tuple[str, float], ...]

    @property
    def flops(self) -> int:
        """2 * M * N * K (times the batch for bmm / baddbmm)."""
        if self.op == "linear":                              # input [..., K], weight [N, K], optional bias
            x, w = self.operands[0][0], self.operands[1][0]
            return 2 * math.prod(x[:-1]) * w[1] * w[0]
        a, b = self.operands[-2][0], self.operands[-1][0]
        if self.op in ("bmm", "baddbmm"):
            return 2 * a[0] * a[1] * a[2] * b[2]
        return 2 * a[0] * a[1] * b[1]


class GemmRecorder(TorchDispatchMode):
    """``with GemmRecorder() as rec: ...`` records every GEMM run inside (backward passes included)."""

    def __init__(self):
        super().__init__()
        self.gemms: list[Gemm] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = _GEMMS.get(func)
        if op is not None:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            self.gemms.append(Gemm(op, tuple((tuple(t.shape), tuple(t.stride()), t.dtype) for t in tensors),
                                   tuple(sorted((k, float(v)) for k, v in kwargs.items()))))
        return func(*args, **kwargs)

    @property
    def flops(self) -> int:
        return sum(g.flops for g in self.gemms)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on CPU, where calls return when done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replay_seconds(gemms: list[Gemm], device: torch.device, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Median wall time (s) of running all ``gemms`` once, in order, on random operands of the recorded
    shapes, strides and dtypes. Each repeat loops the sequence until ``min_seconds`` have passed."""
    g = torch.Generator(device="cpu").manual_seed(0)
    calls: list[tuple[Callable[..., Any], list[torch.Tensor], dict[str, Any]]] = []
    for gm in gemms:
        ops = []
        for shape, stride, dtype in gm.operands:
            size = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True) if n > 0)
            flat = torch.randn(size, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
            ops.append(flat.as_strided(shape, stride))
        calls.append((_REPLAY.get(gm.op) or getattr(torch, gm.op), ops, dict(gm.kwargs)))

    def once() -> None:
        for fn, ops, kw in calls:
            fn(*ops, **kw)

    once()
    sync(device)
    times = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            once()
            n += 1
            sync(device)
            if time.perf_counter() - t0 >= min_seconds:
                break
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)
