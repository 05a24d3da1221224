"""The training loop: optimisers, progress, early stopping, atomic checkpoints and exact resume.

The trainer knows nothing of a particular model: it asks it for ``embedding_parameters()`` (Adagrad)
and trains everything else with Adam; the loss is the masked multi-task BCE.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batches import BatchLoader, TensorData
from .checkpoint import load_checkpoint, save_checkpoint
from .loss import masked_bce
from .optim import make_optimizers

CHECKPOINT = "checkpoint.pt"
BEST = "model.pt"

Evaluator = Callable[[nn.Module], tuple[float, dict]]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where."""


@dataclass
class TrainState:
    epoch: int = 0             # completed epochs
    batch: int = 0             # completed batches of the current epoch
    step: int = 0              # optimiser steps in total
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    skipped_batches: int = 0
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool = False, threads: int | None = None) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


@torch.no_grad()
def predict_probs(model: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> np.ndarray:
    """Probabilities float32 [N, T] for every row of ``data``, in order."""
    model.eval()
    out = []
    for batch in BatchLoader(data, batch_size):
        b = batch.to(device)
        out.append(torch.sigmoid(model(b.sparse, b.dense).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


class Trainer:
    """Trains ``model`` on a TensorData; ``run_dir`` (optional) receives checkpoints and the best weights."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, task_names: list[str], task_weights: list[float] | None = None,
                 run_dir: str | Path | None = None, device: torch.device | None = None, log: Callable[[str], None] = print):
        self.cfg, self.task_names, self.log = cfg, task_names, log
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.weights = torch.tensor(task_weights or [1.0] * len(task_names), dtype=torch.float32, device=self.device)
        self.optimizers = make_optimizers(self.model, cfg)
        self.run_dir = Path(run_dir) if run_dir else None
        self.state = TrainState()

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        if self.run_dir is None:
            return
        save_checkpoint({
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "state": asdict(self.state),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }, self.run_dir / CHECKPOINT)

    def resume(self) -> bool:
        """Restore the last checkpoint of ``run_dir`` if there is one; True if restored."""
        if self.run_dir is None or not (self.run_dir / CHECKPOINT).exists():
            return False
        ck = load_checkpoint(self.run_dir / CHECKPOINT, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        for opt, st in zip(self.optimizers, ck["optimizers"]):
            opt.load_state_dict(st)
        self.state = TrainState(**ck["state"])
        torch.set_rng_state(ck["rng"]["torch"])
        np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])
        self.log(f"resumed from {self.run_dir / CHECKPOINT}: epoch {self.state.epoch}, batch {self.state.batch}")
        return True

    def save_best(self) -> None:
        if self.run_dir is not None:
            save_checkpoint(self.model.state_dict(), self.run_dir / BEST)

    # ------------------------------------------------------------------ one step
    def step(self, batch) -> float | None:
        """One optimiser step; returns the loss, or None if the batch was skipped (non-finite loss)."""
        b = batch.to(self.device, non_blocking=True)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        logits = self.model(b.sparse, b.dense)
        total, per_task = masked_bce(logits, b.labels, self.weights)
        if not torch.isfinite(total):
            bad = [t for t, v in zip(self.task_names, per_task.tolist()) if not math.isfinite(v)]
            where = f"epoch {self.state.epoch + 1}, batch {self.state.batch + 1}, task(s) {bad or self.task_names}"
            if self.cfg.on_nan == "skip":
                self.state.skipped_batches += 1
                self.log(f"skipping batch with non-finite loss at {where}")
                return None
            raise TrainingError(f"non-finite loss ({total.item()}) at {where}; the last good checkpoint is kept. "
                                "Lower the learning rates, check the inputs, or set train.on_nan=skip")
        total.backward()
        for opt in self.optimizers:
            opt.step()
        self.state.step += 1
        return float(total.detach())

    # ------------------------------------------------------------------ the loop
    def fit(self, train: TensorData, evaluate: Evaluator | None = None) -> TrainState:
        """Train for ``cfg.epochs`` epochs (from the restored state, if any), evaluating after each epoch and
        stopping early when the validation score has not improved for ``cfg.patience`` epochs."""
        cfg, st = self.cfg, self.state
        loader = BatchLoader(train, cfg.batch_size, shuffle=True, seed=cfg.seed)
        while st.epoch < cfg.epochs and not st.stopped:
            loader.epoch, loader.start_batch = st.epoch, st.batch
            self.model.train()
            bar = tqdm(loader, total=len(loader), initial=st.batch, desc=f"epoch {st.epoch + 1}/{cfg.epochs}",
                       disable=True if not cfg.progress else None, leave=False, dynamic_ncols=True)
            running, seen = 0.0, 0
            for batch in bar:
                loss = self.step(batch)
                st.batch += 1
                if loss is not None:
                    running, seen = running + loss, seen + 1
                    if seen % 20 == 0:
                        bar.set_postfix(loss=f"{running / seen:.4f}")
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            st.epoch, st.batch = st.epoch + 1, 0
            record = {"epoch": st.epoch, "train_loss": running / max(seen, 1)}
            if evaluate is not None:
                score, summary = evaluate(self.model)
                record.update(summary)
                if score > st.best:
                    st.best, st.best_epoch, st.bad_epochs = score, st.epoch, 0
                    self.save_best()
                else:
                    st.bad_epochs += 1
                    st.stopped = st.bad_epochs > cfg.patience
            else:
                self.save_best()
            st.history.append(record)
            self.log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            self.save()
        return st
