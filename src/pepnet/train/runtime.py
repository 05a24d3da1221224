"""The process's training runtime: seeds and threads (:func:`seed_everything`), the random states a checkpoint
keeps (:func:`rng_state`, :func:`set_rng_state`), the device
(:func:`resolve_device`) and the error that stops training (:class:`TrainingError`)."""
from __future__ import annotations

import random
from typing import cast

import numpy as np
import torch


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


__all__ = ["TrainingError", "resolve_device", "rng_state", "seed_everything", "set_rng_state"]
