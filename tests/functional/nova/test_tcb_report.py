"""``openstack tee tcb report`` against Nova's harness and a barbican-api.

Nova's harness (API, placement, scheduler, computes whose secure processor
is the software model) and one real barbican-api. The command's own code
(``TcbReport.take_action``) runs with a real keystoneauth session whose
endpoints are the harness's Nova API and placement (in-process, through
wsgi-intercept, as the harness's own clients reach them) and a TEEClient
on the barbican-api: what it reads is what the driver published to
placement and what Nova's API answers.
"""

from __future__ import annotations

import argparse
from typing import Any

import fixtures
from keystoneauth1 import plugin as ks_plugin
from keystoneauth1 import session as ks_session
from oslo_utils.fixture import uuidsentinel as uuids
import requests

from barbican_tee.attestation import snp
from barbican_tee.client import rest
from barbican_tee.osc.v1 import tcb
from nova_tee.scheduler import floors as tee_floors
from openstack_tee_demo import nova_harness as base
from openstack_tee_demo.sp_model import snp as sp_model
from tests.functional.barbican import fixture as barbican_fixture

ADMIN = {"X-Project-Id": "cloud-admin", "X-Roles": "admin",
         "X-User-Id": "operator"}


class _HarnessAuth(ks_plugin.BaseAuthPlugin):
    """The harness's endpoints per service type, and its no-auth headers."""

    def __init__(self, endpoints: dict[str, str],
                 headers: dict[str, str]) -> None:
        super().__init__()
        self.endpoints = endpoints
        self.headers = headers

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        return dict(self.headers)

    def get_endpoint(self, session: Any, service_type: str | None = None,
                     **kwargs: Any) -> str:
        return self.endpoints[str(service_type)]


class _Manager:
    interface = "public"
    region_name = None

    def __init__(self, session: ks_session.Session,
                 tee: rest.TEEClient) -> None:
        self.session = session
        self.tee = tee


class _App:
    def __init__(self, manager: _Manager) -> None:
        self.client_manager = manager


class TcbReportTest(base.TEEServersTestBase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.barbican = barbican_fixture.BarbicanServer(workers=1)
        cls.barbican.setUp()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.barbican.cleanUp()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.flags(barbican_url=self.barbican.url,
                   barbican_noauth_project="nova-service", group="tee")
        self.addCleanup(self._set_floor, 0)
        # TEEFilter reads the floors afresh (not another test's).
        self.useFixture(fixtures.MockPatchObject(
            tee_floors, "CACHE", tee_floors.FloorCache()))

    def _set_floor(self, spl: int) -> None:
        resp = requests.put(
            f"{self.barbican.url}/v1/tee/floors/milan", headers=ADMIN,
            json={"bootloader": 0, "tee": 0, "snp": spl, "microcode": 0},
            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)

    def _report(self) -> list[tuple[str, ...]]:
        placement = self.placement.fixture
        auth = _HarnessAuth(
            {"placement": placement.endpoint,
             "compute": self.admin_api.base_url},
            {"X-Auth-Token": placement.token, "X-Auth-User": "admin",
             "X-Auth-Project-Id": self.admin_api.project_id,
             "X-Roles": "reader,member,admin"})
        manager = _Manager(ks_session.Session(auth=auth),
                           rest.TEEClient(self.barbican.url, headers=ADMIN))
        command = tcb.TcbReport(_App(manager), None)
        columns, rows = command.take_action(argparse.Namespace())
        self.assertEqual(tcb.COLUMNS, columns)
        return list(rows)

    def test_report_lists_the_stale_host_and_its_guest(self) -> None:
        self._set_floor(0)
        self.start_tee_compute("stale")  # Milan, TCB 3.0.8.115
        self.start_tee_compute("fresh", sp_model.SecureProcessor(
            label="nova-functional", tcb=snp.TcbVersion(
                bootloader=3, tee=0, snp=9, microcode=115)))
        self.start_sev_compute("sev")
        flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="0")
        with base.snp_caps():
            server: dict[str, Any] = self._create_server(
                image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                networks="none", host="stale")
        self.assertEqual("stale", server["OS-EXT-SRV-ATTR:host"])
        unknown = [r for r in self._report() if r[0] == "sev"]
        # The SEV host publishes no SNP TCB: unknown, not up to date.
        self.assertEqual([("sev", "unknown", "unknown", "-", "-", "-", "-",
                           "-", tcb.ACTION_UNKNOWN_HOST)], unknown)
        # At floor 0 no host is below it (the control).
        self.assertEqual(unknown, self._report())
        self._set_floor(9)
        # The effective floor: the config's (3.0.8.115), raised to SNP 9.
        self.assertEqual(
            unknown + [("stale", "milan", "3.0.8.115", "3.0.9.115",
                        server["id"], server["name"], server["tenant_id"],
                        "ACTIVE", tcb.ACTION_GUEST)], self._report())
