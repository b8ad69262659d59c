"""Reference launch digests against sev-snp-measure's published vectors.

Expected values are the ones in virtee/sev-snp-measure tests/test_guest.py
at commit 8f2b337e38bc83f87cd30f3253cdfe8e3e12cc3a, the commit the OVMF and
SVSM fixtures were taken from (tests/fixtures/SOURCES.md). Their kernel and
initrd are /dev/null; an empty file here is the same input.
"""

from __future__ import annotations

import os
from typing import Any

import fixtures
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sevsnpmeasure import guest
from sevsnpmeasure import sev_mode
from sevsnpmeasure import vcpu_types
from sevsnpmeasure import vmm_types

from barbican_tee.attestation import errors
from barbican_tee.attestation import measure
from tests import base

FIX = ("sev-snp-measure", "tests", "fixtures")
AMDSEV = base.fixture_path(*FIX, "ovmf_AmdSev_suffix.bin")
OVMFX64 = base.fixture_path(*FIX, "ovmf_OvmfX64_suffix.bin")
SVSM_OVMF = base.fixture_path(*FIX, "svsm_ovmf.fd")
SVSM = base.fixture_path(*FIX, "svsm.bin")
SVSM_VARS = 540672
CMDLINE = "console=ttyS0 loglevel=7"
OVMF_HASH = ("086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2"
             "c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74")
KERNEL = object()  # placeholder for the empty kernel/initrd file

# name -> (mode, firmware, vcpus, keyword arguments, expected hex)
VECTORS: dict[str, tuple[str, str, int, dict[str, Any], str]] = {
    "snp_ovmf_hash_gen_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x21, ovmf_hash=OVMF_HASH),
        "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae"
        "15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"),
    "snp_ovmf_hash_gen_feature_snp_only": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1, ovmf_hash=OVMF_HASH),
        "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3"
        "ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"),
    "snp_ovmf_hash_full_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL,
             append=CMDLINE, guest_features=0x21, ovmf_hash=OVMF_HASH),
        "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb2"
        "8c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
    "snp_ovmf_hash_full_feature_snp_only": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL,
             append=CMDLINE, guest_features=0x1, ovmf_hash=OVMF_HASH),
        "6d287813eb5222d770f75005c664e34c204f385ce832cc2c"
        "e7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
    "snp_ec2_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x21, vmm_type="ec2"),
        "0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b7"
        "1052498ab52b2f1aa415db338033946ef93aa8278c0d67fb"),
    "snp_ec2_feature_snp_only": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1, vmm_type="ec2"),
        "0883bd0eeb716e65b7b977a321c278d1e51b33b5c655fab9"
        "85443bbcc65c086b9c15e8a0bd8811050dec7e24964e5056"),
    "snp_gce_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type=None, kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1, vmm_type="gce"),
        "5da7106cf14cf46b1725ebab123eb9e53bd46a1e9f400cd0"
        "c08e7827b04b688ea8b4e403c8404efed4397ea5d5d0722e"),
    "snp_gce_with_multiple_vcpus_default": (
        "snp", AMDSEV, 4,
        dict(vcpu_type=None, kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1, vmm_type="gce"),
        "5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2"
        "e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d"),
    "snp_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL,
             append=CMDLINE, guest_features=0x21),
        "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb2"
        "8c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"),
    "snp_guest_feature_snp_only": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL,
             append=CMDLINE, guest_features=0x1),
        "6d287813eb5222d770f75005c664e34c204f385ce832cc2c"
        "e7d0d6f354454362f390ef83a92046c042e706363b4b08fa"),
    "snp_without_kernel_default": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", guest_features=0x21),
        "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af"
        "9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"),
    "snp_without_kernel_feature_snp_only": (
        "snp", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", guest_features=0x1),
        "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6"
        "013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"),
    "snp_with_multiple_vcpus_default": (
        "snp", AMDSEV, 4,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x21),
        "4953b1fb416fa874980e8442b3706d345926d5f38879134e"
        "00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"),
    "snp_with_multiple_vcpus_feature_snp_only": (
        "snp", AMDSEV, 4,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1),
        "5061fffb019493a903613d56d54b94912a1a2f9e4502385f"
        "5c194616753720a92441310ba6c4933de877c36e23046ad5"),
    "snp_with_ovmfx64_without_default": (
        "snp", OVMFX64, 1,
        dict(vcpu_type="EPYC-v4", guest_features=0x21),
        "28797ae0afaba4005a81e629acebfb59e6687949d6be4400"
        "7cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385"),
    "snp_with_ovmfx64_without_kernel_feature_snp_only": (
        "snp", OVMFX64, 1,
        dict(vcpu_type="EPYC-v4", guest_features=0x1),
        "da0296de8193586a5512078dcd719eccecbd87e2b825ad41"
        "48c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"),
    "seves": (
        "seves", AMDSEV, 1,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x1),
        "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c"),
    "seves_with_multiple_vcpus": (
        "seves", AMDSEV, 4,
        dict(vcpu_type="EPYC-v4", kernel=KERNEL, initrd=KERNEL, append="",
             guest_features=0x21),
        "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"),
    "sev": (
        "sev", AMDSEV, 1,
        dict(vcpu_type=None, kernel=KERNEL, initrd=KERNEL, append=CMDLINE,
             guest_features=0x21),
        "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"),
    "sev_with_kernel_without_initrd_and_append": (
        "sev", AMDSEV, 1,
        dict(vcpu_type=None, kernel=KERNEL, guest_features=0x21),
        "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898"),
    "sev_with_ovmfx64_without_kernel": (
        "sev", OVMFX64, 1,
        dict(vcpu_type=None, guest_features=0x21),
        "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"),
    "snp_svsm_4_vcpus": (
        "snp:svsm", SVSM_OVMF, 4,
        dict(vcpu_type="EPYC-v4", guest_features=0x21, svsm=SVSM,
             ovmf_vars_size=SVSM_VARS),
        "27d154c27b7b359c935e250ec6fee72aa0ae8c1225e3b0e1"
        "cf46a9567e938066d7d6f94bbdc4a857818bdb79277a44b2"),
    "snp_svsm_2_vcpus": (
        "snp:svsm", SVSM_OVMF, 2,
        dict(vcpu_type="EPYC-v4", guest_features=0x21, svsm=SVSM,
             ovmf_vars_size=SVSM_VARS),
        "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa"
        "57928bd963d68d3bfcb715d6019b9167ee2517b11b0d9be7"),
}


class _Base(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.empty = os.path.join(tmp, "empty")
        with open(self.empty, "wb"):
            pass
        self.tmp = tmp

    def kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        return {k: (self.empty if v is KERNEL else v) for k, v in kw.items()}

    def assertCode(self, code: str, fn: Any, *args: Any,
                   **kwargs: Any) -> errors.InvalidInput:
        exc = self.assertRaises(errors.InvalidInput, fn, *args, **kwargs)
        self.assertEqual(code, exc.code)
        self.assertTrue(exc.message)
        return exc


def _vector_test(name: str) -> Any:
    mode, firmware, vcpus, kw, expected = VECTORS[name]

    def test(self: _Base) -> None:
        got = measure.calc_launch_digest(
            mode, firmware, vcpus, **self.kwargs(kw))
        self.assertEqual(expected, got.hex())
        # The same vector through the cached calculator, as a range.
        calc = measure.ReferenceCalculator(
            firmware, mode=mode, **self.kwargs(kw))
        self.assertEqual(expected, calc.digests(range(1, vcpus + 1))[
            vcpus].hex())

    test.__name__ = f"test_{name}"
    return test


class PublishedVectorsTest(_Base):
    """Every digest vector of sev-snp-measure's test_guest.py."""

    for _name in VECTORS:
        locals()[f"test_{_name}"] = _vector_test(_name)
    del _name

    def test_snp_ovmf_hash(self) -> None:
        self.assertEqual(OVMF_HASH, measure.snp_ovmf_hash(AMDSEV).hex())

    def test_firmware_bytes_same_as_path(self) -> None:
        with open(AMDSEV, "rb") as f:
            data = f.read()
        kw = dict(mode="snp", vcpu_type="EPYC-v4", kernel=self.empty,
                  initrd=self.empty, append=CMDLINE, guest_features=0x21)
        self.assertEqual(
            VECTORS["snp_default"][4],
            measure.ReferenceCalculator(data, **kw).digest(1).hex())


class CacheMatchesEngineTest(_Base):
    """Cached digests equal sev-snp-measure's uncached calc, per count."""

    SIG = vcpu_types.CPU_SIGS["EPYC-v4"]

    def _check(self, mode: str, engine_mode: Any, firmware: str,
               kernel: bool, guest_features: int, vmm: str) -> None:
        vcpu_type = None if vmm == "gce" else "EPYC-v4"
        k = self.empty if kernel else None
        append = "console=ttyS0" if kernel else None
        calc = measure.ReferenceCalculator(
            firmware, mode=mode, vcpu_type=vcpu_type, kernel=k, initrd=k,
            append=append, guest_features=guest_features, vmm_type=vmm)
        got = calc.digests(range(1, 17))
        self.assertEqual(list(range(1, 17)), sorted(got))
        engine_vmm = {"qemu": vmm_types.VMMType.QEMU,
                      "ec2": vmm_types.VMMType.ec2,
                      "gce": vmm_types.VMMType.gce}[vmm]
        for n in range(1, 17):
            want = guest.calc_launch_digest(
                engine_mode, n, None if vcpu_type is None else self.SIG,
                firmware, k, k, append, guest_features,
                vmm_type=engine_vmm)
            self.assertEqual(want, got[n], f"{mode} {vmm} vcpus={n}")
            self.assertEqual(want, calc.digest(n))
        # All different: the VMSA pages really enter the chain.
        self.assertEqual(16, len(set(got.values())))

    def test_snp_kernel(self) -> None:
        self._check("snp", sev_mode.SevMode.SEV_SNP, AMDSEV, True, 0x21,
                    "qemu")

    def test_snp_no_kernel(self) -> None:
        self._check("snp", sev_mode.SevMode.SEV_SNP, OVMFX64, False, 0x1,
                    "qemu")

    def test_snp_ec2(self) -> None:
        self._check("snp", sev_mode.SevMode.SEV_SNP, AMDSEV, True, 0x1,
                    "ec2")

    def test_snp_gce(self) -> None:
        self._check("snp", sev_mode.SevMode.SEV_SNP, AMDSEV, False, 0x1,
                    "gce")

    def test_seves_kernel(self) -> None:
        self._check("seves", sev_mode.SevMode.SEV_ES, AMDSEV, True, 0x1,
                    "qemu")

    def test_seves_no_kernel(self) -> None:
        self._check("seves", sev_mode.SevMode.SEV_ES, OVMFX64, False, 0x1,
                    "qemu")

    def test_svsm(self) -> None:
        calc = measure.ReferenceCalculator(
            SVSM_OVMF, mode="snp:svsm", vcpu_type="EPYC-v4", svsm=SVSM,
            ovmf_vars_size=SVSM_VARS)
        got = calc.digests(range(1, 5))
        for n in range(1, 5):
            self.assertEqual(guest.calc_launch_digest(
                sev_mode.SevMode.SEV_SNP_SVSM, n, self.SIG, SVSM_OVMF,
                None, None, None, 0x1, None, vmm_types.VMMType.QEMU, False,
                SVSM, SVSM_VARS), got[n])

    def test_sparse_unsorted_range(self) -> None:
        calc = measure.ReferenceCalculator(
            AMDSEV, mode="snp", vcpu_type="EPYC-Milan")
        full = calc.digests(range(1, 65))
        got = calc.digests([64, 3, 7, 3])
        self.assertEqual({3: full[3], 7: full[7], 64: full[64]}, got)
        self.assertEqual(full[64], calc.digest(64))
        self.assertEqual(
            guest.calc_launch_digest(
                sev_mode.SevMode.SEV_SNP, 64,
                vcpu_types.CPU_SIGS["EPYC-Milan"], AMDSEV, None, None,
                None, 0x1), full[64])

    def test_sev_does_not_depend_on_vcpus(self) -> None:
        calc = measure.ReferenceCalculator(AMDSEV, mode="sev")
        got = calc.digests(range(1, 9))
        want = guest.calc_launch_digest(
            sev_mode.SevMode.SEV, 1, None, AMDSEV, None, None, None, 0x1)
        self.assertEqual({n: want for n in range(1, 9)}, got)

    def test_vcpu_sig_same_as_type(self) -> None:
        by_type = measure.ReferenceCalculator(
            AMDSEV, vcpu_type="EPYC-Genoa").digest(2)
        by_sig = measure.ReferenceCalculator(
            AMDSEV, vcpu_sig=vcpu_types.CPU_SIGS["EPYC-Genoa"]).digest(2)
        self.assertEqual(by_type, by_sig)
        self.assertNotEqual(by_type, measure.ReferenceCalculator(
            AMDSEV, vcpu_type="EPYC-v4").digest(2))


class ErrorsTest(_Base):

    def test_ovmfx64_with_kernel(self) -> None:
        for mode in ("snp", "seves", "sev"):
            self.assertCode(
                "measure_kernel_hashes_unsupported",
                measure.calc_launch_digest, mode, OVMFX64, 1, "EPYC-v4",
                kernel=self.empty, initrd=self.empty, append="")

    def test_missing_firmware(self) -> None:
        missing = os.path.join(self.tmp, "nope.fd")
        for mode in ("snp", "seves", "sev"):
            self.assertCode("measure_firmware_not_found",
                            measure.ReferenceCalculator, missing, mode=mode,
                            vcpu_type="EPYC-v4")

    def test_unreadable_firmware(self) -> None:
        self.assertCode("measure_firmware_unreadable",
                        measure.ReferenceCalculator, self.tmp,
                        vcpu_type="EPYC-v4")

    def test_empty_firmware(self) -> None:
        self.assertCode("measure_firmware_invalid",
                        measure.ReferenceCalculator, self.empty,
                        vcpu_type="EPYC-v4")
        self.assertCode("measure_firmware_invalid",
                        measure.ReferenceCalculator, b"",
                        vcpu_type="EPYC-v4")

    def test_firmware_without_sev_metadata(self) -> None:
        for mode in ("snp", "seves"):
            self.assertCode("measure_firmware_no_sev_metadata",
                            measure.ReferenceCalculator, bytes(8192),
                            mode=mode, vcpu_type="EPYC-v4")

    def test_firmware_not_page_multiple(self) -> None:
        with open(AMDSEV, "rb") as f:
            data = f.read()
        self.assertCode("measure_firmware_invalid",
                        measure.ReferenceCalculator, b"\0" + data,
                        vcpu_type="EPYC-v4")

    def test_corrupt_sev_metadata(self) -> None:
        with open(AMDSEV, "rb") as f:
            data = bytearray(f.read())
        at = data.find(b"ASEV")
        self.assertGreater(at, 0)
        data[at] ^= 0xFF
        exc = self.assertCode("measure_firmware_invalid",
                              measure.ReferenceCalculator, bytes(data),
                              vcpu_type="EPYC-v4")
        self.assertIn("signature", exc.message)

    def test_missing_kernel(self) -> None:
        missing = os.path.join(self.tmp, "vmlinuz")
        self.assertCode("measure_kernel_unreadable",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", kernel=missing)
        self.assertCode("measure_kernel_unreadable",
                        measure.ReferenceCalculator, AMDSEV, mode="sev",
                        kernel=self.empty, initrd=missing)

    def test_initrd_without_kernel(self) -> None:
        self.assertCode("measure_kernel_required",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", initrd=self.empty)
        self.assertCode("measure_kernel_required",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", append="quiet")

    def test_bad_vcpu_type(self) -> None:
        for bad in ("EPYC-v99", "", "epyc-v4"):
            self.assertCode("measure_bad_vcpu_type",
                            measure.ReferenceCalculator, AMDSEV,
                            vcpu_type=bad)
        for bad_sig in (-1, 1 << 32):
            self.assertCode("measure_bad_vcpu_type",
                            measure.ReferenceCalculator, AMDSEV,
                            vcpu_sig=bad_sig)
        self.assertCode("measure_bad_vcpu_type",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", vcpu_sig=0)

    def test_vcpu_type_required_under_qemu(self) -> None:
        for mode in ("snp", "seves"):
            self.assertCode("measure_bad_vcpu_type",
                            measure.ReferenceCalculator, AMDSEV, mode=mode)

    def test_bad_range(self) -> None:
        calc = measure.ReferenceCalculator(AMDSEV, vcpu_type="EPYC-v4")
        for bad in (range(0, 4), range(5, 1), [], ["a"], [1, None],
                    range(1, measure.MAX_VCPUS + 2), [True], "12", 7):
            self.assertCode("measure_bad_range", calc.digests, bad)

    def test_bad_vcpu_count(self) -> None:
        calc = measure.ReferenceCalculator(AMDSEV, vcpu_type="EPYC-v4")
        for bad in (0, -1, measure.MAX_VCPUS + 1, True, 1.0, "1"):
            self.assertCode("measure_bad_vcpu_count", calc.digest, bad)
        self.assertCode("measure_bad_vcpu_count",
                        measure.calc_launch_digest, "snp", AMDSEV, 0,
                        "EPYC-v4")

    def test_bad_mode_and_vmm(self) -> None:
        self.assertCode("measure_bad_mode", measure.ReferenceCalculator,
                        AMDSEV, mode="tdx", vcpu_type="EPYC-v4")
        self.assertCode("measure_bad_vmm_type", measure.ReferenceCalculator,
                        AMDSEV, vmm_type="xen", vcpu_type="EPYC-v4")

    def test_bad_guest_features(self) -> None:
        for bad in (-1, 1 << 64, "0x1"):
            self.assertCode("measure_bad_guest_features",
                            measure.ReferenceCalculator, AMDSEV,
                            vcpu_type="EPYC-v4", guest_features=bad)

    def test_bad_ovmf_hash(self) -> None:
        self.assertCode("measure_bad_ovmf_hash",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", ovmf_hash="00" * 47)
        self.assertCode("measure_bad_ovmf_hash",
                        measure.ReferenceCalculator, AMDSEV, mode="seves",
                        vcpu_type="EPYC-v4", ovmf_hash=OVMF_HASH)

    def test_svsm_arguments(self) -> None:
        self.assertCode("measure_svsm_required",
                        measure.ReferenceCalculator, SVSM_OVMF,
                        mode="snp:svsm", vcpu_type="EPYC-v4")
        self.assertCode("measure_svsm_unexpected",
                        measure.ReferenceCalculator, AMDSEV,
                        vcpu_type="EPYC-v4", svsm=SVSM)
        self.assertCode("measure_svsm_not_found",
                        measure.ReferenceCalculator, SVSM_OVMF,
                        mode="snp:svsm", vcpu_type="EPYC-v4",
                        svsm=os.path.join(self.tmp, "svsm.bin"))

    @settings(max_examples=40, deadline=None)
    @given(data=st.binary(min_size=0, max_size=300),
           mode=st.sampled_from(["snp", "seves", "sev"]))
    def test_only_our_errors_escape(self, data: bytes, mode: str) -> None:
        # Arbitrary bytes, with and without a real OVMF footer appended.
        with open(AMDSEV, "rb") as f:
            real = f.read()
        for fw in (data, data + real[len(data):]):
            try:
                d = measure.ReferenceCalculator(
                    fw, mode=mode, vcpu_type="EPYC-v4").digest(2)
            except errors.InvalidInput as exc:
                self.assertTrue(exc.code.startswith("measure_"))
            else:
                self.assertIn(len(d), (32, 48))
