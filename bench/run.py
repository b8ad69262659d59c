#!/usr/bin/env python3
"""Run every benchmark (``tox -e bench``); one ratio line per comparison.

Each benchmark runs in a process of its own, so that one's imports (Nova's
eventlet patching, caches, servers) cannot skew another's numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS = ("bench_snp", "bench_measure", "bench_filter",
              "bench_release", "bench_spawn")


def main(names: list[str]) -> int:
    """Run the benchmarks ``names`` (default: all of them)."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmarks {unknown}: choose from {BENCHMARKS}")
        return 2
    env = dict(os.environ)
    # Nova's own default (eventlet) for the Nova benchmarks, as in a
    # running nova-scheduler or nova-compute.
    env.pop("OS_NOVA_DISABLE_EVENTLET_PATCHING", None)
    status = 0
    for name in [n for n in BENCHMARKS if not names or n in names]:
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", f"{name}.py")],
            capture_output=True, text=True, env=env, cwd=ROOT,
            check=False)
        lines = [line for line in proc.stdout.splitlines()
                 if line.startswith(("ratio ", "  "))]
        # A benchmark that measured part of its comparisons prints them,
        # and says which ones it did not run (exit status non-zero).
        if lines:
            print("\n".join(lines), flush=True)
        if proc.returncode != 0 or not lines:
            status = 1
            what = "incomplete" if lines else "failed"
            print(f"{name} {what} (exit {proc.returncode}):\n"
                  f"{proc.stderr[-2000:]}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
