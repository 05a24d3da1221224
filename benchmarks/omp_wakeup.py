"""What one parallel region costs to start: an in-place add of 65,536 floats (above torch's grain size of 32,768,
so it runs on every thread) against one of 16,384 (below it, so the calling thread alone), median of 200.

OMP_WAIT_POLICY=PASSIVE python benchmarks/omp_wakeup.py     # the waiting thread sleeps: each region wakes it
OMP_WAIT_POLICY=ACTIVE python benchmarks/omp_wakeup.py      # it spins
python benchmarks/omp_wakeup.py                             # libgomp's default: spins a while, then sleeps
"""

import os
import statistics
import time
from functools import partial

import torch


def median_us(fn, runs: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


torch.set_num_threads(2)
print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {torch.get_num_threads()} threads")
for n, how in ((65_536, "parallel region"), (16_384, "calling thread only")):
    a, b = torch.randn(n), torch.randn(n)
    print(f"add_ of {n:,} floats ({how}): {median_us(partial(a.add_, b)):.1f} us")
