"""Launch XML: launchSecurity composition, hardening, schema, libvirt."""

from __future__ import annotations

import base64
from collections.abc import Callable
import functools
from typing import Any

from nova import exception
from nova.virt.libvirt import config as vconfig

from nova_tee import specs
from nova_tee.virt.libvirt import config as tee_config
from nova_tee.virt.libvirt import driver as tee_driver
from tests import base
from tests import libvirt_schema

validate = libvirt_schema.validate_domain
UUID = "8e5ad4b4-5b6c-4f45-9d0c-1d9f1f1d0c11"


def snp_tdx(test: Callable[[Any], None]) -> Callable[[Any], None]:
    """A test of SEV-SNP/TDX launch security, which needs Nova 34.

    On Nova 34 it runs as written. On Nova 33 (tox -e nova33), which has
    no SNP or TDX launch security, building one must be refused with an
    error naming Nova 34, and the test checks exactly that.
    """
    @functools.wraps(test)
    def run(self: Any) -> None:
        if tee_driver.SNP_TDX:
            test(self)
            return
        exc = self.assertRaises(NotImplementedError, test, self)
        self.assertIn("needs Nova 34 (2026.2) or later", str(exc))

    return run


def guest_xml(launch_security: object) -> str:
    """A small but complete q35 domain, as Nova's config classes write it."""
    guest = vconfig.LibvirtConfigGuest()
    guest.virt_type = "kvm"
    guest.name = "instance-00000001"
    guest.uuid = UUID
    guest.memory = 2048 * 1024
    guest.vcpus = 2
    guest.os_type = "hvm"
    guest.os_mach_type = "q35"
    guest.os_loader = "/usr/share/OVMF/OVMF_CODE.fd"
    guest.os_loader_type = "pflash"
    guest.os_loader_readonly = True
    disk = vconfig.LibvirtConfigGuestDisk()
    disk.source_type = "file"
    disk.source_path = "/var/lib/nova/instances/disk"
    disk.target_dev = "vda"
    disk.target_bus = "virtio"
    disk.driver_name = "qemu"
    disk.driver_format = "qcow2"
    guest.add_device(disk)
    nic = vconfig.LibvirtConfigGuestInterface()
    nic.net_type = "bridge"
    nic.source_dev = "br0"
    nic.model = "virtio"
    nic.mac_addr = "fa:16:3e:00:00:01"
    guest.add_device(nic)
    rng = vconfig.LibvirtConfigGuestRng()
    rng.backend = "/dev/urandom"
    guest.add_device(rng)
    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model = "virtio"
    balloon.period = 10
    guest.add_device(balloon)
    guest.launch_security = launch_security
    return guest.to_xml()


class LaunchSecurityXMLTest(base.TestCase):

    @snp_tdx
    def test_snp_with_host_data_and_id_block_validates(self) -> None:
        ls = tee_config.SEVSNPLaunchSecurity(
            policy=0x30000, host_data=tee_driver.host_data(UUID),
            id_block=b"\x01" * 96, id_auth=b"\x00" * 4 + b"\x01" + (
                b"\x00" * 4091))
        xml = tee_driver.harden_guest_xml(guest_xml(ls))
        validate(xml)
        self.assertIn("<policy>0x00030000</policy>", xml)
        self.assertIn(base64.b64encode(tee_driver.host_data(UUID)).decode(),
                      xml)
        self.assertIn("authorKey=\"yes\"", xml)
        self.assertIn('<memballoon model="none"/>', xml)
        self.assertEqual(3, xml.count('iommu="on"'))

    def test_sev_and_sev_es_validate(self) -> None:
        for policy in (0x33, 0x37):
            ls = tee_config.SEVLaunchSecurity(
                policy=policy, dh_cert="AAAA", session="BBBB")
            xml = tee_driver.harden_guest_xml(guest_xml(ls))
            validate(xml)
            self.assertIn(f"<policy>0x{policy:04x}</policy>", xml)
            self.assertIn("<dhCert>AAAA</dhCert>", xml)

    @snp_tdx
    def test_tdx_validates(self) -> None:
        ls = tee_config.TDXLaunchSecurity(mr_config_id=b"\x02" * 48,
                                          mr_owner=b"\x03" * 48)
        xml = tee_driver.harden_guest_xml(guest_xml(ls))
        validate(xml)
        self.assertIn("<policy>0x10000000</policy>", xml)
        self.assertIn("<mrConfigId>", xml)
        self.assertNotIn("<mrOwnerConfig>", xml)

    @snp_tdx
    def test_schema_check_is_real(self) -> None:
        ls = tee_config.SEVSNPLaunchSecurity(policy=0x30000,
                                             host_data=b"\x00" * 32)
        xml = guest_xml(ls).replace("<policy>", "<polciy>").replace(
            "</policy>", "</polciy>")
        with self.assertRaises(libvirt_schema.SchemaError) as ctx:
            validate(xml)
        self.assertIn("candidate.xml fails to validate", str(ctx.exception))
        # The untouched fixture XML of libvirt's own tests does validate.
        for name in ("launch-security-sev-snp.xml",
                     "launch-security-sev.xml"):
            with open(base.fixture_path(
                    "libvirt-11.3.0", "tests", "qemuxmlconfdata",
                    name)) as f:
                validate(f.read())

    @snp_tdx
    def test_sizes_are_checked(self) -> None:
        self.assertRaises(ValueError, tee_config.SEVSNPLaunchSecurity,
                          policy=0, host_data=b"\x00" * 31)
        self.assertRaises(ValueError, tee_config.SEVSNPLaunchSecurity,
                          policy=0, host_data=b"\x00" * 32,
                          id_block=b"\x00" * 96)
        self.assertRaises(ValueError, tee_config.TDXLaunchSecurity,
                          mr_owner=b"\x00" * 47)


class SEVRoundTripTest(base.TestCase):
    """libvirt's own test driver defines and returns our SEV domain."""

    def test_sev_domain_round_trips(self) -> None:
        import libvirt

        ls = tee_config.SEVLaunchSecurity(policy=0x33, dh_cert="AAAA",
                                          session="BBBB")
        xml = tee_driver.harden_guest_xml(guest_xml(ls))
        conn = libvirt.open("test:///default")
        self.addCleanup(conn.close)
        dom = conn.defineXML(xml.replace('type="kvm"', 'type="test"'))
        self.addCleanup(dom.undefine)
        out = dom.XMLDesc(0)
        self.assertIn("<launchSecurity type='sev'>", out)
        self.assertIn("<policy>0x0033</policy>", out)
        self.assertIn("<dhCert>AAAA</dhCert>", out)
        self.assertIn("<session>BBBB</session>", out)
        self.assertIn("iommu='on'", out)


class MetadataTest(base.TestCase):

    def test_host_data_binding(self) -> None:
        import hashlib

        self.assertEqual(
            hashlib.sha256(b"openstack-tee:v1:" + UUID.encode()).digest(),
            tee_driver.host_data(UUID))

    def test_id_block_from_metadata(self) -> None:
        block = base64.b64encode(b"\x05" * 96).decode()
        auth = base64.b64encode(b"\x06" * 4096).decode()
        parts = {f"tee_id_auth_{i}": auth[i * 250:(i + 1) * 250]
                 for i in range((len(auth) + 249) // 250)}
        got = tee_driver.id_block_from_metadata(
            dict(parts, tee_id_block=block))
        self.assertEqual((b"\x05" * 96, b"\x06" * 4096), got)
        self.assertEqual((None, None), tee_driver.id_block_from_metadata({}))
        bad = [
            {"tee_id_block": block},
            dict(parts),
            dict(parts, tee_id_block="not base64!"),
            dict(parts, tee_id_block=base64.b64encode(b"x" * 95).decode()),
            dict({k: v for k, v in parts.items() if k != "tee_id_auth_1"},
                 tee_id_block=block),
        ]
        for metadata in bad:
            with self.subTest(keys=sorted(metadata)[:3]):
                self.assertRaises(exception.InvalidInput,
                                  tee_driver.id_block_from_metadata,
                                  metadata)

    def test_tdx_metadata(self) -> None:
        value = base64.b64encode(b"\x07" * 48).decode()
        self.assertEqual({"mr_owner": b"\x07" * 48},
                         tee_driver.tdx_measurements_from_metadata(
                             {"tee_mr_owner": value, "other": "x"}))
        self.assertRaises(exception.InvalidInput,
                          tee_driver.tdx_measurements_from_metadata,
                          {"tee_mr_config_id": value[:-4]})

    def test_tdx_owner_config_id_and_a_secret_are_refused(self) -> None:
        value = base64.b64encode(b"\x07" * 48).decode()
        both = {"tee_mr_config_id": value, "tee_secret": "s"}
        exc = self.assertRaises(exception.InvalidInput,
                                tee_driver.refuse_unbindable,
                                specs.TDX, both)
        self.assertIn("cannot be used together", str(exc))
        # Either alone, or both on another model: nothing to refuse.
        for model, metadata in ((specs.TDX, {"tee_mr_config_id": value}),
                                (specs.TDX, {"tee_secret": "s"}),
                                (specs.SEV_SNP, both)):
            tee_driver.refuse_unbindable(model, metadata)

    @snp_tdx
    def test_policy_bits_reach_the_xml(self) -> None:
        req = specs.request_from({
            "hw:mem_encryption": "true",
            "hw:mem_encryption_model": "amd-sev-snp",
            "tee:snp_smt": "false", "tee:snp_single_socket": "true"})
        ls = tee_config.SEVSNPLaunchSecurity(policy=req.policy,
                                             host_data=b"\x00" * 32)
        self.assertIn("<policy>0x00120000</policy>", guest_xml(ls))


class PassthroughTest(base.TestCase):

    def test_host_devices_are_refused(self) -> None:
        guest = vconfig.LibvirtConfigGuest()
        tee_driver.refuse_passthrough(guest)
        for device in (vconfig.LibvirtConfigGuestHostdevPCI(),
                       vconfig.LibvirtConfigGuestHostdevMDEV()):
            guest = vconfig.LibvirtConfigGuest()
            guest.add_device(device)
            with self.subTest(device=type(device).__name__):
                exc = self.assertRaises(exception.InvalidInput,
                                        tee_driver.refuse_passthrough, guest)
                self.assertIn("passthrough", str(exc))

    def test_sriov_ports_are_refused(self) -> None:
        # vnic_type=direct (an SR-IOV VF) is an <interface type="hostdev">
        # to Nova: the same DMA outside the TEE.
        vf = vconfig.LibvirtConfigGuestInterface()
        vf.net_type = "hostdev"
        guest = vconfig.LibvirtConfigGuest()
        guest.add_device(vf)
        exc = self.assertRaises(exception.InvalidInput,
                                tee_driver.refuse_passthrough, guest)
        self.assertIn("passthrough", str(exc))
        # A virtio port (bridge, ethernet, vhostuser) is not.
        for net_type in ("bridge", "ethernet", "vhostuser"):
            port = vconfig.LibvirtConfigGuestInterface()
            port.net_type = net_type
            guest = vconfig.LibvirtConfigGuest()
            guest.add_device(port)
            tee_driver.refuse_passthrough(guest)


class SessionReplaceTest(base.TestCase):

    @snp_tdx
    def test_saved_xml_gets_a_fresh_session(self) -> None:
        ls = tee_config.SEVLaunchSecurity(policy=0x33, dh_cert="OLD",
                                          session="OLDSESSION")
        xml = tee_driver.replace_sev_session(guest_xml(ls), "NEW",
                                             "NEWSESSION")
        self.assertIn("<dhCert>NEW</dhCert>", xml)
        self.assertIn("<session>NEWSESSION</session>", xml)
        self.assertNotIn("OLD", xml)
        validate(xml)
        snp = tee_config.SEVSNPLaunchSecurity(policy=0x30000,
                                              host_data=b"\x00" * 32)
        self.assertRaises(exception.InvalidInput,
                          tee_driver.replace_sev_session, guest_xml(snp),
                          "A", "B")


class UpstreamSEVElementTest(base.TestCase):

    def test_what_upstreams_element_carried_is_kept(self) -> None:
        # Nova 33 writes the C-bit position and reduced physical bits it
        # read from the domain capabilities; ours replaces its element
        # and keeps them. Nova 34 writes neither (libvirt fills them in).
        upstream = vconfig.LibvirtConfigGuestSEVLaunchSecurity()
        upstream.cbitpos = 51
        upstream.reduced_phys_bits = 1
        ls = tee_config.SEVLaunchSecurity(policy=0x33, dh_cert="AAAA",
                                          session="BBBB", upstream=upstream)
        xml = tee_driver.harden_guest_xml(guest_xml(ls))
        validate(xml)
        if tee_driver.SNP_TDX:
            self.assertNotIn("cbitpos", xml)
        else:
            self.assertIn("<cbitpos>51</cbitpos>", xml)
            self.assertIn("<reducedPhysBits>1</reducedPhysBits>", xml)
        # Without upstream's values, nothing is written for them.
        xml = guest_xml(tee_config.SEVLaunchSecurity(policy=0x33))
        self.assertNotIn("cbitpos", xml)
        self.assertNotIn("None", xml)
