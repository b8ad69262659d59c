"""Reference values for vCPU counts 1..64: cached chain vs 64 full runs.

Both sides compute the same 64 SNP launch digests (sev-snp-measure's
AmdSev OVMF suffix fixture, an empty kernel and initrd, append
``console=ttyS0``, vCPU type EPYC-v4) in the same process. Ours builds a
fresh :class:`ReferenceCalculator` each round (so the firmware part is
computed once per round) and asks for ``digests(range(1, 65))``; the
baseline calls sevsnpmeasure's ``guest.calc_launch_digest`` once per vCPU
count. The ratio is baseline median over our median.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sevsnpmeasure import guest  # noqa: E402
from sevsnpmeasure import sev_mode  # noqa: E402
from sevsnpmeasure import vcpu_types  # noqa: E402

from barbican_tee.attestation import measure  # noqa: E402

OVMF = os.path.join(ROOT, "tests", "fixtures", "sev-snp-measure", "tests",
                    "fixtures", "ovmf_AmdSev_suffix.bin")
VCPU_TYPE = "EPYC-v4"
APPEND = "console=ttyS0"
COUNTS = range(1, 65)
ROUNDS = 9


def _median(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm up imports and caches outside the measurement
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty")
        with open(empty, "wb"):
            pass
        sig = vcpu_types.CPU_SIGS[VCPU_TYPE]

        def ours() -> dict[int, bytes]:
            calc = measure.ReferenceCalculator(
                OVMF, mode="snp", vcpu_type=VCPU_TYPE, kernel=empty,
                initrd=empty, append=APPEND)
            return calc.digests(COUNTS)

        def baseline() -> dict[int, bytes]:
            return {
                n: guest.calc_launch_digest(
                    sev_mode.SevMode.SEV_SNP, n, sig, OVMF, empty, empty,
                    APPEND, measure.DEFAULT_GUEST_FEATURES)
                for n in COUNTS}

        if ours() != baseline():
            raise SystemExit("bench_measure: digests differ from "
                             "sev-snp-measure")
        base = _median(baseline, ROUNDS)
        mine = _median(ours, ROUNDS)
    return [
        f"ratio measure_vcpus_1_64_speedup = {base / mine:.1f} "
        "(target >= 10)",
        f"  medians: ours={mine:.6f}s sev-snp-measure x64={base:.6f}s "
        f"rounds={ROUNDS}",
    ]


if __name__ == "__main__":
    print("\n".join(run()))
