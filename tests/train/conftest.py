"""Fixtures of the training tests: a worker script that says, after pepnet's exit handler, whether the process
group and its gloo threads are gone."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# prints "at exit: initialised False, gloo threads []" when pepnet.train.distributed.leave destroyed the group and
# the group's destructor joined gloo's threads; a joined thread that the kernel has not reaped yet is still listed in
# /proc but marked exiting (PF_EXITING in the flags field of its stat), and is not counted
EXIT_REPORT = '''
import atexit
import os

import torch.distributed as dist

PF_EXITING = 0x4


def live_gloo_threads() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # ended since the listing
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if "gloo" in comm and not int(fields[6]) & PF_EXITING:  # fields[6]: the flags (field 9 of stat)
            names.append(comm)
    return sorted(names)


def report() -> None:
    print(f"at exit: initialised {dist.is_initialized()}, gloo threads {live_gloo_threads()}", flush=True)


atexit.register(report)  # registered first, so it runs last (atexit is last-in, first-out): after pepnet's leave
'''

@pytest.fixture
def exit_probe(tmp_path) -> Callable[[str], Path]:
    """Write a worker script, the exit report above followed by ``body``; returns its path (for torchrun)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("thread names are read from /proc")

    def write(body: str) -> Path:
        path = tmp_path / "exit_probe.py"
        path.write_text(EXIT_REPORT + body)
        return path

    return write
