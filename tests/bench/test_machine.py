"""The machine figures a benchmark records: CPU time stolen by the hypervisor, from /proc/stat."""
from __future__ import annotations

import sys

import pytest

from pepnet.bench import machine
from pepnet.bench.machine import CpuTimes, steal_fraction


def test_steal_fraction_from_two_snapshots():
    assert steal_fraction(CpuTimes(1000, 10), CpuTimes(1400, 110)) == pytest.approx(0.25)
    assert steal_fraction(CpuTimes(1000, 10), CpuTimes(1000, 10)) is None  # no time passed
    assert steal_fraction(None, CpuTimes(1, 0)) is None


def test_reads_the_steal_column_of_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 30 800 7 0 3 55 0 0\ncpu0 50 2 15 400 3 0 1 27 0 0\n")
    monkeypatch.setattr(machine, "PROC_STAT", stat)
    assert CpuTimes.now() == CpuTimes(total=1000, steal=55)
    stat.write_text("intr 1 2 3\n")
    assert CpuTimes.now() is None
    monkeypatch.setattr(machine, "PROC_STAT", tmp_path / "missing")
    assert CpuTimes.now() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_has_counters_that_advance():
    start = CpuTimes.now()
    sum(i * i for i in range(200_000))
    assert start is not None and 0 <= start.steal <= start.total
    end = CpuTimes.now()
    assert end is not None and end.total >= start.total


def test_steal_note_is_empty_when_unknown():
    from pepnet.bench.machine import steal_note

    assert steal_note(None) == ""
    assert steal_note(0.0123) == "; CPU time stolen by the hypervisor 1.2%"
