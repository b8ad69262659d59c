"""Shared timing helpers: several rounds, the median quoted."""

from __future__ import annotations

from collections.abc import Callable
import statistics
import time


def median_seconds(fn: Callable[[], object], rounds: int = 7,
                   inner: int = 1) -> float:
    """Median wall time of ``inner`` calls of ``fn`` over ``rounds``."""
    fn()  # warm up caches and imports outside the measurement
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def ratio_line(name: str, value: float, op: str, target: float) -> str:
    return f"ratio {name} = {value:.2f} (target {op} {target:g})"
