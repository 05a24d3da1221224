"""The process's training runtime: seeds and threads (:func:`seed_everything`), the random states a checkpoint
keeps (:func:`rng_state`, :func:`set_rng_state`), the device
(:func:`resolve_device`), whether to compile (:func:`should_compile`) and the error that stops training
(:class:`TrainingError`)."""
from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys
from typing import cast

import numpy as np
import torch

from ..config import AUTO_COMPILE_STEPS


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where."""


def seed_everything(seed: int, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed Python, numpy and torch; set torch's thread count and deterministic mode for the process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor (seconds)
        torch.use_deterministic_algorithms(deterministic, warn_only=False)


def rng_state() -> dict:
    """Every random state training draws from (torch CPU, CUDA when present, numpy, Python) as tensors, numbers
    and tuples only, so that a checkpoint loads with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state(legacy=True))  # MT19937, legacy form
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is cuda when available, else cpu; an unavailable cuda is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


def compiler_available(device: torch.device) -> bool:
    """Whether torch.compile (inductor) can generate code for ``device``: the C++ compiler it calls on CPU
    (``$CXX``, else g++, clang++ on macOS), Triton on CUDA."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device.type == "cpu":
        return shutil.which(os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")) is not None
    return False


def should_compile(setting: bool | str, device: torch.device, steps: int | None) -> bool:
    """``train.compile`` for a run of ``steps`` optimiser steps (None: open-ended, e.g. a benchmark's steady
    state): true and false as given; ``auto`` when a compiler exists for the device and the run is long enough to
    earn the compile time back (:data:`AUTO_COMPILE_STEPS`)."""
    if setting != "auto":
        return bool(setting)
    return (steps is None or steps >= AUTO_COMPILE_STEPS) and compiler_available(device)


__all__ = ["AUTO_COMPILE_STEPS", "TrainingError", "compiler_available", "resolve_device", "rng_state",
           "seed_everything", "set_rng_state", "should_compile"]
