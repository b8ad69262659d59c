"""Third-party evidence verifiers and endorsement sources, as plugins.

The test package tests/plugins/tee_test_verifier (installed into the
functional env by tox.ini, registered through entry points only) brings a
made-up format, ``test-hmac-evidence``, a plugin that fails to import,
``test-broken-evidence``, and an endorsement source, ``test-directory``.
One barbican-api with them enabled serves the class; the default server
of test_release refuses the made-up format (ReleaseTest).
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Any

import requests
import tee_test_verifier

from barbican_tee.client import guest
from openstack_tee_demo.sp_model import snp as sp_model
from tests.functional.barbican import test_release

MEASUREMENT = test_release.MEASUREMENT


def hmac_evidence(key: bytes, report_data: bytes,
                  measurement: bytes = MEASUREMENT,
                  host_data: bytes = b"\x00" * 32) -> dict[str, Any]:
    claims = {"measurement": measurement.hex(),
              "report_data": report_data.hex(),
              "host_data": host_data.hex()}
    return {"format": "test-hmac-evidence", "claims": claims,
            "mac": tee_test_verifier.mac(key, claims)}


class VerifierPluginTest(test_release._ServerTestBase):

    @classmethod
    def setUpClass(cls) -> None:
        cls.plugin_dir = tempfile.mkdtemp()
        cls.hmac_key = os.urandom(32)
        key_file = os.path.join(cls.plugin_dir, "hmac.key")
        with open(key_file, "wb") as f:
            f.write(cls.hmac_key)
        cls.vceks = os.path.join(cls.plugin_dir, "vceks")
        os.mkdir(cls.vceks)
        cls.EXTRA_CONF = {
            "tee_attestation": {
                "evidence_formats": "amd-sev-snp-report,intel-tdx-quote,"
                                    "test-hmac-evidence,"
                                    "test-faulty-evidence,"
                                    "test-broken-evidence",
                "endorsement_sources": "test-directory",
                # The tests change what the directory holds for one chip
                # id: no cached answers (BoundedSourceTest has them).
                "endorsement_cache_ttl": "0"},
            "tee_test_verifier": {"key_file": key_file,
                                  "endorsement_dir": cls.vceks}}
        # (Merged into the base's barbican.conf: its trust roots stay.)
        super().setUpClass()

    def _release(self, secret_id: str, make: Any
                 ) -> tuple[requests.Response, Any]:
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        key = guest.make_key()
        evidence = make(guest.report_data(nonce, key))
        resp = requests.post(f"{self.url}/v1/tee/release", timeout=30,
                             json={"secret_id": secret_id, "nonce": nonce,
                                   "evidence": evidence,
                                   "public_key": guest.public_jwk(key)})
        return resp, key

    def _code(self, resp: requests.Response, status: int, code: str
              ) -> None:
        self.assertEqual(status, resp.status_code, resp.text)
        self.assertEqual(code, resp.json()["error"]["code"], resp.text)
        self.assertNotIn("jwe", resp.json())

    def test_third_party_format_is_used(self) -> None:
        secret_id, key = self._bound_secret()
        resp, guest_key = self._release(
            secret_id, lambda rd: hmac_evidence(self.hmac_key, rd))
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        self.assertIn(f"tee.release.granted secret={secret_id}",
                      self._log())

    def test_third_party_format_really_verifies(self) -> None:
        secret_id, _ = self._bound_secret()
        # Another key's MAC: the plugin's own code.
        resp, _ = self._release(
            secret_id, lambda rd: hmac_evidence(os.urandom(32), rd))
        self._code(resp, 403, "test_hmac_mismatch")
        # A good MAC over a measurement the policy does not allow: the
        # plugin evaluates the owner's policy.
        resp, _ = self._release(secret_id, lambda rd: hmac_evidence(
            self.hmac_key, rd, measurement=b"\x01" * 48))
        self._code(resp, 403, "policy_measurement")
        # A good MAC for another challenge: the release path still checks
        # the report_data the plugin returns.
        resp, _ = self._release(secret_id, lambda rd: hmac_evidence(
            self.hmac_key, b"\x02" * 64))
        self._code(resp, 403, "report_data_mismatch")
        resp, _ = self._release(secret_id, lambda rd: {
            "format": "test-hmac-evidence"})
        self._code(resp, 400, "evidence_invalid")
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=test_hmac_mismatch", self._log())

    def test_the_operators_floor_applies_to_a_plugins_platform(
            self) -> None:
        secret_id, _ = self._bound_secret()

        def floor(snp: int) -> None:
            resp = requests.put(
                f"{self.url}/v1/tee/floors/milan", timeout=30,
                headers=self._headers("operator", "admin"),
                json={"bootloader": 0, "tee": 0, "snp": snp,
                      "microcode": 0})
            self.assertEqual(200, resp.status_code, resp.text)

        self.addCleanup(floor, 0)
        # The plugin's platform (Milan, SNP SVN 24) below a raised floor.
        floor(tee_test_verifier.PLATFORM_TCB["snp"] + 1)
        resp, _ = self._release(
            secret_id, lambda rd: hmac_evidence(self.hmac_key, rd))
        self._code(resp, 403, "tcb_below_floor")
        # Control: at its level, released.
        floor(tee_test_verifier.PLATFORM_TCB["snp"])
        resp, _ = self._release(
            secret_id, lambda rd: hmac_evidence(self.hmac_key, rd))
        self.assertEqual(200, resp.status_code, resp.text)

    def test_plugin_that_fails_to_load_is_refused_and_logged_once(
            self) -> None:
        secret_id, _ = self._bound_secret()
        needle = "test-broken-evidence in openstack_tee.evidence"
        before = self._log().count(needle)
        self.assertGreaterEqual(before, 1, "the load failure is not logged")
        for _ in range(3):
            resp, _ = self._release(secret_id, lambda rd: dict(
                hmac_evidence(self.hmac_key, rd),
                format="test-broken-evidence"))
            self._code(resp, 400, "evidence_format")
        self.assertNotIn("test-broken-evidence", resp.json()["error"].get(
            "message", resp.text).split("must be")[-1])
        self.assertEqual(before, self._log().count(needle))
        resp, _ = self._release(secret_id, lambda rd: dict(
            hmac_evidence(self.hmac_key, rd), format="no-such-format"))
        self._code(resp, 400, "evidence_format")
        self.assertIn("test-hmac-evidence", resp.text)

    def test_a_verifier_that_raises_refuses_and_audits(self) -> None:
        secret_id, _ = self._bound_secret()
        resp, _ = self._release(secret_id, lambda rd: dict(
            hmac_evidence(self.hmac_key, rd),
            format="test-faulty-evidence"))
        self._code(resp, 403, "evidence_verifier_error")
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=evidence_verifier_error", self._log())

    def _snp_without_vcek(self, sp: sp_model.SecureProcessor
                          ) -> Any:
        def make(report_data: bytes) -> dict[str, Any]:
            raw = sp.report(report_data=report_data,
                            measurement=MEASUREMENT)
            return {"format": "amd-sev-snp-report",
                    "report": base64.b64encode(raw).decode(),
                    "cert_chain": sp.bundle_pem().decode()}
        return make

    def _publish_vcek(self, chip_id: bytes, der: bytes) -> None:
        pem = base64.encodebytes(der).decode()
        path = os.path.join(self.vceks, chip_id.hex() + ".pem")
        with open(path, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n" + pem
                    + "-----END CERTIFICATE-----\n")
        self.addCleanup(os.unlink, path)

    def test_vcek_from_an_endorsement_source(self) -> None:
        secret_id, key = self._bound_secret()
        # Not in the source: the guest must send it, as before.
        resp, _ = self._release(secret_id, self._snp_without_vcek(self.sp))
        self._code(resp, 400, "endorsement_not_found")
        self._publish_vcek(self.sp.chip_id, self.sp.vcek_der)
        resp, guest_key = self._release(secret_id,
                                        self._snp_without_vcek(self.sp))
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def test_a_source_adds_no_trust(self) -> None:
        # A source that serves a VCEK from an untrusted root for the
        # chip: verified like one the guest sent, so refused.
        foreign = sp_model.SecureProcessor(label="foreign-root",
                                           chip_id=self.sp.chip_id)
        secret_id, _ = self._bound_secret()
        self._publish_vcek(foreign.chip_id, foreign.vcek_der)
        resp, _ = self._release(secret_id, self._snp_without_vcek(foreign))
        self._code(resp, 403, "snp_untrusted_root")
        # And the model's own report with the foreign VCEK.
        resp, _ = self._release(secret_id, self._snp_without_vcek(self.sp))
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertNotIn("jwe", resp.json())


class BoundedSourceTest(test_release._ServerTestBase):
    """The per-process bound around endorsement sources (one worker).

    Reports with forged chip ids reach the source from the token-less
    release route before their signature is checked: the calls they make
    are bounded; a genuine guest's VCEK, once found, is served from the
    cache even while the bound refuses new calls.
    """

    WORKERS = 1

    @classmethod
    def setUpClass(cls) -> None:
        cls.plugin_dir = tempfile.mkdtemp()
        cls.vceks = os.path.join(cls.plugin_dir, "vceks")
        os.mkdir(cls.vceks)
        cls.EXTRA_CONF = {
            "tee_attestation": {
                "endorsement_sources": "test-directory",
                "endorsement_source_calls_per_minute": "3"},
            "tee_test_verifier": {"endorsement_dir": cls.vceks}}
        super().setUpClass()

    _release = VerifierPluginTest._release
    _code = VerifierPluginTest._code
    _snp_without_vcek = VerifierPluginTest._snp_without_vcek
    _publish_vcek = VerifierPluginTest._publish_vcek

    def test_forged_chip_ids_are_bounded_and_the_cache_serves(self) -> None:
        secret_id, key = self._bound_secret()
        self._publish_vcek(self.sp.chip_id, self.sp.vcek_der)
        resp, guest_key = self._release(secret_id,
                                        self._snp_without_vcek(self.sp))
        self.assertEqual(200, resp.status_code, resp.text)
        genuine = self._snp_without_vcek(self.sp)

        def forged(report_data: bytes) -> dict[str, Any]:
            evidence = genuine(report_data)
            raw = base64.b64decode(evidence["report"])
            at = raw.index(self.sp.chip_id)
            raw = raw[:at] + os.urandom(64) + raw[at + 64:]
            return dict(evidence, report=base64.b64encode(raw).decode())

        codes = []
        for _ in range(4):
            resp, _ = self._release(secret_id, forged)
            self.assertNotIn("jwe", resp.json())
            codes.append((resp.status_code, resp.json()["error"]["code"]))
        # Each unknown chip id costs a call until the minute's budget (3,
        # one spent on the genuine guest) is gone; then refused, not asked.
        self.assertEqual([(400, "endorsement_not_found")] * 2
                         + [(503, "endorsement_source_busy")] * 2, codes)
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=endorsement_source_busy", self._log())
        # The genuine guest's VCEK is in the cache: still released.
        resp, guest_key = self._release(secret_id,
                                        self._snp_without_vcek(self.sp))
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
