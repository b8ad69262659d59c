"""The installed ``openstack-tee verify`` on every real fixture case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from tests import base
from tests.functional.cli import fixture_cases


class VerifyCommandTest(base.TestCase):

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [base.installed_command("openstack-tee"), *args],
            capture_output=True, text=True, check=False)

    def test_fixture_cases(self) -> None:
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        for case in fixture_cases.CASES:
            with self.subTest(case=case.name):
                args = ["verify", "--json", "--evidence",
                        base.fixture_path(case.evidence)]
                for arg in case.args:
                    path = base.fixture_path(arg)
                    args.append(path if os.path.exists(path) else arg)
                if case.policy is not None:
                    policy = os.path.join(tmp, "policy.json")
                    with open(policy, "w") as f:
                        json.dump(case.policy, f)
                    args += ["--policy", policy]
                proc = self._run(*args)
                self.assertEqual(case.expected_exit, proc.returncode,
                                 proc.stdout + proc.stderr)
                out = json.loads(proc.stdout)
                self.assertEqual(sorted(case.expected_codes),
                                 sorted(out["codes"]))
                self.assertEqual(case.expected_exit == 0, out["verified"])

    def test_claims_are_lowercase_hex(self) -> None:
        proc = self._run(
            "verify", "--json", "--evidence",
            base.fixture_path("virtee-sev", "tests", "certs_data",
                              "report_milan.hex"),
            "--vcek", base.fixture_path("virtee-sev", "tests", "certs_data",
                                        "vcek_milan.der"))
        self.assertEqual(0, proc.returncode, proc.stderr)
        claims = json.loads(proc.stdout)["claims"]
        self.assertEqual(fixture_cases.MILAN_MEASUREMENT,
                         claims["measurement"])
        self.assertEqual(claims["chip_id"], claims["chip_id"].lower())

    def test_unusable_arguments_exit_2(self) -> None:
        report = base.fixture_path("go-sev-guest", "verify", "testdata",
                                   "attestation.bin")
        for args, code in (
                (("--evidence", report), "endorsement_missing"),
                (("--evidence", "/nonexistent"), "file_unreadable"),
                (("--evidence", report, "--vcek", report, "--at", "soon"),
                 "bad_time")):
            with self.subTest(code=code):
                proc = self._run("verify", "--json", *args)
                self.assertEqual(2, proc.returncode, proc.stdout)
                self.assertEqual([code], json.loads(proc.stdout)["codes"])
        proc = self._run("verify")
        self.assertEqual(2, proc.returncode)
        self.assertIn("--evidence", proc.stderr)
