"""Confidential servers booted through Nova's REST API with our pieces."""

from __future__ import annotations

import base64
from unittest import mock

from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client
from oslo_utils.fixture import uuidsentinel as uuids

from nova_tee.virt.libvirt import driver as tee_driver
from openstack_tee_demo import nova_harness as base
from openstack_tee_demo.sp_model import snp as sp_model
from tests import libvirt_schema

SNP_CAPS = (fakelibvirt.virConnect.
            _domain_capability_features_with_launch_security_SEV_SNP)


class SNPBootTest(base.TEEServersTestBase):

    def test_snp_boot_writes_bound_launch_security(self) -> None:
        self.start_tee_compute("host1")
        flavor = self.tee_flavor("amd-sev-snp", attestation="required",
                                 snp_smt="false", min_tcb_snp="8")
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SNP_CAPS):
            server = self._create_server(
                image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                networks="none")
        xml = self.domain_xml(server)
        self.assertIn('type="sev-snp"', xml)
        self.assertIn("<policy>0x00020000</policy>", xml)
        binding = base64.b64encode(
            tee_driver.host_data(server["id"])).decode()
        self.assertIn(f"<hostData>{binding}</hostData>", xml)
        self.assertIn('<memballoon model="none"/>', xml)
        self.assertNotIn('<memballoon model="virtio"', xml)
        libvirt_schema.validate_domain(xml)
        # What upstream has no trait for is reported as CUSTOM_TEE_*.
        traits = self._get_provider_traits(self.compute_rp_uuids["host1"])
        self.assertIn("CUSTOM_TEE_ATTESTATION", traits)
        self.assertIn("CUSTOM_TEE_SNP_TCB_REPORTED", traits)

    def test_no_host_meets_minimum_tcb(self) -> None:
        self.start_tee_compute("host1")  # model TCB snp=8
        flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="9")
        server = self._create_server(
            image_uuid=uuids.tee_snp_image, flavor_id=flavor,
            networks="none", expected_state="ERROR")
        self.assertIn("No valid host", server["fault"]["message"])

    def test_host_with_newer_firmware_is_chosen(self) -> None:
        self.start_tee_compute("old")
        newer = sp_model.SecureProcessor(
            label="nova-functional",
            tcb=sp_model.snp.TcbVersion(bootloader=3, tee=0, snp=9,
                                        microcode=115))
        self.start_tee_compute("new", newer)
        flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="9")
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SNP_CAPS):
            server = self._create_server(
                image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                networks="none")
        self.assertEqual("new", server["OS-EXT-SRV-ATTR:host"])

    def test_id_block_from_server_metadata(self) -> None:
        self.start_tee_compute("host1")
        # tee_* metadata is read for guests with a tee: request only.
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        block = base64.b64encode(b"\x05" * 96).decode()
        auth = base64.b64encode(b"\x06" * 4096).decode()
        metadata = {f"tee_id_auth_{i}": auth[i * 250:(i + 1) * 250]
                    for i in range((len(auth) + 249) // 250)}
        metadata["tee_id_block"] = block
        body = self._build_server(image_uuid=uuids.tee_snp_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = metadata
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SNP_CAPS):
            server = self._wait_for_state_change(
                self.api.post_server({"server": body}), "ACTIVE")
        xml = self.domain_xml(server)
        self.assertIn(f"<idBlock>{block}</idBlock>", xml)
        libvirt_schema.validate_domain(xml)

    def test_bad_id_block_metadata_faults_clearly(self) -> None:
        self.start_tee_compute("host1")
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        body = self._build_server(image_uuid=uuids.tee_snp_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = {"tee_id_block": "bm90IDk2IGJ5dGVz",
                            "tee_id_auth_0": "AAAA"}
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SNP_CAPS):
            server = self._wait_for_state_change(
                self.api.post_server({"server": body}), "ERROR")
        self.assertIn("openstack-tee: server metadata tee_id_block",
                      server["fault"]["message"])


class WeigherTest(base.TEEServersTestBase):

    def _boot(self, flavor: str, host: str | None = None) -> dict:
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SNP_CAPS):
            return self._create_server(
                image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                networks="none", host=host)

    def test_weigher_decides_between_qualifying_hosts(self) -> None:
        self.start_tee_compute("busy")
        self.start_tee_compute("idle")
        # The weigher judges flavors with tee: keys only; upstream SNP
        # flavors are weighed as upstream weighs them.
        flavor = self.tee_flavor("amd-sev-snp", attestation="none")
        self._boot(flavor, host="busy")
        self._run_periodics()
        # Packing (negative multiplier) picks the busier host, against
        # Nova's RAM weigher, which prefers the idle one.
        self.flags(weight_multiplier=-1000.0, group="tee")
        self.assertEqual("busy",
                         self._boot(flavor)["OS-EXT-SRV-ATTR:host"])
        self._run_periodics()
        # Spreading picks the host with more free SNP slots.
        self.flags(weight_multiplier=1000.0, group="tee")
        self.assertEqual("idle",
                         self._boot(flavor)["OS-EXT-SRV-ATTR:host"])


class ExtraSpecAPITest(base.TEEServersTestBase):

    def _flavor(self) -> str:
        return str(self._create_flavor())

    def _post(self, flavor: str, specs: dict) -> client.OpenStackApiException:
        return self.assertRaises(
            client.OpenStackApiException,
            self.admin_api.post_extra_spec, flavor, {"extra_specs": specs})

    def test_bad_values_are_400(self) -> None:
        flavor = self._flavor()
        for specs in ({"tee:min_tcb_snp": "300"},
                      {"tee:attestation": "maybe"},
                      {"tee:colour": "blue"}):
            with self.subTest(specs=specs):
                exc = self._post(flavor, specs)
                self.assertEqual(400, exc.response.status_code)

    def test_conflicts_are_400_and_name_the_keys(self) -> None:
        flavor = self._flavor()
        exc = self._post(flavor, {"tee:attestation": "required"})
        self.assertEqual(400, exc.response.status_code)
        self.assertIn("hw:mem_encryption", exc.response.text)
        self.admin_api.post_extra_spec(flavor, {"extra_specs": {
            "hw:mem_encryption": "true",
            "hw:mem_encryption_model": "amd-sev"}})
        exc = self._post(flavor, {"tee:snp_debug": "true"})
        self.assertIn("tee:snp_debug applies to amd-sev-snp",
                      exc.response.text)
        # Nothing was stored.
        self.assertNotIn("tee:snp_debug",
                         self.admin_api.get_extra_specs(flavor))
        # A consistent change goes through.
        self.admin_api.post_extra_spec(flavor, {"extra_specs": {
            "tee:sev_nosend": "true"}})
        # A near miss of the namespace (Nova validates only 'tee:'): read
        # by nothing, it would boot unattested; named and refused.
        for key in ("TEE:attestation", " tee:attestation"):
            exc = self._post(flavor, {key: "required"})
            self.assertEqual(400, exc.response.status_code)
            self.assertIn(f"'{key}' is not a tee: extra spec",
                          exc.response.text)
            self.assertNotIn(key, self.admin_api.get_extra_specs(flavor))
        # Nova's own validator: values its int() would take.
        for value in (" 8", "+8", "1_0"):
            exc = self._post(flavor, {"tee:min_tcb_snp": value})
            self.assertEqual(400, exc.response.status_code)

    def test_removing_encryption_under_tee_keys_is_400(self) -> None:
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        exc = self.assertRaises(
            client.OpenStackApiException, self.admin_api.api_delete,
            f"/flavors/{flavor}/os-extra_specs/hw:mem_encryption")
        self.assertEqual(400, exc.response.status_code)


SEV_CAPS = (fakelibvirt.virConnect.
            _domain_capability_features_with_launch_security_SEV)


class SEVBootTest(base.TEEServersTestBase):

    def _start(self, es: bool) -> None:
        self.libvirt.amd_sev.sev_snp = False
        self.libvirt.amd_sev.sev_es = es
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SEV_CAPS):
            self.start_compute(
                hostname="sevhost",
                qemu_version=base.versionutils.convert_version_to_int(
                    base.nova_host.MIN_QEMU_SEV_ES_VERSION))

    def _boot(self, flavor: str) -> dict:
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=SEV_CAPS):
            return self._create_server(
                image_uuid=uuids.tee_sev_image, flavor_id=flavor,
                networks="none")

    def test_sev_boot(self) -> None:
        self._start(es=False)
        flavor = self.tee_flavor("amd-sev", sev_nosend="true")
        xml = self.domain_xml(self._boot(flavor))
        self.assertIn('<launchSecurity type="sev">', xml)
        self.assertIn("<policy>0x003b</policy>", xml)
        self.assertIn('iommu="on"', xml)
        libvirt_schema.validate_domain(xml)
        self._round_trip(xml)

    def test_sev_es_boot(self) -> None:
        self._start(es=True)
        flavor = self.tee_flavor("amd-sev-es")
        xml = self.domain_xml(self._boot(flavor))
        self.assertIn("<policy>0x0037</policy>", xml)
        libvirt_schema.validate_domain(xml)
        self._round_trip(xml)

    def _round_trip(self, xml: str) -> None:
        """libvirt's own test driver accepts and returns our SEV domain."""
        import libvirt
        from lxml import etree

        root = etree.fromstring(xml)
        root.set("type", "test")
        # The test driver has no firmware auto-selection.
        for os_el in root.findall("os"):
            os_el.attrib.pop("firmware", None)
            for child in list(os_el):
                if child.tag in ("loader", "nvram", "firmware"):
                    os_el.remove(child)
            loader = etree.SubElement(os_el, "loader", readonly="yes",
                                      type="pflash")
            loader.text = "/usr/share/OVMF/OVMF_CODE.fd"
        conn = libvirt.open("test:///default")
        self.addCleanup(conn.close)
        dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
        self.addCleanup(dom.undefine)
        out = dom.XMLDesc(0)
        self.assertIn("<launchSecurity type='sev'>", out)
        ours = etree.fromstring(xml).find("launchSecurity")
        theirs = etree.fromstring(out).find("launchSecurity")
        self.assertEqual(ours.findtext("policy"), theirs.findtext("policy"))


class TDXBootTest(base.TEEServersTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.libvirt.amd_sev.sev = False
        self.libvirt.amd_sev.sev_snp = False
        self.useFixture(base.fixtures.MockPatch(
            "nova.virt.libvirt.host.Host._get_tdx_capacity",
            return_value=16))

    def test_tdx_boot_with_owner_measurements(self) -> None:
        tdx_caps = fakelibvirt.virConnect._domain_capability_features_with_TDX
        with mock.patch.object(fakelibvirt.virConnect,
                               "_domain_capability_features", new=tdx_caps):
            self.start_compute(
                hostname="tdxhost",
                libvirt_version=base.versionutils.convert_version_to_int(
                    base.nova_driver.MIN_LIBVIRT_STATELESS_FIRMWARE))
            flavor = self.tee_flavor("intel-tdx", attestation="required")
            body = self._build_server(image_uuid=uuids.tee_tdx_image,
                                      flavor_id=flavor, networks="none")
            owner = base64.b64encode(b"\x42" * 48).decode()
            body["metadata"] = {"tee_mr_owner": owner}
            server = self._wait_for_state_change(
                self.api.post_server({"server": body}), "ACTIVE")
        xml = self.domain_xml(server)
        self.assertIn('<launchSecurity type="tdx">', xml)
        self.assertIn(f"<mrOwner>{owner}</mrOwner>", xml)
        binding = base64.b64encode(
            tee_driver.tdx_config_id(server["id"])).decode()
        self.assertIn(f"<mrConfigId>{binding}</mrConfigId>", xml)
        self.assertIn("<policy>0x10000000</policy>", xml)
        libvirt_schema.validate_domain(xml)
