"""Host TEE capabilities from real libvirt data and kernel interfaces."""

from __future__ import annotations

import glob
import os
import struct
import tempfile

from barbican_tee.attestation import snp_certs
from nova_tee import stats as tee_stats
from nova_tee.virt.libvirt import capabilities
from tests import base


class DomainCapsTest(base.TestCase):

    def test_real_amd_sev_domain_capabilities(self) -> None:
        files = sorted(glob.glob(base.fixture_path(
            "libvirt-11.3.0", "tests", "domaincapsdata", "*+amdsev.xml")))
        self.assertEqual(6, len(files))
        for path in files:
            with self.subTest(path=os.path.basename(path)):
                with open(path, "rb") as f:
                    caps = capabilities.parse_domain_caps(f.read())
                self.assertTrue(caps.sev_supported)
                self.assertEqual(51, caps.cbitpos)
                self.assertEqual(1, caps.reduced_phys_bits)
                self.assertEqual(59, caps.max_guests)
                self.assertEqual(450, caps.max_es_guests)
                self.assertEqual(("sev", "sev-snp"), caps.sectypes)
                self.assertFalse(caps.tdx_supported)
                self.assertTrue(caps.cpu0_id)

    def test_no_tee(self) -> None:
        caps = capabilities.parse_domain_caps(
            "<domainCapabilities><features><sev supported='no'/>"
            "</features></domainCapabilities>")
        self.assertFalse(caps.sev_supported)
        self.assertIsNone(caps.max_guests)
        self.assertEqual((), caps.sectypes)


class KernelTest(base.TestCase):

    def test_kvm_amd_parameters_y_and_1(self) -> None:
        tmp = tempfile.mkdtemp()
        for name, value in (("sev", "Y\n"), ("sev_es", "1\n"),
                            ("sev_snp", "N\n")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(value)
        self.assertEqual({"sev": True, "sev_es": True, "sev_snp": False},
                         capabilities.read_kvm_amd_params(tmp))
        self.assertEqual({"sev": False, "sev_es": False, "sev_snp": False},
                         capabilities.read_kvm_amd_params("/nonexistent"))

    def test_platform_status_layouts(self) -> None:
        # struct sev_user_data_status / sev_user_data_snp_status (packed).
        sev = capabilities.parse_sev_status(
            struct.pack("<BBBIBI", 1, 55, 2, 0, 21, 3))
        self.assertEqual(("1.55", 21, 3), (sev.api, sev.build,
                                           sev.guest_count))
        tcb = int.from_bytes(bytes([3, 0, 0, 0, 0, 0, 8, 115]), "little")
        snp = capabilities.parse_snp_status(
            struct.pack("<BBBBIIIQQ", 1, 57, 1, 1, 30, 0b101, 4, tcb, tcb))
        self.assertEqual("1.57", snp.api)
        self.assertTrue(snp.snp_mask_chip_id)
        self.assertTrue(snp.snp_vlek)
        self.assertEqual("3.0.8.115", capabilities.snp_tcb_string(tcb))
        turin = int.from_bytes(bytes([5, 1, 2, 3, 0, 0, 0, 4]), "little")
        self.assertEqual("1.2.3.4.5",
                         capabilities.snp_tcb_string(
                             turin, snp_certs.Product.TURIN))

    def test_ioctl_number(self) -> None:
        # _IOWR('S', 0, struct sev_issue_cmd) with a 16-byte struct.
        self.assertEqual(0xC0105300, capabilities.SEV_ISSUE_CMD_IOCTL)

    def test_missing_device_is_unknown(self) -> None:
        self.assertIsNone(capabilities.read_firmware_status("/nonexistent"))


class StatsTest(base.TestCase):

    def test_stats_and_traits(self) -> None:
        tcb = int.from_bytes(bytes([3, 0, 0, 0, 0, 0, 8, 115]), "little")
        fw = capabilities.FirmwareStatus(1, 55, 21, 1, 0,
                                         snp_current_tcb=tcb)
        caps = capabilities.HostTEECapabilities(
            models=("amd-sev", "amd-sev-snp"),
            slots={"amd-sev": 59, "amd-sev-snp": 450},
            domain_caps=capabilities.DomainCapsTEE(),
            kvm_params={}, firmware=fw, sev_pdh="UERI",
            tdx_quote_service=False)
        stats = caps.stats({"amd-sev-snp": 2})
        self.assertEqual("amd-sev,amd-sev-snp", stats["tee.models"])
        self.assertEqual(448, tee_stats.free_slots(stats, "amd-sev-snp"))
        self.assertEqual(59, tee_stats.free_slots(stats, "amd-sev"))
        self.assertEqual("1.55", stats["tee.fw"])
        self.assertEqual("3.0.8.115", stats["tee.snp_tcb"])
        self.assertEqual({"CUSTOM_TEE_ATTESTATION",
                          "CUSTOM_TEE_SEV_LAUNCH_SECRET",
                          "CUSTOM_TEE_SNP_TCB_REPORTED"}, caps.traits())


class TDXModuleTest(base.TestCase):

    def test_version_from_sysfs_tree(self) -> None:
        tmp = tempfile.mkdtemp()
        for name, value in (("major_version", "1\n"),
                            ("minor_version", "5\n"),
                            ("build_num", "0697\n")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(value)
        self.assertEqual("1.5.697",
                         capabilities.read_tdx_module_version(tmp))
        os.unlink(os.path.join(tmp, "build_num"))
        self.assertIsNone(capabilities.read_tdx_module_version(tmp))
