"""Spawn time with SEV attestation against without, in Nova's harness.

Run by bench/bench_spawn.py in its own process (Nova's functional harness
patches eventlet process-wide). Boots servers through Nova's REST API on a
host whose secure processor is the software model, alternately with a
flavor that requires attestation (session, paused start, measurement,
secret injection through a real barbican-api) and one that does not
(plain SEV), and prints the ratio of the medians.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from oslo_utils.fixture import uuidsentinel as uuids  # noqa: E402

from bench import common  # noqa: E402
from tests.functional.nova import test_attested_launch as t  # noqa: E402

RESULT: list[str] = []
ROUNDS = 7


class SpawnBench(t.AttestedLaunchTest):

    def _timed_boot(self, flavor: str, metadata: dict[str, str]) -> float:
        body = self._build_server(image_uuid=uuids.tee_sev_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = metadata
        start = time.perf_counter()
        with t.mock_caps():
            server = self._wait_for_state_change(
                self.api.post_server({"server": body}), "ACTIVE")
        elapsed = time.perf_counter() - start
        self._delete_server(server)
        return elapsed

    def test_spawn(self) -> None:
        self._start("host")
        attested = self.tee_flavor("amd-sev", attestation="required")
        plain = self.tee_flavor("amd-sev")
        self._timed_boot(plain, {})  # warm caches
        with_att, without = [], []
        for _ in range(ROUNDS):
            # A secret per boot: a deleted instance retires its secret.
            secret_id, _ = self._sealed_secret()
            with_att.append(self._timed_boot(
                attested, {"tee_secret": secret_id}))
            without.append(self._timed_boot(plain, {}))
        ours, base = statistics.median(with_att), statistics.median(without)
        RESULT.append(common.ratio_line("spawn_with_attestation_vs_without",
                                        ours / base, "<=", 1.3))
        RESULT.append(f"  medians: with attestation={ours * 1e3:.0f}ms "
                      f"without={base * 1e3:.0f}ms rounds={ROUNDS}")


def main() -> int:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(SpawnBench)
    suite = unittest.TestSuite(
        [test for test in suite if test.id().endswith("test_spawn")])
    outcome = unittest.TextTestRunner(stream=open(os.devnull, "w"),
                                      verbosity=0).run(suite)
    if not outcome.wasSuccessful():
        for _, trace in outcome.errors + outcome.failures:
            print(trace, file=sys.stderr)
        return 1
    print("\n".join(RESULT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
