"""Run bench/spawn_harness.py in its own process and relay its lines."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run() -> list[str]:
    env = dict(os.environ)
    # Nova's functional harness runs on eventlet, like nova-compute does.
    env.pop("OS_NOVA_DISABLE_EVENTLET_PATCHING", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "spawn_harness.py")],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return ["spawn benchmark failed:", proc.stderr[-3000:]]
    return [line for line in proc.stdout.splitlines()
            if line.startswith(("ratio ", "  medians"))]


if __name__ == "__main__":
    lines = run()
    print("\n".join(lines))
    # A failed run has no ratio line: exit non-zero so that bench/run.py
    # (and tox -e bench) report it instead of passing.
    sys.exit(0 if any(line.startswith("ratio ") for line in lines) else 1)
