"""The process's training runtime: seeds and threads (:func:`seed_everything`), the device
(:func:`resolve_device`) and the error that stops training (:class:`TrainingError`)."""
from __future__ import annotations

import random

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


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is cuda when available, else cpu; an unavailable cuda is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


__all__ = ["TrainingError", "resolve_device", "seed_everything"]
