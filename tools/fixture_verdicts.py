#!/usr/bin/env python3
"""Verify every real report and quote in tests/fixtures; print verdicts.

Runs the installed ``openstack-tee verify`` once per case of
tests/functional/fixture_cases.py and exits 0 only if every verdict (exit
status and codes) is the expected one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.functional.cli import fixture_cases  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
VERDICT = {0: "VERIFIED", 1: "REFUSED", 2: "UNUSABLE"}


def run_case(case: fixture_cases.Case, command: str,
             tmp: str) -> tuple[int, list[str], float]:
    args = [command, "verify", "--json", "--evidence",
            os.path.join(FIXTURES, case.evidence)]
    for arg in case.args:
        path = os.path.join(FIXTURES, arg)
        args.append(path if os.path.exists(path) else arg)
    if case.policy is not None:
        policy = os.path.join(tmp, "policy.json")
        with open(policy, "w") as f:
            json.dump(case.policy, f)
        args += ["--policy", policy]
    start = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    try:
        codes = json.loads(proc.stdout)["codes"]
    except (ValueError, KeyError):
        codes = ["<no json: " + proc.stderr.strip()[-200:] + ">"]
    return proc.returncode, codes, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin", default="",
                        help="directory of the openstack-tee command")
    opts = parser.parse_args()
    command = os.path.join(opts.bin, "openstack-tee") if opts.bin else (
        "openstack-tee")
    width = max(len(c.name) for c in fixture_cases.CASES)
    print(f"{'case':<{width}}  {'verdict':<9} {'expected':<9} "
          f"{'ok':<3} {'time':>6}  codes")
    print("-" * (width + 40))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in fixture_cases.CASES:
            status, codes, elapsed = run_case(case, command, tmp)
            ok = (status == case.expected_exit
                  and sorted(codes) == sorted(case.expected_codes))
            bad += not ok
            print(f"{case.name:<{width}}  "
                  f"{VERDICT.get(status, str(status)):<9} "
                  f"{VERDICT[case.expected_exit]:<9} "
                  f"{'yes' if ok else 'NO':<3} {elapsed:5.2f}s  "
                  f"{', '.join(codes) or '-'}")
    print("-" * (width + 40))
    total = len(fixture_cases.CASES)
    print(f"{total - bad}/{total} verdicts as expected")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
