#!/usr/bin/env python3
"""Run every benchmark (``tox -e bench``); one ratio line per comparison."""

from __future__ import annotations

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BENCHMARKS = ("bench.bench_snp", "bench.bench_measure", "bench.bench_filter",
              "bench.bench_release", "bench.bench_spawn")


def main() -> int:
    for name in BENCHMARKS:
        module = importlib.import_module(name)
        for line in module.run():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
