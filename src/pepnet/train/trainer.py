"""The training loop: optimisers, progress, early stopping, atomic checkpoints and exact resume.

The trainer knows nothing of a particular model: it asks it for ``embedding_parameters()`` (Adagrad)
and trains everything else with Adam; the loss is the masked multi-task BCE.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batches import Prefetcher, TensorData
from .checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from .distributed import DistContext, broadcast_parameters, sync_gradients
from .loss import masked_bce
from .optim import make_optimizers
from .runtime import TrainingError, resolve_device, rng_state, set_rng_state, should_compile
from .sharded import ShardedEmbeddings

CHECKPOINT = "checkpoint.pt"
BEST = "model.pt"

Evaluator = Callable[[nn.Module], tuple[float, dict]]


@dataclass(frozen=True)
class EpochRecord:
    """What the trainer hands its callbacks at the end of each epoch.

    epoch: epochs completed (1-based); epochs: the configured number (early stopping may end sooner);
    train_loss: mean finite batch loss of the epoch; valid: the evaluator's summary (``valid_*`` metrics; empty
    without a validation split); seconds: wall time of the epoch, training and evaluation."""

    epoch: int
    epochs: int
    train_loss: float
    valid: dict[str, float]
    seconds: float


class TrainerCallback(Protocol):
    """Told about training as it goes (e.g. ``pepnet compare``'s progress and time left)."""

    def on_epoch_end(self, record: EpochRecord) -> None: ...


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
    epoch_loss: float = 0.0    # sum of the finite batch losses of the current epoch (exact train_loss on resume)
    epoch_batches: int = 0     # how many batches that sum holds
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Trains ``model`` on a TensorData; ``run_dir`` (optional) receives checkpoints and the best weights."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        task_names: list[str],
        task_weights: list[float] | None = None,
        run_dir: str | Path | None = None,
        device: torch.device | None = None,
        log: Callable[[str], None] = print,
        dist: DistContext | None = None,
        sharded: ShardedEmbeddings | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ):
        self.cfg, self.task_names, self.log, self.callbacks = cfg, task_names, log, list(callbacks)
        self.device = device or resolve_device(cfg.device)
        self.dist = dist or DistContext()  # data-parallel: shards of each global batch, gradients averaged
        # train.embedding_sharding: TorchRec's DistributedModelParallel (built from ``model``) is stepped instead;
        # it updates the tables in the backward pass and its DDP averages the dense gradients
        self.sharded = sharded
        if sharded is not None:
            self.model = sharded.module
            self.optimizers = sharded.optimizers(cfg)
        else:
            self.model = model.to(self.device)
            if self.dist.active:
                broadcast_parameters(self.model)
            self.optimizers = make_optimizers(self.model, cfg)
        self.weights = torch.tensor(task_weights or [1.0] * len(task_names), dtype=torch.float32, device=self.device)
        # bf16 autocast of the forward pass (train.amp); the loss is computed in float32
        self.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else None
        # torch.compile'd view of the same module (train.compile; "auto" is decided by compile_for once the
        # length of the run is known); self.model keeps the plain state_dict
        self.forward: Callable[..., torch.Tensor] = self.model
        if cfg.compile is True:
            self.forward = torch.compile(self.model)
        self.run_dir = Path(run_dir) if run_dir else None
        self.state = TrainState()
        # the dense weights' optimisers (Adam): train.lr_schedule sets their rate; train.ema_decay averages
        # their weights, swapped in to evaluate and save
        self.dense_optimizers = [o for o in self.optimizers if isinstance(o, torch.optim.Adam)]
        self.ema_params = (
            [p for o in self.dense_optimizers for g in o.param_groups for p in g["params"]] if cfg.ema_decay > 0 else []
        )
        self.ema = [p.detach().clone() for p in self.ema_params]

    def compile_for(self, steps: int | None) -> None:
        """Apply ``train.compile=auto`` to a run of ``steps`` optimiser steps (None: open-ended): compile the
        model's dense part when :func:`~pepnet.train.runtime.should_compile` says it pays (never for TorchRec's
        sharded module, which is compiled only when asked)."""
        cfg = self.cfg
        if (cfg.compile == "auto" and self.forward is self.model and self.sharded is None
                and should_compile(cfg.compile, self.device, steps)):
            self.log(f"train.compile=auto: compiling the dense part for {steps or 'an open-ended number of'} steps")
            self.forward = torch.compile(self.model)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write checkpoint.pt; never over a good one with non-finite weights (a finite loss can still give an
        infinite gradient): that stops training instead, keeping the last good checkpoint."""
        if self.run_dir is None:
            return
        model_state = self.model_state()
        if not self.dist.is_main:
            return
        # a NaN/inf weight makes the sum NaN/inf (and no table-sized boolean temporary is needed)
        bad = [n for n, p in model_state.items() if p.is_floating_point() and not torch.isfinite(p.detach().sum())]
        if bad:
            st = self.state
            raise TrainingError(
                f"weights {bad[:3]} became non-finite by optimiser step {st.step} ({st.epoch} epoch(s) "
                f"and {st.batch} batch(es) done); the last good checkpoint {self.run_dir / CHECKPOINT} "
                "is kept. Lower the learning rates or check the inputs"
            )
        save_checkpoint(
            {
                "model": model_state,
                "optimizers": [o.state_dict() for o in self.optimizers],
                "ema": self.ema,
                "state": asdict(self.state),
                "rng": rng_state(),
            },
            self.run_dir / CHECKPOINT,
        )

    def resume(self) -> bool:
        """Restore the last checkpoint of ``run_dir`` if there is one; True if restored."""
        if self.run_dir is None or not (self.run_dir / CHECKPOINT).exists():
            return False
        if self.sharded is not None:
            raise TrainingError(
                f"--resume is not supported with train.embedding_sharding={self.cfg.embedding_sharding!r} "
                "yet (the tables' fused Adagrad state is not checkpointed); start a new run"
            )
        path = self.run_dir / CHECKPOINT
        ck = load_checkpoint(path, map_location=self.device)
        load_state(self.model, ck["model"], path)
        saved_ema = ck.get("ema", [])
        if len(ck["optimizers"]) != len(self.optimizers) or (saved_ema and len(saved_ema) != len(self.ema)):
            raise TrainingError(f"{path} holds {len(ck['optimizers'])} optimiser state(s) and "
                                f"{len(saved_ema)} averaged weight(s); this model has {len(self.optimizers)} and "
                                f"{len(self.ema)}: the config changed since the checkpoint. Start a new run instead")
        try:
            for opt, st in zip(self.optimizers, ck["optimizers"], strict=True):
                opt.load_state_dict(st)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path}: its optimiser state does not fit this model ({exc})") from None
        for e, saved in zip(self.ema, saved_ema, strict=True) if saved_ema else ():  # none saved: a fresh average
            e.copy_(saved)
        self.state = TrainState(**ck["state"])
        set_rng_state(ck["rng"])
        self.log(f"resumed from {self.run_dir / CHECKPOINT}: epoch {self.state.epoch}, batch {self.state.batch}")
        return True

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's state_dict in the plain (fused-table) layout; with sharded tables a collective."""
        return self.sharded.full_state() if self.sharded is not None else self.model.state_dict()

    @contextmanager
    def averaged(self):
        """With ``train.ema_decay``: the model holds the averaged dense weights inside the block (to evaluate
        and save them) and its training weights again after it; without, the model as it is."""
        if not self.ema:
            yield
            return
        with torch.no_grad():
            live = [p.detach().clone() for p in self.ema_params]
            for p, e in zip(self.ema_params, self.ema, strict=True):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.ema_params, live, strict=True):
                    p.copy_(v)

    def save_best(self) -> None:
        if self.run_dir is not None:
            model_state = self.model_state()
            if self.dist.is_main:
                save_checkpoint(model_state, self.run_dir / BEST)

    # ------------------------------------------------------------------ one step
    def schedule(self, total_steps: int) -> None:
        """Set the dense (Adam) learning rate of the next step (``train.lr_schedule``): with ``linear``,
        dense_lr * (1 - steps taken / total_steps). A function of the step count alone, so a resumed run
        continues the same schedule."""
        if self.cfg.lr_schedule == "constant":
            return
        lr = self.cfg.dense_lr * max(0.0, 1.0 - self.state.step / max(total_steps, 1))
        for opt in self.dense_optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, batch) -> float | None:
        """One optimiser step; returns the loss, or None if the batch was skipped (non-finite loss)."""
        b = batch.to(self.device, non_blocking=True)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
        ):
            logits = self.forward(b.sparse, b.dense)
        total, per_task = masked_bce(logits, b.labels, self.weights)
        loss = self.dist.mean(float(total.detach()))  # over the ranks: all of them agree on skipping / stopping
        if not math.isfinite(loss):
            bad = [t for t, v in zip(self.task_names, per_task.tolist(), strict=True) if not math.isfinite(v)]
            where = f"epoch {self.state.epoch + 1}, batch {self.state.batch + 1}, task(s) {bad or self.task_names}"
            if self.cfg.on_nan == "skip":
                self.state.skipped_batches += 1
                self.log(f"skipping batch with non-finite loss at {where}")
                return None
            raise TrainingError(
                f"non-finite loss ({total.item()}) at {where}; the last good checkpoint is kept. "
                "Lower the learning rates, check the inputs, or set train.on_nan=skip"
            )
        total.backward()
        if self.dist.active and self.sharded is None:
            sync_gradients(self.model, self.dist.world)
        for opt in self.optimizers:
            opt.step()
        if self.ema:
            decay = min(self.cfg.ema_decay, (1 + self.state.step) / (10 + self.state.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.ema_params], 1.0 - decay)
        self.state.step += 1
        return loss

    # ------------------------------------------------------------------ the loop
    def fit(self, train: TensorData, evaluate: Evaluator | None = None) -> TrainState:
        """Train for ``cfg.epochs`` epochs (from the restored state, if any), evaluating after each epoch and
        stopping early when the validation score has not improved for ``cfg.patience`` epochs."""
        cfg, st = self.cfg, self.state
        if cfg.data_on_device:
            train = train.to(self.device)
        loader = self.dist.loader(train, cfg.batch_size, cfg.seed)
        total_steps = cfg.epochs * len(loader)
        self.compile_for(total_steps - st.epoch * len(loader) - st.batch)
        prefetch = cfg.prefetch > 0 and self.device.type == "cuda" and train.sparse.device.type == "cpu"
        while st.epoch < cfg.epochs and not st.stopped:
            started = time.perf_counter()
            loader.epoch, loader.start_batch = st.epoch, st.batch
            self.model.train()
            bar = tqdm(
                Prefetcher(loader, self.device, cfg.prefetch) if prefetch else loader,
                total=len(loader),
                initial=st.batch,
                desc=f"epoch {st.epoch + 1}/{cfg.epochs}",
                disable=True if not (cfg.progress and self.dist.is_main) else None,
                leave=False,
                dynamic_ncols=True,
            )
            for batch in bar:
                self.schedule(total_steps)
                loss = self.step(batch)
                st.batch += 1
                if loss is not None:
                    st.epoch_loss, st.epoch_batches = st.epoch_loss + loss, st.epoch_batches + 1
                    if st.epoch_batches % 20 == 0:
                        bar.set_postfix(loss=f"{st.epoch_loss / st.epoch_batches:.4f}")
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            st.epoch, st.batch = st.epoch + 1, 0
            record = {"epoch": st.epoch, "train_loss": st.epoch_loss / max(st.epoch_batches, 1)}
            st.epoch_loss, st.epoch_batches = 0.0, 0
            with self.averaged():
                if evaluate is not None:
                    score, summary = evaluate(self.sharded.plain_model() if self.sharded is not None else self.model)
                    record.update(summary)
                    if score > st.best or st.best_epoch < 0:  # the first epoch is always kept
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
            done = EpochRecord(
                st.epoch,
                cfg.epochs,
                record["train_loss"],
                {k: v for k, v in record.items() if k.startswith("valid_")},
                time.perf_counter() - started,
            )
            for callback in self.callbacks:
                callback.on_epoch_end(done)
        return st
