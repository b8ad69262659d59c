"""TEEFilter and the platform TCB floors set in a real barbican-api.

Nova's harness (API, scheduler with TEEFilter, a compute whose secure
processor is the software model: Milan, TCB 3.0.8.115, the config's
default Milan floor) and one barbican-api for the class. The floor cache's
clock is the test's, so "past the TTL" needs no sleep.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import fixtures
from oslo_utils.fixture import uuidsentinel as uuids
import requests

from barbican_tee import server as tee_server
from nova_tee.scheduler import floors as tee_floors
from openstack_tee_demo import nova_harness as base
from tests.functional.nova import barbican_class

TTL = 60
ADMIN = barbican_class.ADMIN


class FloorFilterTest(barbican_class.FloorBarbicanTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.flags(floor_cache_ttl=TTL, group="tee")
        self.now = 1000.0
        self._fresh_cache()

    def _fresh_cache(self) -> None:
        cache = tee_floors.FloorCache(clock=lambda: self.now)
        self.useFixture(fixtures.MockPatchObject(tee_floors, "CACHE",
                                                 cache))

    def _boot(self, expected: str) -> dict[str, Any]:
        flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="0")
        with base.snp_caps():
            server: dict[str, Any] = self._create_server(
                image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                networks="none", expected_state=expected)
        if expected == "ERROR":
            self.assertIn("No valid host", server["fault"]["message"])
        return server

    def test_raised_floor_refuses_the_stale_host_within_the_ttl(
            self) -> None:
        self.start_tee_compute("stale")  # SNP SPL 8
        self._boot("ACTIVE")
        self.set_floor(9)
        # Once the floors read are TTL old, the raised floor applies.
        self.now += TTL
        self._boot("ERROR")
        # (Lowered again, it passes: the positive control that ends
        # test_unreachable_barbican_never_makes_the_host_pass.)

    def test_unreachable_barbican_never_makes_the_host_pass(self) -> None:
        self.start_tee_compute("stale")
        self.set_floor(9)
        self._boot("ERROR")
        # Barbican gone (nothing listens there), its floor lowered: the
        # floor last read stays in force, however old.
        self.flags(barbican_url=f"http://127.0.0.1:{tee_server.free_port()}",
                   group="tee")
        self.set_floor(8)
        self.now += 100 * TTL
        self._boot("ERROR")
        # A scheduler that never read a floor refuses, and says why.
        self._fresh_cache()
        self._boot("ERROR")
        self.assertIn("none were ever read", self.stdlog.logger.output)
        # Positive control: Barbican back, the lowered floor is read.
        self.flags(barbican_url=self.barbican.url, group="tee")
        self.now += 100 * TTL
        self._boot("ACTIVE")

    def test_a_silent_barbican_does_not_stall_scheduling(self) -> None:
        # A Barbican that accepts and never answers: the scheduler's read
        # gives up after [tee] floor_read_timeout, not after [tee]
        # attestation_timeout (nova-compute's, 30 s), and refuses.
        self.start_tee_compute("stale")
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        self.flags(barbican_url=(
            f"http://127.0.0.1:{silent.getsockname()[1]}"),
            floor_read_timeout=1, attestation_timeout=30, group="tee")
        start = time.monotonic()
        self._boot("ERROR")
        # (Before: 30 s for the read alone.)
        self.assertLess(time.monotonic() - start, 25)
        self.assertIn("none were ever read", self.stdlog.logger.output)
        self.assertIn("did not answer in 1 s", self.stdlog.logger.output)
        # Positive control: the same scheduler, Barbican answering.
        self.flags(barbican_url=self.barbican.url, group="tee")
        self.now += TTL
        self._boot("ACTIVE")

    def test_a_tampered_product_refuses_its_hosts_only(self) -> None:
        # Another product's stored floor forged in the database: a
        # scheduler that (re)starts now still places Milan guests.
        resp = requests.put(
            f"{self.barbican.url}/v1/tee/floors/genoa", headers=ADMIN,
            json={"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0},
            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        self.addCleanup(requests.put,
                        f"{self.barbican.url}/v1/tee/floors/genoa",
                        headers=ADMIN, timeout=30,
                        json={"bootloader": 0, "tee": 0, "snp": 0,
                              "microcode": 0})
        self.barbican.sql("UPDATE tee_floors SET updated_by = 'forger' "
                          "WHERE product = 'genoa'")
        self.start_tee_compute("milan-host")  # SNP SPL 8
        self._boot("ACTIVE")
        # Milan's own row forged: its hosts are refused (not "no floor").
        self.set_floor(0)
        self.barbican.sql("UPDATE tee_floors SET updated_by = 'forger' "
                          "WHERE product = 'milan'")
        self.now += TTL
        self._boot("ERROR")
        self.assertIn("cannot give the milan platform TCB floor",
                      self.stdlog.logger.output)
        # Set again by an administrator: placed again.
        self.set_floor(0)
        self.now += TTL
        self._boot("ACTIVE")
