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
import copy
import io
from typing import Any

import fixtures
from keystoneauth1 import session as ks_session
from oslo_utils.fixture import uuidsentinel as uuids

from barbican_tee.attestation import snp
from barbican_tee.client import rest
from barbican_tee.osc.v1 import tcb
from nova_tee.scheduler import floors as tee_floors
from openstack_tee_demo import nova_harness as base
from openstack_tee_demo import report
from openstack_tee_demo.sp_model import snp as sp_model
from tests.functional.nova import barbican_class

ADMIN = barbican_class.ADMIN


class TcbReportTest(barbican_class.FloorBarbicanTestBase):

    def setUp(self) -> None:
        super().setUp()
        # TEEFilter reads the floors afresh (not another test's).
        self.useFixture(fixtures.MockPatchObject(
            tee_floors, "CACHE", tee_floors.FloorCache()))

    def _report(self, stderr: io.StringIO | None = None
                ) -> list[tuple[str, ...]]:
        placement = self.placement.fixture
        auth = report.HarnessAuth(
            {"placement": placement.endpoint,
             "compute": self.admin_api.base_url},
            {"X-Auth-Token": placement.token, "X-Auth-User": "admin",
             "X-Auth-Project-Id": self.admin_api.project_id,
             "X-Roles": "reader,member,admin"})
        session = ks_session.Session(auth=auth)
        # Every request the command makes, per service.
        self.asked: dict[str, list[str]] = {}
        original = session.get

        def get(path: str, **kwargs: Any) -> Any:
            service = kwargs["endpoint_filter"]["service_type"]
            self.asked.setdefault(service, []).append(path)
            return original(path, **kwargs)

        self.useFixture(fixtures.MockPatchObject(session, "get", get))
        manager = report.Manager(session,
                           rest.TEEClient(self.barbican.url, headers=ADMIN))
        app = report.App(manager)
        command = tcb.TcbReport(app, None)
        columns, rows = command.take_action(argparse.Namespace())
        self.assertEqual(tcb.COLUMNS, columns)
        if stderr is not None:
            stderr.write(app.stderr.getvalue())
        return list(rows)

    def _image_snp(self) -> str:
        """An image that asks for SEV-SNP by itself (plain flavors)."""
        image = copy.deepcopy(self.glance.show(None, uuids.tee_snp_image))
        image["id"] = uuids.image_encrypted
        image["properties"].update(hw_mem_encryption="True",
                                   hw_mem_encryption_model="amd-sev-snp")
        self.glance.create(None, image)
        return str(image["id"])

    def test_report_lists_the_stale_host_and_its_guest(self) -> None:
        self.set_floor(0)
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
        # Encrypted through its image's properties, its flavor plain.
        by_image: dict[str, Any] = self._create_server(
            image_uuid=self._image_snp(), flavor_id=self._create_flavor(),
            networks="none", host="stale")
        self.assertEqual("stale", by_image["OS-EXT-SRV-ATTR:host"])
        self.assertEqual({}, by_image["flavor"]["extra_specs"])
        # Nova's pages shorter than the report asks ([api] max_limit):
        # the report follows them.
        self.flags(max_limit=1, group="api")
        note = io.StringIO()
        # At floor 0 no host is below it (the control); the SEV host
        # (no SEV-SNP) is not listed, and the command says why.
        self.assertEqual([], self._report(note))
        self.assertIn("Not listed: 1 host(s) with SEV or SEV-ES and no "
                      "SEV-SNP, to which the SNP TCB floors do not apply: "
                      "sev", note.getvalue())
        # Placement asked per trait, not per provider: the list, the
        # traits in use (TCB, SEV), then one per trait in use (SEV, SNP,
        # REPORTED and the two hosts' TCB traits).
        self.assertEqual([], [p for p in self.asked["placement"]
                              if p.startswith("/resource_providers/")])
        self.assertLessEqual(len(self.asked["placement"]), 8,
                             self.asked["placement"])
        self.set_floor(9)
        # The effective floor: the config's (3.0.8.115), raised to SNP 9.
        rows = self._report()
        expected = sorted([
            ("stale", "milan", "3.0.8.115", "3.0.9.115", s["id"], s["name"],
             s["tenant_id"], "ACTIVE", tcb.ACTION_GUEST)
            for s in (server, by_image)], key=lambda r: (r[6], r[5]))
        self.assertEqual(expected, rows)
        # Two servers on "stale", one per page: three Nova requests.
        self.assertEqual(3, len(self.asked["compute"]), self.asked)
