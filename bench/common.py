"""Shared timing helpers: several rounds, the median quoted."""

from __future__ import annotations

from collections.abc import Callable
import statistics
import time


def median_seconds(fn: Callable[[], object], rounds: int = 7,
                   inner: int = 1,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``inner`` calls of ``fn`` over ``rounds``.

    Wall time by default; ``clock=time.process_time`` counts this
    process's CPU time instead (what another process's CPU time is
    compared with).
    """
    fn()  # warm up caches and imports outside the measurement
    samples = []
    for _ in range(rounds):
        start = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - start) / inner)
    return statistics.median(samples)


def ratio_line(name: str, value: float, op: str, target: float) -> str:
    # Three decimals: two would print 0.248 as "0.25 (target >= 0.25)".
    return f"ratio {name} = {value:.3f} (target {op} {target:g})"
