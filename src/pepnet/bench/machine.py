"""What else the machine did during a measurement: load average and the CPU time stolen by the hypervisor.

On a virtual machine, the host may run other guests on the same physical cores; the guest sees that time as
*steal* (``/proc/stat``, Linux). A benchmark run while a fifth of the CPU time is stolen is slower for reasons
that have nothing to do with the code, so results record it beside the load average.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """The machine's cumulative CPU time (all CPUs, clock ticks) and the part of it stolen by the hypervisor."""

    total: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes | None:
        """The current counters, or None where ``/proc/stat`` is missing (not Linux) or has no steal column."""
        try:
            fields = PROC_STAT.read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        if len(fields) < 9 or fields[0] != "cpu":
            return None
        ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
        return cls(total=sum(ticks), steal=ticks[7])


def steal_fraction(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Share of the CPU time between two snapshots that the hypervisor gave to other guests (0..1); None when
    a snapshot is missing or no time passed."""
    if start is None or end is None or end.total <= start.total:
        return None
    return (end.steal - start.steal) / (end.total - start.total)


def steal_note(fraction: float | None) -> str:
    """``"; CPU time stolen by the hypervisor 1.2%"`` for a benchmark's summary line; empty when unknown."""
    return "" if fraction is None else f"; CPU time stolen by the hypervisor {fraction:.1%}"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())
