"""Benchmarks: ``pepnet bench`` (throughput against the FLOP bound and a straightforward implementation)."""
from .core import format_table, run_bench

__all__ = ["format_table", "run_bench"]
