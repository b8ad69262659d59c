"""``openstack-tee measure`` reproduces sev-snp-measure's published vectors."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tests import base
from tests.unit.barbican_tee.attestation import test_measure


class MeasureCommandTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        self.empty = os.path.join(tmp, "empty")
        open(self.empty, "wb").close()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [base.installed_command("openstack-tee"), "measure", *args],
            capture_output=True, text=True, check=False)

    def test_published_vectors(self) -> None:
        ran = 0
        for name, (mode, firmware, vcpus, kw, expected) in (
                test_measure.VECTORS.items()):
            if mode not in ("snp", "seves", "sev") or kw.get("svsm"):
                continue
            args = ["--mode", mode, "--ovmf", firmware,
                    "--vcpus", str(vcpus)]
            if kw.get("vcpu_type"):
                args += ["--vcpu-type", kw["vcpu_type"]]
            for key in ("kernel", "initrd"):
                if kw.get(key) is test_measure.KERNEL:
                    args += [f"--{key}", self.empty]
            if kw.get("append") is not None and kw.get("kernel"):
                args += ["--append", kw["append"]]
            if "guest_features" in kw:
                args += ["--guest-features", hex(kw["guest_features"])]
            if kw.get("vmm_type"):
                args += ["--vmm-type", kw["vmm_type"]]
            if kw.get("ovmf_hash"):
                args += ["--snp-ovmf-hash", kw["ovmf_hash"]]
            with self.subTest(vector=name):
                proc = self._run(*args)
                self.assertEqual(0, proc.returncode, proc.stderr)
                self.assertEqual(expected, proc.stdout.strip())
                ran += 1
        self.assertGreaterEqual(ran, 14)

    def test_range_prints_one_line_per_count(self) -> None:
        args = ["--mode", "snp", "--ovmf", test_measure.AMDSEV,
                "--vcpu-type", "EPYC-v4", "--kernel", self.empty,
                "--initrd", self.empty, "--append",
                test_measure.CMDLINE, "--guest-features", "0x21"]
        lines = self._run(*args, "--vcpus", "1-4").stdout.split()
        self.assertEqual(4, len(lines))
        for count, line in enumerate(lines, 1):
            single = self._run(*args, "--vcpus", str(count)).stdout.strip()
            self.assertEqual(single, line)
            self.assertEqual(line.lower(), line)

    def test_bad_input_exits_2(self) -> None:
        cases = [
            (["--mode", "snp", "--ovmf", test_measure.OVMFX64, "--vcpus",
              "1", "--vcpu-type", "EPYC-v4", "--kernel", self.empty],
             "measure_kernel_hashes_unsupported"),
            (["--mode", "snp", "--ovmf", "/nonexistent", "--vcpus", "1",
              "--vcpu-type", "EPYC-v4"], "measure_firmware_not_found"),
            (["--mode", "snp", "--ovmf", test_measure.AMDSEV, "--vcpus",
              "4-2", "--vcpu-type", "EPYC-v4"], "measure_bad_range"),
            (["--mode", "snp", "--ovmf", test_measure.AMDSEV, "--vcpus",
              "1", "--vcpu-type", "Pentium-II"], "measure_bad_vcpu_type"),
        ]
        for args, code in cases:
            with self.subTest(code=code):
                proc = self._run(*args)
                self.assertEqual(2, proc.returncode)
                self.assertIn(code, proc.stderr)
