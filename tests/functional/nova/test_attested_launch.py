"""SEV launch-time attestation: Nova's harness, a real barbican-api, the
software secure processor behind Nova's libvirt fixture."""

from __future__ import annotations

import hashlib
from typing import Any

import fixtures
from nova.tests.functional.api import client
from oslo_config import cfg
from oslo_utils.fixture import uuidsentinel as uuids
import requests

from openstack_tee_demo import flows
from openstack_tee_demo import nova_harness as base
from openstack_tee_demo import sev_model
from openstack_tee_demo.sp_model import sev as sp_sev
from tests.functional.nova import barbican_class

LUKS_KEY_GUID = sev_model.LUKS_KEY_GUID


class AttestedLaunchTest(barbican_class.BarbicanClassTestBase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.platform = sp_sev.SevPlatform()
        ark = cls.class_file("ark", cls.platform.ark)
        ask = cls.class_file("ask", cls.platform.ask)
        cls.start_barbican(extra_conf={"tee_attestation": {
            "extra_sev_trust_roots": f"{ark}:{ask}"}})

    def setUp(self) -> None:
        super().setUp()
        self.libvirt.amd_sev.sev_snp = False
        self.libvirt.amd_sev.sev_es = False
        self.model = self.useFixture(
            sev_model.SEVModelFixture(self.platform))
        # The secret's owner is the project the servers are booted in.
        self.owner = self.api.project_id
        self.secret_id, self.key = self._sealed_secret()

    def _sealed_secret(self) -> tuple[str, bytes]:
        digest = hashlib.sha256(sev_model.DEFAULT_FIRMWARE).hexdigest()
        return flows.owner_secret(self.barbican.url, self.owner,
                            {"tee": "amd-sev", "measurements": [digest]})

    def _start(self, hostname: str, firmware: bytes | None = None) -> None:
        self.start_sev_compute(hostname, firmware)

    def _boot(self, host: str | None = None,
              expected: str = "ACTIVE") -> dict[str, Any]:
        flavor = self.tee_flavor("amd-sev", attestation="required")
        if host:
            return self.boot_on(host, uuids.tee_sev_image, flavor,
                                self.secret_id, expected, mock_caps)
        body = self._build_server(image_uuid=uuids.tee_sev_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = {"tee_secret": self.secret_id}
        with mock_caps():
            return self._wait_for_state_change(
                self.api.post_server({"server": body}), expected)

    def _domain(self, server: dict[str, Any]) -> Any:
        return self.domain(server)

    def test_boot_injects_the_secret_before_the_guest_runs(self) -> None:
        self._start("good")
        server = self._boot()
        dom = self._domain(server)
        self.assertEqual(["started-paused", "secret-injected", "resumed"],
                         dom.tee_events)
        self.assertEqual(self.key, dom.tee_injected[LUKS_KEY_GUID])
        self.assertIn("<dhCert>", dom.tee_xml)
        # Hard reboot recreates the domain: attested again.
        self._reboot_server(server, hard=True)
        again = self._domain(server)
        self.assertEqual(["started-paused", "secret-injected", "resumed"],
                         again.tee_events[-3:])
        self.assertEqual(self.key, again.tee_injected[LUKS_KEY_GUID])

    def _attested_again(self, server: dict[str, Any], what: str) -> None:
        doms = self.model.started[server["id"]]
        latest = doms[-1]
        self.assertEqual(["started-paused", "secret-injected", "resumed"],
                         latest.tee_events[-3:], what)
        self.assertEqual(self.key, latest.tee_injected[LUKS_KEY_GUID], what)

    def test_every_path_that_recreates_the_domain_attests_again(
            self) -> None:
        self._start("good")
        server = self._boot()
        with mock_caps():
            self._stop_server(server)
            self._start_server(server)
            self._wait_for_state_change(server, "ACTIVE")
            self._attested_again(server, "power on")
            starts = len(self.model.started[server["id"]])
            self._rebuild_server(server, uuids.tee_sev_image)
            self.assertGreater(len(self.model.started[server["id"]]),
                               starts)
            self._attested_again(server, "rebuild")

    def _move_ready(self) -> None:
        # As Nova's own libvirt functional tests do: the disk copy of a
        # cold move is not run, everything else (claims on the target,
        # _get_guest_xml, _create_guest, confirm/revert) is.
        self.useFixture(fixtures.MockPatch(
            "nova.virt.libvirt.driver.LibvirtDriver."
            "migrate_disk_and_power_off", return_value="{}"))

    def test_cold_migration_and_resize_attest_on_the_target(self) -> None:
        self._start("src")
        self._start("dst")
        self._move_ready()
        server = self._boot(host="src")
        with mock_caps():
            server = self._migrate_server(server, api=self.admin_api)
            self.assertEqual("dst", server["OS-EXT-SRV-ATTR:host"])
            self._attested_again(server, "cold migration")
            self.assertEqual("dst", self._domain(server).
                             _connection.hostname)
            server = self._confirm_resize(server)
            bigger = self._create_flavor(
                memory_mb=4096, extra_spec={
                    "hw:mem_encryption": "true",
                    "hw:mem_encryption_model": "amd-sev",
                    "tee:attestation": "required"})
            starts = len(self.model.started[server["id"]])
            server = self._resize_server(server, bigger)
            self.assertGreater(len(self.model.started[server["id"]]),
                               starts)
            self._attested_again(server, "resize")
            # Revert recreates the domain on the source: attested there too.
            starts = len(self.model.started[server["id"]])
            server = self._revert_resize(server)
            self.assertGreater(len(self.model.started[server["id"]]),
                               starts)
            self._attested_again(server, "resize revert")

    def test_cold_migration_to_a_tampered_host_fails(self) -> None:
        self._start("src")
        self._start("tampered", firmware=b"a patched OVMF" * 512)
        self._move_ready()
        server = self._boot(host="src")
        with mock_caps():
            # Nova's harness turns RPC casts into calls (CAST_AS_CALL), so
            # the target's failure comes back through the API as a 500; a
            # real nova-api has answered 202 long before.
            exc = self.assertRaises(
                client.OpenStackApiException,
                self.admin_api.post_server_action, server["id"],
                {"migrate": None})
            self.assertEqual(500, exc.response.status_code)
            server = self._wait_for_state_change(server, "ERROR")
        self.assertIn("sev_measurement_mismatch",
                      server["fault"]["message"])
        latest = self.model.started[server["id"]][-1]
        self.assertNotIn("secret-injected", latest.tee_events)
        self.assertNotIn("resumed", latest.tee_events)

    def test_evacuate_attests_on_the_new_host(self) -> None:
        self._start("src")
        server = self._boot(host="src")
        service = self.admin_api.get_services(
            host="src", binary="nova-compute")[0]["id"]
        self.computes["src"].stop()
        self.admin_api.put_service(service, {"forced_down": "true"})
        self._start("dst")
        with mock_caps():
            server = self._evacuate_server(server, expected_host="dst",
                                           expected_state="ACTIVE")
        self._attested_again(server, "evacuate")
        self.assertEqual("dst", self._domain(server)._connection.hostname)

    def test_rescue_and_unrescue_attest_again(self) -> None:
        # As Nova's own rescue tests do: the instance directory (where
        # unrescue.xml is saved) is the instances_path, and utime on the
        # rescue image's base file is not touched.
        self.useFixture(fixtures.MockPatch(
            "nova.virt.libvirt.imagebackend._update_utime_ignore_eacces"))
        self.useFixture(fixtures.MonkeyPatch(
            "nova.virt.libvirt.utils.get_instance_path",
            lambda *a, **k: cfg.CONF.instances_path))
        self._start("good")
        server = self._boot()
        with mock_caps():
            starts = len(self.model.started[server["id"]])
            self.api.post_server_action(server["id"], {"rescue": {
                "rescue_image_ref": uuids.tee_sev_image}})
            server = self._wait_for_state_change(server, "RESCUE")
            self.assertGreater(len(self.model.started[server["id"]]),
                               starts)
            self._attested_again(server, "rescue")
            starts = len(self.model.started[server["id"]])
            self.api.post_server_action(server["id"], {"unrescue": None})
            server = self._wait_for_state_change(server, "ACTIVE")
            self.assertGreater(len(self.model.started[server["id"]]),
                               starts)
            self._attested_again(server, "unrescue")

    def test_altered_firmware_fails_and_nothing_is_injected(self) -> None:
        self._start("tampered", firmware=b"a patched OVMF" * 512)
        server = self._boot(host="tampered", expected="ERROR")
        self.assertIn("sev_measurement_mismatch",
                      server["fault"]["message"])
        doms = self.model.started[server["id"]]
        self.assertEqual(1, len(doms))
        self.assertEqual(["started-paused", "destroyed"],
                         doms[0].tee_events[:2])
        self.assertNotIn("secret-injected", doms[0].tee_events)
        self.assertNotIn("resumed", doms[0].tee_events)
        self.assertFalse(hasattr(doms[0], "tee_injected"))

    def test_missing_secret_metadata_is_a_clear_fault(self) -> None:
        self._start("good")
        flavor = self.tee_flavor("amd-sev", attestation="required")
        body = self._build_server(image_uuid=uuids.tee_sev_image,
                                  flavor_id=flavor, networks="none")
        with mock_caps():
            server = self._wait_for_state_change(
                self.api.post_server({"server": body}), "ERROR")
        self.assertIn("attestation_no_secret", server["fault"]["message"])


mock_caps = base.sev_caps


class SNPReleaseLifecycleTest(barbican_class.SNPBarbicanTestBase):
    """The instance's hostData binding reaches the release decision."""

    MEASUREMENT = hashlib.sha384(b"public image, SNP").digest()

    def setUp(self) -> None:
        super().setUp()
        self.secret_id, self.key = flows.owner_secret(
            self.barbican.url, self.api.project_id,
            {"tee": "amd-sev-snp", "measurements": [self.MEASUREMENT.hex()]})
        self.start_tee_compute("snphost", self.snp)

    def _boot(self, metadata: dict[str, str],
              expected: str = "ACTIVE") -> dict[str, Any]:
        # A tee: request: only such guests are bound to their secret.
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        body = self._build_server(image_uuid=uuids.tee_snp_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = metadata
        with base.snp_caps():
            return self._wait_for_state_change(
                self.api.post_server({"server": body}), expected)

    def _release(self, instance_uuid: str) -> requests.Response:
        """The guest's release, with the hostData Nova gave the instance.

        The report is made by the software secure processor.
        """
        from nova_tee.virt.libvirt import driver as tee_driver

        guest = flows.SNPGuest(self.snp, self.MEASUREMENT,
                               tee_driver.host_data(instance_uuid))
        return guest.release(self.barbican.url, self.secret_id)[0]

    def test_only_the_bound_instance_and_only_while_it_lives(self) -> None:
        server = self._boot({"tee_secret": self.secret_id})
        self.assertEqual(200, self._release(server["id"]).status_code)
        # The same public image booted as another instance (its own
        # hostData) gets nothing, and cannot take the secret over.
        other = self._boot({})
        resp = self._release(other["id"])
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_mismatch", resp.json()["error"]["code"])
        thief = self._boot({"tee_secret": self.secret_id}, "ERROR")
        self.assertIn("secret_bound_to_other_instance",
                      thief["fault"]["message"])
        # Another project's guest, booted from the same image.
        other_project = client.TestOpenStackClient(
            "other", self.api_fixture.base_url,
            project_id="0ther0ther0ther0ther0ther0ther00",
            roles=["reader", "member"])
        other_project.microversion = "latest"
        # A tee: request: only such guests are bound to their secret.
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        body = self._build_server(image_uuid=uuids.tee_snp_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = {"tee_secret": self.secret_id}
        with base.snp_caps():
            posted = other_project.post_server({"server": body})
            api, self.api = self.api, self.admin_api  # sees every project
            try:
                foreign = self._wait_for_state_change(posted, "ERROR")
            finally:
                self.api = api
        self.assertIn("instance_project_mismatch",
                      foreign["fault"]["message"])
        resp = self._release(foreign["id"])
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_mismatch", resp.json()["error"]["code"])
        # Deleted: released to no one, the old instance's hostData either.
        self._delete_server(server)
        resp = self._release(server["id"])
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_deleted", resp.json()["error"]["code"])


    def _released_to_no_one(self, server: dict[str, Any]) -> None:
        resp = self._release(server["id"])
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_deleted", resp.json()["error"]["code"])

    def test_deleted_while_shelved_offloaded_is_released_to_no_one(
            self) -> None:
        # Nova deletes a shelved-offloaded server in its API (no host, no
        # nova-compute takes part): the API retires the binding.
        self.flags(shelved_offload_time=0)
        server = self._boot({"tee_secret": self.secret_id})
        server = self._shelve_server(server, "SHELVED_OFFLOADED")
        # Shelved, the instance lives on (unshelve boots it again): its
        # binding stands.
        self.assertEqual(200, self._release(server["id"]).status_code)
        self._delete_server(server)
        self._released_to_no_one(server)

    def test_deleted_while_its_host_is_down_is_released_to_no_one(
            self) -> None:
        # Nova deletes the server in its API when its host is down; the
        # host may never come back to clean up.
        server = self._boot({"tee_secret": self.secret_id})
        self.assertEqual(200, self._release(server["id"]).status_code)
        self.computes["snphost"].stop()
        self.admin_api.put_service_force_down(
            self.admin_api.get_services(host="snphost",
                                        binary="nova-compute")[0]["id"],
            True)
        self._delete_server(server)
        self._released_to_no_one(server)

    def test_a_soft_delete_keeps_the_binding_until_reclaimed(self) -> None:
        # With its host up, a delete is nova-compute's to finish: a soft
        # delete (reclaim_instance_interval) can be restored, and the
        # restored server still gets its secret.
        self.flags(reclaim_instance_interval=3600)
        server = self._boot({"tee_secret": self.secret_id})
        self.api.delete_server(server["id"])
        server = self._wait_for_state_change(server, "SOFT_DELETED")
        self.assertEqual(200, self._release(server["id"]).status_code)
        self.api.post_server_action(server["id"], {"restore": {}})
        server = self._wait_for_state_change(server, "ACTIVE")
        self.assertEqual(200, self._release(server["id"]).status_code)
        # Force-deleted (POST forceDelete): retired, by nova-compute.
        self.api.post_server_action(server["id"], {"forceDelete": None})
        self._wait_until_deleted(server)
        self._released_to_no_one(server)

class LifecycleTest(AttestedLaunchTest):
    """Suspend and live migration stay refused, as upstream decided."""

    def test_suspend_and_live_migration_are_refused(self) -> None:
        self._start("src")
        self._start("dst")
        server = self._boot(host="src")
        for action in ({"suspend": {}},
                       {"os-migrateLive": {"host": "dst",
                                           "block_migration": "auto"}}):
            with self.subTest(action=next(iter(action))):
                exc = self.assertRaises(
                    client.OpenStackApiException,
                    self.admin_api.post_server_action, server["id"], action)
                self.assertEqual(400, exc.response.status_code)
                self.assertIn("not supported for mem encryption",
                              exc.response.text)

    # The parent's tests run in AttestedLaunchTest already.
    test_boot_injects_the_secret_before_the_guest_runs = None
    test_every_path_that_recreates_the_domain_attests_again = None
    test_altered_firmware_fails_and_nothing_is_injected = None
    test_missing_secret_metadata_is_a_clear_fault = None
    test_cold_migration_and_resize_attest_on_the_target = None
    test_cold_migration_to_a_tampered_host_fails = None
    test_evacuate_attests_on_the_new_host = None
    test_rescue_and_unrescue_attest_again = None
