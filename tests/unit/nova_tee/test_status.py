"""nova-tee-status on fixture host trees and real domain capabilities."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile

from nova_tee.cmd import status
from tests import base

DOMCAPS = base.fixture_path("libvirt-11.3.0", "tests", "domaincapsdata",
                            "qemu_10.0.0-q35.x86_64+amdsev.xml")
AMDSEV_OVMF = base.fixture_path("sev-snp-measure", "tests", "fixtures",
                                "ovmf_AmdSev_suffix.bin")


def host_tree(vendor: str, flags: str, params: dict[str, str],
              ovmf: bool = True) -> str:
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "proc"))
    with open(os.path.join(root, "proc", "cpuinfo"), "w") as f:
        f.write(f"processor\t: 0\nvendor_id\t: {vendor}\n"
                f"flags\t\t: fpu vme {flags}\n\n")
    for path, value in params.items():
        full = os.path.join(root, "sys", "module", path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(value + "\n")
    if ovmf:
        os.makedirs(os.path.join(root, "usr", "share", "OVMF"))
        shutil.copy(AMDSEV_OVMF, os.path.join(root, "usr", "share", "OVMF",
                                              "OVMF.amdsev.fd"))
    return root


class StatusTest(base.TestCase):

    def _run(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = status.main(list(args))
        return code, out.getvalue()

    def test_amd_host_with_blockers(self) -> None:
        root = host_tree("AuthenticAMD", "sev sev_es sev_snp", {
            "kvm_amd/parameters/sev": "Y",
            "kvm_amd/parameters/sev_es": "N",
            "kvm_amd/parameters/sev_snp": "1"})
        code, out = self._run("--root", root, "--domcaps", DOMCAPS,
                              "--json")
        self.assertEqual(status.EXIT_BLOCKED, code)
        report = json.loads(out)
        self.assertEqual({"sev": True, "sev_es": False, "sev_snp": True},
                         report["kvm_amd"])
        self.assertEqual(["sev", "sev-snp"], report["libvirt"]["sectypes"])
        self.assertEqual(59, report["libvirt"]["max_guests"])
        self.assertTrue(report["ovmf"][0]["sev_metadata"])
        models = {m["model"]: m for m in report["models"]}
        self.assertIn("kvm_amd.sev_es=1", " ".join(
            models["amd-sev-es"]["blockers"]))
        # No /dev/sev in the tree: every AMD model says so.
        for model in ("amd-sev", "amd-sev-snp"):
            self.assertIn("/dev/sev", " ".join(models[model]["blockers"]))
        self.assertFalse(models["intel-tdx"]["cpu"])

    def test_text_output_and_missing_ovmf(self) -> None:
        root = host_tree("AuthenticAMD", "sev", {
            "kvm_amd/parameters/sev": "Y"}, ovmf=False)
        code, out = self._run("--root", root, "--domcaps", DOMCAPS)
        self.assertEqual(status.EXIT_BLOCKED, code)
        self.assertIn("amd-sev: blocked", out)
        self.assertIn("no OVMF build with SEV metadata", out)
        self.assertIn("amd-sev-snp: not offered by the CPU", out)

    def test_no_tee_cpu_and_bad_arguments(self) -> None:
        root = host_tree("GenuineIntel", "vmx", {}, ovmf=False)
        self.assertEqual(status.EXIT_NO_TEE,
                         self._run("--root", root, "--domcaps", DOMCAPS)[0])
        self.assertEqual(status.EXIT_UNUSABLE,
                         self._run("--root", root, "--domcaps",
                                   "/nonexistent")[0])

    def test_tdx_host(self) -> None:
        root = host_tree("GenuineIntel", "vmx tdx_host_platform",
                         {"kvm_intel/parameters/tdx": "Y"}, ovmf=False)
        tdx_caps = os.path.join(root, "caps.xml")
        with open(tdx_caps, "w") as f:
            f.write("<domainCapabilities><features><tdx supported='yes'/>"
                    "</features></domainCapabilities>")
        code, out = self._run("--root", root, "--domcaps", tdx_caps)
        self.assertEqual(status.EXIT_OK, code, out)
        self.assertIn("intel-tdx: usable", out)
