"""``openstack tee policy ...`` and ``openstack tee secret bind|unbind``.

The real ``openstack`` command (python-openstackclient with our plugin
loaded through its entry point) against a real barbican-api. There is no
Keystone here: ``--os-auth-type none`` with ``--os-tee-endpoint`` and
``--os-tee-noauth-project``, the plugin's development mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from barbican_tee.attestation import measure
from openstack_tee_demo import demo
from openstack_tee_demo import flows
from openstack_tee_demo.sp_model import snp as sp_snp
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import osc_cli

PROJECT = "osc-project"


class OpenStackCLITest(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sp = sp_snp.SecureProcessor(label="osc")
        cls.tmp = tempfile.mkdtemp()
        root = os.path.join(cls.tmp, "ark.pem")
        with open(root, "wb") as f:
            f.write(cls.sp.bundle_pem())
        cls.barbican = fixture.BarbicanServer(workers=1, trust_root=root)
        cls.barbican.setUp()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.barbican.cleanUp()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def run_cli(self, *args: str, project: str = PROJECT,
                stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        return osc_cli.openstack(*args, stdin=stdin, env={
            "OS_AUTH_TYPE": "none", "OS_TEE_ENDPOINT": self.barbican.url,
            "OS_TEE_NOAUTH_PROJECT": project})

    def json_cli(self, *args: str, project: str = PROJECT,
                 stdin: str | None = None) -> Any:
        proc = self.run_cli(*args, "-f", "json", project=project,
                            stdin=stdin)
        self.assertEqual(0, proc.returncode, proc.stderr)
        return json.loads(proc.stdout)

    def failing(self, *args: str) -> str:
        proc = self.run_cli(*args)
        self.assertEqual(1, proc.returncode, proc.stdout)
        return proc.stderr

    def test_create_from_firmware_show_list_delete(self) -> None:
        created = self.json_cli(
            "tee", "policy", "create", "web-tier", "--tee", "amd-sev-snp",
            "--from-firmware", demo.OVMF, "--vcpus", "1-2",
            "--vcpu-type", "EPYC-v4", "--kernel", os.devnull,
            "--initrd", os.devnull, "--append", "console=ttyS0",
            "--min-tcb", "snp=22", "--min-tcb", "microcode=213",
            "--guest-policy", "debug=false", "--signer", "vcek")
        calc = measure.ReferenceCalculator(
            demo.OVMF, mode="snp", vcpu_type="EPYC-v4", kernel=os.devnull,
            initrd=os.devnull, append="console=ttyS0")
        expected = [calc.digest(1).hex(), calc.digest(2).hex()]
        self.assertEqual(expected, created["measurements"].split("\n"))
        self.assertIn("snp=22", created["min_tcb"])
        self.assertIn("microcode=213", created["min_tcb"])
        # The strict defaults show as what they are.
        self.assertEqual("debug=False, migrate_ma=False, "
                         "sev_key_sharing=False", created["guest_policy"])
        policy_id = created["id"]
        # What the service stored, through the REST contract.
        stored = flows.requests.get(
            f"{self.barbican.url}/v1/tee/policies/{policy_id}",
            headers=flows.headers(PROJECT), timeout=30).json()
        self.assertEqual(expected, stored["measurements"])
        self.assertEqual(22, stored["min_tcb"]["snp"])
        self.assertEqual(["vcek"], stored["signers"])

        shown = self.json_cli("tee", "policy", "show", policy_id)
        self.assertEqual("web-tier", shown["name"])
        self.assertEqual(created["measurements"], shown["measurements"])
        listed = self.json_cli("tee", "policy", "list")
        self.assertIn({"ID": policy_id, "Name": "web-tier",
                       "TEE": "amd-sev-snp", "Measurements": 2}, listed)
        # Another project sees none of it.
        self.assertEqual([], self.json_cli("tee", "policy", "list",
                                           project="someone-else"))

        proc = self.run_cli("tee", "policy", "delete", policy_id)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertNotIn(policy_id, [p["ID"] for p in self.json_cli(
            "tee", "policy", "list")])
        err = self.failing("tee", "policy", "show", policy_id)
        self.assertIn("not_found", err)

    def test_measurements_given_and_tdx(self) -> None:
        mrtd = "ab" * 48
        created = self.json_cli(
            "tee", "policy", "create", "td", "--tee", "intel-tdx",
            "--measurement", mrtd, "--tcb-status", "UpToDate",
            "--tcb-status", "SWHardeningNeeded", "--mr-owner", "cd" * 48)
        self.assertEqual(mrtd, created["measurements"])
        self.assertEqual("UpToDate\nSWHardeningNeeded",
                         created["tcb_statuses"])
        self.assertEqual("cd" * 48, created["mr_owner"])

    def test_bad_input_is_refused_before_anything_is_stored(self) -> None:
        before = self.json_cli("tee", "policy", "list")
        for args, code in (
                (("--tee", "amd-sev-snp", "--measurement", "abcd"),
                 "policy_measurements"),
                (("--tee", "intel-tdx", "--from-firmware", demo.OVMF,
                  "--vcpus", "1"), "give --measurement (MRTD)"),
                (("--tee", "amd-sev-snp", "--from-firmware", demo.OVMF,
                  "--vcpus", "3-1", "--vcpu-type", "EPYC-v4"),
                 "measure_bad_range"),
                (("--tee", "amd-sev-snp", "--from-firmware", demo.OVMF,
                  "--vcpus", "1"), "measure_bad_vcpu_type"),
                (("--tee", "amd-sev-snp", "--vcpus", "1"),
                 "go with --from-firmware"),
                (("--tee", "amd-sev-snp", "--min-tcb", "turbo=9"),
                 "--min-tcb takes KEY=VALUE"),
                (("--tee", "amd-sev-snp", "--guest-policy", "debug=maybe"),
                 "is not true or false")):
            with self.subTest(code=code):
                err = self.failing("tee", "policy", "create", "bad", *args)
                self.assertIn(code, err)
        self.assertEqual(before, self.json_cli("tee", "policy", "list"))

    def test_floor_set_and_show(self) -> None:
        shown = self.json_cli("tee", "floor", "set", "genoa",
                              "--bootloader", "10", "--tee", "0",
                              "--snp", "24", "--microcode", "84")
        # The config's genoa default, with snp raised through the API.
        self.assertEqual("bootloader=10, microcode=84, snp=24, tee=0",
                         shown["effective"])
        self.assertEqual("openstack-cli", shown["updated_by"])
        tdx = self.json_cli("tee", "floor", "set", "tdx", "--tcb-status",
                            "UpToDate", "--tcb-status",
                            "SWHardeningNeeded", "--min-tee-tcb-svn",
                            "02" * 16)
        self.assertEqual("min_tee_tcb_svn=" + "02" * 16 + ", "
                         "tcb_statuses=UpToDate,SWHardeningNeeded",
                         tdx["effective"])
        rows = self.json_cli("tee", "floor", "show")
        self.assertEqual(["milan", "genoa", "turin", "tdx"],
                         [r["product"] for r in rows])
        self.assertEqual(shown["effective"], rows[1]["effective"])
        self.assertEqual(tdx["effective"], rows[3]["effective"])
        self.assertIn("milan needs --tee, --microcode", self.failing(
            "tee", "floor", "set", "milan", "--bootloader", "1",
            "--snp", "2"))

    def test_endorsement_import_and_list(self) -> None:
        # AMD's own files, as KDS serves them: a Milan VCEK (DER) and
        # cert_chain (ASK, ARK in PEM), recognised by their content.
        vcek = base.fixture_path("virtee-sev", "tests", "certs_data",
                                 "vcek_milan.der")
        chain = base.fixture_path("virtee-sev", "tests", "certs_data",
                                  "cert_chain_milan")
        out = os.path.join(self.tmp, "bundle.json")
        rows = self.json_cli("tee", "endorsement", "import", vcek, chain,
                             "--output", out)
        self.assertEqual(["vcek", "ask", "ark"], [r["kind"] for r in rows])
        rows = self.json_cli("tee", "endorsement", "import", out)
        # Verified CAs first, then the VCEK through them.
        self.assertEqual([("ask", "milan"), ("ark", "milan"),
                          ("vcek", "milan")],
                         [(r["kind"], r["product"]) for r in rows])
        listed = self.json_cli("tee", "endorsement", "list", "--kind",
                               "vcek", "--subject", "d49554ec717f4e5b")
        self.assertEqual([rows[2]["id"]], [r["id"] for r in listed])
        self.assertFalse(listed[0]["expired"])
        self.assertIn("endorsement_untrusted", self.failing(
            "tee", "endorsement", "import", base.fixture_path(
                "trustee", "deps", "verifier", "test_data", "snp",
                "test-vcek-invalid-new.der")))

    def test_delete_reports_each_failure(self) -> None:
        policy_id = self.json_cli("tee", "policy", "create", "p", "--tee",
                                  "amd-sev", "--measurement",
                                  "00" * 32)["id"]
        proc = self.run_cli("tee", "policy", "delete", "no-such-policy",
                            policy_id)
        self.assertEqual(1, proc.returncode)
        self.assertIn("cannot delete policy no-such-policy", proc.stderr)
        self.assertIn("1 of 2 policies could not be deleted", proc.stderr)
        # The other one was deleted all the same.
        self.assertNotIn(policy_id, [p["ID"] for p in self.json_cli(
            "tee", "policy", "list")])

    def test_secret_bind_changes_what_is_released(self) -> None:
        project = "osc-bind"
        old, new = b"\x11" * 48, b"\x22" * 48
        secret_id, key = flows.owner_secret(
            self.barbican.url, project,
            {"tee": "amd-sev-snp", "measurements": [old.hex()]})
        old_guest = flows.SNPGuest(self.sp, old, b"\x00" * 32)
        new_guest = flows.SNPGuest(self.sp, new, b"\x00" * 32)
        resp, _ = old_guest.release(self.barbican.url, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        policy_id = self.json_cli("tee", "policy", "create", "next",
                                  "--tee", "amd-sev-snp", "--measurement",
                                  new.hex(), project=project)["id"]
        href = f"{self.barbican.url}/v1/secrets/{secret_id}"
        bound = self.json_cli("tee", "secret", "bind", href, "--policy",
                              policy_id, project=project)
        self.assertEqual(secret_id, bound["secret_id"])
        self.assertEqual(policy_id, bound["policy_id"])
        # The release now follows the new policy.
        resp, _ = old_guest.release(self.barbican.url, secret_id)
        self.assertEqual(403, resp.status_code)
        self.assertEqual("policy_measurement", flows.error_code(resp))
        resp, _ = new_guest.release(self.barbican.url, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, new_guest.open(resp))
        # Someone else's policy or a policy that does not exist: refused,
        # and the binding stays as it was.
        other = self.json_cli("tee", "policy", "create", "theirs", "--tee",
                              "amd-sev-snp", "--measurement", old.hex(),
                              project="osc-other")["id"]
        for policy in (other, "00000000-0000-0000-0000-000000000000"):
            proc = self.run_cli("tee", "secret", "bind", secret_id,
                                "--policy", policy, project=project)
            self.assertEqual(1, proc.returncode, proc.stdout)
            self.assertIn(f"cannot bind secret {secret_id}", proc.stderr)
        resp, _ = old_guest.release(self.barbican.url, secret_id)
        self.assertEqual("policy_measurement", flows.error_code(resp))
        # Unbound, it goes to no one, until bound again.
        proc = self.run_cli("tee", "secret", "unbind", href,
                            project=project)
        self.assertEqual(0, proc.returncode, proc.stderr)
        resp, _ = new_guest.release(self.barbican.url, secret_id)
        self.assertEqual("secret_no_policy", flows.error_code(resp))
        proc = self.run_cli("tee", "secret", "unbind", secret_id,
                            project="osc-other")
        self.assertEqual(1, proc.returncode, proc.stdout)
        self.assertIn(f"cannot unbind secret {secret_id}", proc.stderr)

    def test_a_secret_outside_the_sealed_store_cannot_be_bound(self) -> None:
        project = "osc-plain"
        plain = flows.requests.post(
            f"{self.barbican.url}/v1/secrets", timeout=30,
            headers=flows.headers(project),
            json={"name": "plain", "payload": "not sealed",
                  "payload_content_type": "text/plain"})
        plain.raise_for_status()
        policy_id = self.json_cli("tee", "policy", "create", "p", "--tee",
                                  "amd-sev-snp", "--measurement", "33" * 48,
                                  project=project)["id"]
        proc = self.run_cli("tee", "secret", "bind",
                            plain.json()["secret_ref"], "--policy",
                            policy_id, project=project)
        self.assertEqual(1, proc.returncode, proc.stdout)
        self.assertIn("secret_not_sealed", proc.stderr)

    def test_secret_create_seals_without_the_preferred_store(self) -> None:
        project = "osc-create"
        url = self.barbican.url
        measurement = b"\x44" * 48
        snp_guest = flows.SNPGuest(self.sp, measurement, b"\x00" * 32)
        policy_id = self.json_cli("tee", "policy", "create", "p", "--tee",
                                  "amd-sev-snp", "--measurement",
                                  measurement.hex(), project=project)["id"]
        # A binary key from a file.
        key = os.urandom(32)
        path = os.path.join(self.tmp, "disk.key")
        with open(path, "wb") as f:
            f.write(key)
        created = self.json_cli("tee", "secret", "create", "--name",
                                "disk-key", "--secret-type", "symmetric",
                                "--payload-file", path, "--policy",
                                policy_id, project=project)
        secret_id = created["secret_id"]
        self.assertEqual(f"{url}/v1/secrets/{secret_id}",
                         created["secret_ref"])
        self.assertEqual(("disk-key", "stored", "symmetric", policy_id),
                         (created["name"], created["origin"],
                          created["secret_type"], created["policy_id"]))
        resp, _ = snp_guest.release(url, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, snp_guest.open(resp))
        # Its payload is refused; the project prefers no store.
        payload = flows.requests.get(
            f"{url}/v1/secrets/{secret_id}/payload", timeout=30,
            headers=dict(flows.headers(project),
                         Accept="application/octet-stream"))
        self.assertEqual(403, payload.status_code, payload.text)
        self.assertEqual(404, flows.requests.get(
            f"{url}/v1/secret-stores/preferred", timeout=30,
            headers=flows.headers(project)).status_code)
        # A passphrase from standard input, as text.
        shown = self.json_cli("tee", "secret", "create", "--payload-file",
                              "-", "--payload-content-type", "text/plain",
                              "--secret-type", "passphrase",
                              project=project, stdin="correct horse")
        self.assertEqual("passphrase", shown["secret_type"])
        self.assertIsNone(shown["policy_id"])
        # A key generated by Barbican, bound at once.
        generated = self.json_cli("tee", "secret", "create", "--generate",
                                  "--bit-length", "128", "--mode", "xts",
                                  "--policy", policy_id, project=project)
        self.assertEqual(("generated", "aes", 128, "xts"),
                         (generated["origin"], generated["algorithm"],
                          generated["bit_length"], generated["mode"]))
        resp, _ = snp_guest.release(url, generated["secret_id"])
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(16, len(snp_guest.open(resp)))
        # The service's refusals, with their codes.
        proc = self.run_cli("tee", "secret", "create", "--generate",
                            "--bit-length", "100", project=project)
        self.assertEqual(1, proc.returncode, proc.stdout)
        self.assertIn("bit_length_invalid", proc.stderr)
        # (Options the parser refuses: tests/unit/barbican_tee/osc.)

    def test_openstack_secret_get_shows_a_created_sealed_secret(
            self) -> None:
        project = "osc-get"
        created = self.json_cli("tee", "secret", "create", "--generate",
                                "--name", "vol", project=project)
        cli = osc_cli.secret_get(self, self.barbican.url, project,
                                 created["secret_id"])

        proc = cli("-f", "json")
        self.assertEqual(0, proc.returncode, proc.stderr)
        meta = json.loads(proc.stdout)
        self.assertEqual(("vol", "ACTIVE", "aes", 256, "symmetric"),
                         (meta["Name"], meta["Status"], meta["Algorithm"],
                          meta["Bit length"], meta["Secret type"]))
        proc = cli("--payload")
        self.assertEqual(1, proc.returncode, proc.stdout)
        self.assertIn("Forbidden: This secret is sealed", proc.stderr)
