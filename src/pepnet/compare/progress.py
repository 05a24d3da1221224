"""Progress of a comparison: which model / seed / epoch is running, and an upper bound of the time left.

:class:`Progress` is a trainer callback (:class:`~pepnet.train.trainer.TrainerCallback`): the trainer hands it
an :class:`~pepnet.train.trainer.EpochRecord` at the end of every epoch, with the epoch's measured seconds."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..train.trainer import EpochRecord


def duration(seconds: float) -> str:
    """``1h02m`` or ``3m05s``."""
    m, s = divmod(int(max(seconds, 0.0)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Which run of the comparison is going, and the time left.

    ``runs``: one flag per run in order, True for a GBDT run. Each neural run trains up to ``epochs_per_run``
    epochs (with ``train.refit`` that includes the refit's). The time left is the mean measured seconds of an
    epoch times the epochs still possible (an upper bound: early stopping ends runs sooner), plus the mean
    measured seconds of a GBDT run times the GBDT runs to come (before the first one is measured, a GBDT run is
    counted as one epoch). Never negative."""

    def __init__(self, runs: list[bool], epochs_per_run: int, log: Callable[[str], None]):
        self.runs, self.epochs_per_run, self.log = list(runs), epochs_per_run, log
        self.run = 0  # runs begun
        self.epochs_done = 0  # epochs of the current run
        self.epoch_seconds: list[float] = []
        self.gbdt_seconds: list[float] = []
        self.label = ""
        self.active = False  # a run has begun and not ended
        self.started = time.perf_counter()

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def begin(self, label: str, seed: int) -> None:
        self.run += 1
        self.active = True
        self.epochs_done = 0
        self.started = time.perf_counter()
        self.label = f"[{self.run}/{self.n_runs} {label} seed {seed}]"
        self.log(f"{self.label} start")

    def seconds_left(self) -> float | None:
        """The estimate in seconds; None before anything was measured."""
        if not self.epoch_seconds and not self.gbdt_seconds:
            return None
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else None
        per_gbdt = sum(self.gbdt_seconds) / len(self.gbdt_seconds) if self.gbdt_seconds else per_epoch
        per_epoch = per_epoch if per_epoch is not None else per_gbdt
        later = self.runs[self.run:]
        epochs = sum(not g for g in later) * self.epochs_per_run
        gbdts = sum(later)
        if self.active and self.runs[self.run - 1]:
            gbdts += 1
        elif self.active:
            epochs += max(0, self.epochs_per_run - self.epochs_done)
        return max(0.0, epochs * (per_epoch or 0.0) + gbdts * (per_gbdt or 0.0))

    def eta(self) -> str:
        left = self.seconds_left()
        return "?" if left is None else duration(left)

    def on_epoch_end(self, record: EpochRecord) -> None:
        """The trainer's end-of-epoch callback: one line with the epoch, its time and the time left."""
        self.epochs_done += 1
        self.epoch_seconds.append(record.seconds)
        self.log(f"{self.label} epoch {record.epoch}/{record.epochs} done in {record.seconds:.1f}s  "
                 f"| time left <= {self.eta()}")

    def message(self, msg: str) -> None:
        """A log line of the current run, prefixed with its label."""
        self.log(f"{self.label} {msg}")

    def end(self) -> float:
        """The current run is over; returns its seconds (a GBDT run's are kept for the estimate)."""
        seconds = time.perf_counter() - self.started
        self.active = False
        if self.runs[self.run - 1]:
            self.gbdt_seconds.append(seconds)
        return seconds


__all__ = ["Progress", "duration"]
