"""Attested release through a real barbican-api (gunicorn, 2 workers).

The owner stores a key in the sealed store through Barbican's own API,
writes a policy and binds the key to it; a guest, whose secure processor is
the software model, asks for a challenge and presents its report. One
server serves the whole class; every refusal is checked for its own code,
an audit record, and nothing released.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any
import uuid

import fixtures
from jwcrypto import jwk
import requests
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.client import guest
from barbican_tee.client import rest
from barbican_tee.cmd import tee_guest
from barbican_tee import server
from openstack_tee_demo.sp_model import configfs
from openstack_tee_demo.sp_model import sev as sp_sev
from openstack_tee_demo.sp_model import snp as sp_model
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import stores

MEASUREMENT = hashlib.sha384(b"openstack-tee test guest").digest()
OWNER = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
OTHER = "aaaabbbbccccddddeeeeffff00001111"


class _ServerTestBase(base.TestCase):
    """One barbican-api with the model's roots trusted, per class."""

    # More barbican.conf sections for a subclass's server, and its workers.
    EXTRA_CONF: dict[str, dict[str, str]] = {}
    WORKERS = 2
    # The database (default: a fresh one of TEE_FUNCTIONAL_DB's kind).
    DB_URL: str | None = None
    # The path the server is mounted under (gunicorn's SCRIPT_NAME).
    PREFIX = ""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sp = sp_model.SecureProcessor(label="barbican-e2e")
        cls.tmp = tempfile.mkdtemp()
        root = os.path.join(cls.tmp, "model-ark.pem")
        with open(root, "wb") as f:
            f.write(cls.sp.bundle_pem())
        # The SEV side of the model, trusted through extra_sev_trust_roots.
        cls.sev = sp_sev.SevPlatform()
        ark = os.path.join(cls.tmp, "sev-ark.cert")
        ask = os.path.join(cls.tmp, "sev-ask.cert")
        for path, data in ((ark, cls.sev.ark), (ask, cls.sev.ask)):
            with open(path, "wb") as f:
                f.write(data)
        cls.server = fixture.BarbicanServer(
            workers=cls.WORKERS, trust_root=root, extra_conf={
                "tee_attestation": {
                    "extra_sev_trust_roots": f"{ark}:{ask}"},
                # Audit notifications through oslo.messaging's log driver.
                "oslo_messaging_notifications": {"driver": "log"},
                **cls.EXTRA_CONF}, db_url=cls.DB_URL)
        with fixtures.EnvironmentVariable("SCRIPT_NAME", cls.PREFIX or None):
            # gunicorn takes its SCRIPT_NAME from its environment.
            cls.server.setUp()
        cls.url = cls.server.url + cls.PREFIX
        # The owner's secrets are sealed through Barbican's own
        # POST /v1/secrets: the sealed store is the project's preferred.
        stores.prefer_sealed_store(cls.url, cls._headers(OWNER))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.cleanUp()
        super().tearDownClass()

    @staticmethod
    def _headers(project: str, roles: str = "admin,member,reader"
                 ) -> dict[str, str]:
        return {"X-Project-Id": project, "X-User-Id": "u-" + project[:8],
                "X-Roles": roles, "Content-Type": "application/json"}

    # -- owner side ----------------------------------------------------
    def _secret(self, project: str = OWNER) -> tuple[str, bytes]:
        key = os.urandom(32)
        resp = requests.post(f"{self.url}/v1/secrets", timeout=30,
                             headers=self._headers(project), json={
                                 "name": "disk-key",
                                 "payload": base64.b64encode(key).decode(),
                                 "payload_content_type":
                                     "application/octet-stream",
                                 "payload_content_encoding": "base64"})
        self.assertEqual(201, resp.status_code, resp.text)
        return resp.json()["secret_ref"].rsplit("/", 1)[1], key

    def _policy(self, **extra: Any) -> str:
        doc = {"name": "web", "tee": "amd-sev-snp",
               "measurements": [MEASUREMENT.hex()],
               "min_tcb": {"bootloader": 3, "snp": 8, "microcode": 115},
               "guest_policy": {"debug": False}, "signers": ["vcek"]}
        doc.update(extra)
        resp = requests.post(f"{self.url}/v1/tee/policies", json=doc,
                             headers=self._headers(OWNER), timeout=30)
        self.assertEqual(201, resp.status_code, resp.text)
        return str(resp.json()["id"])

    def _bind(self, secret_id: str, policy_id: str) -> None:
        resp = requests.put(f"{self.url}/v1/tee/secrets/{secret_id}/policy",
                            json={"policy_id": policy_id},
                            headers=self._headers(OWNER), timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)

    def _bound_secret(self, **policy: Any) -> tuple[str, bytes]:
        secret_id, key = self._secret()
        self._bind(secret_id, self._policy(**policy))
        return secret_id, key

    # -- guest side ----------------------------------------------------
    def _attempt(self, secret_id: str, nonce: str | None = None,
                 sp: sp_model.SecureProcessor | None = None,
                 signer: str = "vcek", **report: Any
                 ) -> tuple[requests.Response, jwk.JWK]:
        sp = sp or self.sp
        if nonce is None:
            resp = requests.post(f"{self.url}/v1/tee/challenge",
                                 json={"secret_id": secret_id}, timeout=30)
            self.assertEqual(201, resp.status_code, resp.text)
            nonce = resp.json()["nonce"]
        key = guest.make_key()
        report.setdefault("measurement", MEASUREMENT)
        raw = sp.report(report_data=guest.report_data(nonce, key),
                        signer=signer, **report)
        cert = sp.vcek_der if signer == "vcek" else sp.vlek_der
        pem = base64.encodebytes(cert).decode()
        evidence = {"format": "amd-sev-snp-report",
                    "report": base64.b64encode(raw).decode(),
                    signer: "-----BEGIN CERTIFICATE-----\n" + pem
                    + "-----END CERTIFICATE-----\n",
                    "cert_chain": sp.bundle_pem().decode()}
        resp = requests.post(f"{self.url}/v1/tee/release", timeout=30,
                             json={"secret_id": secret_id, "nonce": nonce,
                                   "evidence": evidence,
                                   "public_key": guest.public_jwk(key)})
        return resp, key

    def _refused(self, code: str, secret_id: str, **kw: Any) -> None:
        resp, _ = self._attempt(secret_id, **kw)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual(code, resp.json()["error"]["code"], resp.text)
        self.assertNotIn("jwe", resp.json())
        # Every refusal leaves an audit record with its code.
        self.assertIn(f"tee.release.denied secret={secret_id} codes={code}",
                      self._log())

    def _log(self) -> str:
        with open(self.server.log_path, errors="replace") as f:
            return f.read()



class ReleaseTest(_ServerTestBase):

    def test_audit_lines_of_token_less_requests_name_no_one_else(
            self) -> None:
        # One connection (one worker greenlet): a token request, then a
        # release without one. The release's audit line has its own
        # request id and no user or project (the token request's stayed
        # on the greenlet before).
        session = requests.Session()
        resp = session.get(f"{self.url}/v1/tee/policies", timeout=30,
                           headers=self._headers(OWNER))
        self.assertEqual(200, resp.status_code, resp.text)
        user = "u-" + OWNER[:8]
        self.assertIn(user, self._log())  # positive control
        secret_id = str(uuid.uuid4())
        # The caller's global request id, as oslo.middleware takes one
        # (tee_public answers in front of Barbican's request_id filter).
        global_id = f"req-{uuid.uuid4()}"
        resp = session.post(f"{self.url}/v1/tee/release", timeout=30,
                            json={"secret_id": secret_id, "nonce": "x"},
                            headers={"X-OpenStack-Request-ID": global_id})
        self.assertEqual(400, resp.status_code, resp.text)
        request_id = resp.headers["x-openstack-request-id"]
        self.assertRegex(request_id, r"^req-[0-9a-f-]{36}$")
        self.assertNotEqual(global_id, request_id)
        [line] = [x for x in self._log().splitlines()
                  if f"tee.release.denied secret={secret_id}" in x]
        self.assertIn(f"[{global_id} {request_id} ", line)
        self.assertNotIn(user, line)
        self.assertNotIn(OWNER, line)

    def test_database_errors_are_audited_503s(self) -> None:
        secret_id, key = self._bound_secret()
        resp = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                             json={"secret_id": secret_id})
        self.assertEqual(201, resp.status_code, resp.text)
        nonce = resp.json()["nonce"]
        self.server.sql("ALTER TABLE tee_rates RENAME TO tee_rates_away")

        def back() -> None:
            if "tee_rates_away" in self.server.table_names():
                self.server.sql(
                    "ALTER TABLE tee_rates_away RENAME TO tee_rates")

        self.addCleanup(back)
        resp = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                             json={"secret_id": secret_id})
        self.assertEqual(503, resp.status_code, resp.text)
        self.assertEqual("database_unavailable",
                         resp.json()["error"]["code"])
        resp, _ = self._attempt(secret_id, nonce=nonce)
        self.assertEqual(503, resp.status_code, resp.text)
        self.assertEqual("database_unavailable",
                         resp.json()["error"]["code"])
        self.assertNotIn("jwe", resp.json())
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=database_unavailable", self._log())
        back()
        # Nothing was spent: the same challenge's nonce still releases.
        resp, guest_key = self._attempt(secret_id, nonce=nonce)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def test_good_guest_gets_its_key(self) -> None:
        secret_id, key = self._bound_secret()
        resp, guest_key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        log = self._log()
        self.assertIn(f"tee.release.granted secret={secret_id}", log)
        notices = [line for line in log.splitlines()
                   if '"event_type": "tee.release.granted"' in line
                   and secret_id in line]
        self.assertTrue(notices, "no oslo.messaging notification")
        self.assertNotIn(key.hex(), log)
        self.assertNotIn(base64.b64encode(key).decode(), log)

    def test_payload_api_is_403_for_every_role(self) -> None:
        secret_id, _ = self._bound_secret()
        for roles in ("admin,member,reader", "admin", "reader",
                      "service,admin"):
            with self.subTest(roles=roles):
                resp = requests.get(
                    f"{self.url}/v1/secrets/{secret_id}/payload",
                    headers=dict(self._headers(OWNER, roles),
                                 Accept="application/octet-stream"),
                    timeout=30)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertEqual("secret_sealed",
                                 resp.json()["error"]["code"])
                self.assertIn("/v1/tee/release", resp.text)

    def test_refusals_have_their_own_codes(self) -> None:
        secret_id, _ = self._bound_secret(
            host_data=hashlib.sha256(b"instance").hexdigest())
        hd = hashlib.sha256(b"instance").digest()
        foreign = sp_model.SecureProcessor(label="foreign-root")
        cases = [
            ("policy_measurement", dict(measurement=b"\x01" * 48,
                                        host_data=hd)),
            ("policy_host_data", dict(host_data=b"\x02" * 32)),
            ("policy_debug", dict(host_data=hd, policy=0x30000 | 1 << 19)),
            ("snp_untrusted_root", dict(host_data=hd, sp=foreign)),
            ("policy_signer", dict(host_data=hd, signer="vlek")),
        ]
        for code, kw in cases:
            with self.subTest(code=code):
                self._refused(code, secret_id, **kw)
        # The good guest still works afterwards: nothing was consumed but
        # the refused attempts' own nonces.
        resp, _ = self._attempt(secret_id, host_data=hd)
        self.assertEqual(200, resp.status_code, resp.text)
        log = self._log()
        for code, _ in cases:
            self.assertIn(f"tee.release.denied secret={secret_id} "
                          f"codes={code}", log)

    def test_tdx_quote_is_verified_with_its_collateral(self) -> None:
        # A real quote: its collateral's 30-day window has passed, which
        # the release path must notice (and no TDX model can sign a fresh
        # quote for our nonce here).
        secret_id, _ = self._bound_secret()
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        quote = base.read_fixture("dcap-qvl-sdist-0.7.0", "sample",
                                  "tdx_quote_td15ex")
        collateral = json.loads(base.read_fixture(
            "dcap-qvl-sdist-0.7.0", "sample",
            "tdx_quote_td15ex_collateral.json"))
        resp = requests.post(f"{self.url}/v1/tee/release", timeout=30,
                             json={"secret_id": secret_id, "nonce": nonce,
                                   "public_key": guest.public_jwk(
                                       guest.make_key()),
                                   "evidence": {
                                       "format": "intel-tdx-quote",
                                       "quote": base64.b64encode(
                                           quote).decode(),
                                       "collateral": collateral}})
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("tdx_collateral_expired",
                         resp.json()["error"]["code"])

    def test_third_party_format_needs_the_operators_opt_in(self) -> None:
        # tee_test_verifier (installed in this env) registers
        # test-hmac-evidence; this server does not enable it
        # (test_verifier_plugins has the server that does).
        import tee_test_verifier

        secret_id, _ = self._bound_secret()
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        key = guest.make_key()
        claims = {"measurement": MEASUREMENT.hex(),
                  "report_data": guest.report_data(nonce, key).hex(),
                  "host_data": "00" * 32}
        resp = requests.post(f"{self.url}/v1/tee/release", timeout=30,
                             json={"secret_id": secret_id, "nonce": nonce,
                                   "public_key": guest.public_jwk(key),
                                   "evidence": {
                                       "format": "test-hmac-evidence",
                                       "claims": claims,
                                       "mac": tee_test_verifier.mac(
                                           b"any key", claims)}})
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertEqual("evidence_format", resp.json()["error"]["code"])
        self.assertIn("amd-sev-snp-report or intel-tdx-quote", resp.text)

    def test_tcb_below_minimum(self) -> None:
        secret_id, _ = self._bound_secret(
            min_tcb={"bootloader": 3, "snp": 9, "microcode": 115})
        self._refused("policy_tcb_below_minimum", secret_id)

    def test_nonce_replayed_or_expired(self) -> None:
        secret_id, _ = self._bound_secret()
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        resp, _ = self._attempt(secret_id, nonce=nonce)
        self.assertEqual(200, resp.status_code, resp.text)
        self._refused("nonce_unknown", secret_id, nonce=nonce)
        # Nonces are stateless: an expired one is made with the service's
        # own nonce key (test_lockout has the forgeries).
        from barbican_tee.api import nonce as nonce_mod
        from barbican_tee.plugin import keyring as keyring_mod

        nonce_key = keyring_mod.load_key_file(os.path.join(
            self.server.data_dir, server.TEE_KEK_NAME)).derive("nonce")
        nonce = nonce_mod.issue(nonce_key, secret_id, int(time.time()) - 1)
        self._refused("nonce_expired", secret_id, nonce=nonce)

    def test_same_nonce_on_two_workers_at_once(self) -> None:
        secret_id, key = self._bound_secret()
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda _: self._attempt(secret_id, nonce=nonce)[0],
                range(8)))
        codes = sorted(r.status_code for r in results)
        self.assertEqual([200] + [403] * 7, codes)
        for r in results:
            if r.status_code == 403:
                self.assertEqual("nonce_unknown", r.json()["error"]["code"])

    def test_no_policy_deleted_policy_and_tampered_policy(self) -> None:
        secret_id, _ = self._secret()
        self._refused("secret_no_policy", secret_id)
        policy_id = self._policy()
        self._bind(secret_id, policy_id)
        resp = requests.delete(f"{self.url}/v1/tee/policies/{policy_id}",
                               headers=self._headers(OWNER), timeout=30)
        self.assertEqual(204, resp.status_code, resp.text)
        # Deleting the policy unbound the secret.
        self._refused("secret_no_policy", secret_id)
        strict = self._policy()
        self._bind(secret_id, strict)
        self.server.sql("UPDATE tee_policies SET document = replace("
                        "document, :old, :new) WHERE id = :id",
                        {"old": MEASUREMENT.hex(), "new": "03" * 48,
                         "id": strict})
        self._refused("policy_tampered", secret_id,
                      measurement=b"\x03" * 48)
        self.server.sql("DELETE FROM tee_policies WHERE id = :id",
                        {"id": strict})
        self._refused("policy_deleted", secret_id)

    def test_a_policy_must_pin_the_guest(self) -> None:
        resp = requests.post(f"{self.url}/v1/tee/policies", timeout=30,
                             headers=self._headers(OWNER),
                             json={"tee": "amd-sev-snp", "min_tcb": {
                                 "snp": 8}})
        self.assertEqual(400, resp.status_code)
        self.assertEqual("policy_measurements",
                         resp.json()["error"]["code"])
        # An owner-signed ID block pins an SNP guest as well.
        self._policy(measurements=[], id_key_digests=["ab" * 48])
        # What GET shows can be sent back as it is.
        shown = requests.get(
            f"{self.url}/v1/tee/policies/{self._policy()}", timeout=30,
            headers=self._headers(OWNER)).json()
        resp = requests.post(f"{self.url}/v1/tee/policies", json=shown,
                             headers=self._headers(OWNER), timeout=30)
        self.assertEqual(201, resp.status_code, resp.text)

    def test_ids_that_are_not_uuids_are_no_route(self) -> None:
        bad = "0000000-00000-0000-0000-000000000000"  # 36, not a UUID
        good = "1b4ec3a4-0e3a-4b7e-9d61-6c1c0d1d3a01"
        for method, path in (
                ("GET", f"policies/{bad}"),
                ("DELETE", f"policies/{bad}"),
                ("PUT", f"secrets/{bad}/policy"),
                ("PUT", f"instances/{bad}/secrets/{good}"),
                ("PUT", f"instances/{good}/secrets/{bad}"),
                ("DELETE", f"instances/{bad}"),
                ("POST", f"sev/sessions/{bad}/measurement")):
            with self.subTest(method=method, path=path):
                resp = requests.request(
                    method, f"{self.url}/v1/tee/{path}", json={},
                    headers=self._headers(OWNER, "admin,service"),
                    timeout=30)
                self.assertEqual(404, resp.status_code, resp.text)
                self.assertEqual("not_found", resp.json()["error"]["code"])

    def test_policies_are_project_scoped(self) -> None:
        policy_id = self._policy()
        resp = requests.get(f"{self.url}/v1/tee/policies/{policy_id}",
                            headers=self._headers(OTHER), timeout=30)
        self.assertEqual(404, resp.status_code)
        secret_id, _ = self._secret()
        resp = requests.put(f"{self.url}/v1/tee/secrets/{secret_id}/policy",
                            json={"policy_id": policy_id},
                            headers=self._headers(OTHER), timeout=30)
        self.assertEqual(404, resp.status_code, resp.text)
        listed = requests.get(f"{self.url}/v1/tee/policies", timeout=30,
                              headers=self._headers(OWNER)).json()
        self.assertIn(policy_id, [p["id"] for p in listed["policies"]])
        resp = requests.post(f"{self.url}/v1/tee/policies", timeout=30,
                             json={"tee": "amd-sev-snp"},
                             headers=self._headers(OWNER, "reader"))
        self.assertEqual(403, resp.status_code)
        resp = requests.post(f"{self.url}/v1/tee/policies", timeout=30,
                             json={"tee": "amd-sev-snp", "vmpl": 9},
                             headers=self._headers(OWNER))
        self.assertEqual(400, resp.status_code)
        self.assertEqual("policy_vmpl", resp.json()["error"]["code"])

    def test_client_and_tee_guest_over_fake_configfs(self) -> None:
        secret_id, key = self._bound_secret()
        tsm = self.useFixture(configfs.FakeConfigfsTsm(
            sp=self.sp, report_kwargs={"measurement": MEASUREMENT}))
        out = os.path.join(tempfile.mkdtemp(), "disk.key")
        stdout, stderr = io.StringIO(), io.StringIO()
        status = tee_guest.main(
            ["fetch", "--secret", secret_id, "--endpoint", self.url,
             "--out", out, "--tsm-root", tsm.root],
            stdout=stdout, stderr=stderr)
        self.assertEqual(0, status, stderr.getvalue())
        with open(out, "rb") as f:
            self.assertEqual(key, f.read())
        self.assertEqual(0o600, os.stat(out).st_mode & 0o777)
        # The REST client sees the same refusal codes.
        client = rest.TEEClient(self.url)
        exc = self.assertRaises(rest.TEEClientError, client.release,
                                secret_id, "A" * 43, {"format": "x"},
                                guest.public_jwk(guest.make_key()))
        self.assertEqual(403, exc.status)
        self.assertEqual("nonce_unknown", exc.code)


class SEVPreAttestationTest(_ServerTestBase):
    """nova-compute's side of SEV launch, against the model's firmware."""

    FIRMWARE = b"OVMF" * 1024
    POLICY = 0x33

    def _sev_secret(self) -> tuple[str, bytes]:
        digest = hashlib.sha256(self.FIRMWARE).hexdigest()
        secret_id, key = self._secret()
        self._bind(secret_id, self._policy(tee="amd-sev",
                                           measurements=[digest],
                                           min_tcb={}, signers=[]))
        return secret_id, key

    INSTANCE = "1b4ec3a4-0e3a-4b7e-9d61-6c1c0d1d3a01"

    def _bind_instance(self, secret_id: str, instance: str,
                       project: str = OWNER) -> Any:
        return requests.put(
            f"{self.url}/v1/tee/instances/{instance}/secrets/{secret_id}",
            headers=self._headers("nova-service-project", "service"),
            json={"project_id": project}, timeout=30)

    def _session(self, secret_id: str, roles: str = "service") -> Any:
        self.assertEqual(200, self._bind_instance(
            secret_id, self.INSTANCE).status_code)
        chain = self.sev.pek + self.sev.oca + self.sev.cek
        return requests.post(
            f"{self.url}/v1/tee/sev/sessions", timeout=30,
            headers=self._headers("nova-service-project", roles), json={
                "secret_id": secret_id, "policy": self.POLICY,
                "pdh": base64.b64encode(self.sev.pdh).decode(),
                "cert_chain": base64.b64encode(chain).decode(),
                "instance_uuid": self.INSTANCE})

    def _started(self, secret_id: str) -> tuple[dict[str, Any], Any]:
        """A session's answer, and the model's launch of the firmware."""
        resp = self._session(secret_id)
        self.assertEqual(201, resp.status_code, resp.text)
        body: dict[str, Any] = resp.json()
        launch = self.sev.launch_start(base64.b64decode(body["dh_cert"]),
                                       base64.b64decode(body["session"]),
                                       self.POLICY)
        launch.launch_update_data(self.FIRMWARE)
        return body, launch

    def _launch(self, firmware: bytes, secret_id: str) -> tuple[Any, Any]:
        resp = self._session(secret_id)
        self.assertEqual(201, resp.status_code, resp.text)
        body = resp.json()
        launch = self.sev.launch_start(base64.b64decode(body["dh_cert"]),
                                       base64.b64decode(body["session"]),
                                       self.POLICY)
        launch.launch_update_data(firmware)
        return self._measurement(body["session_id"],
                                 launch.launch_measure()), launch

    def _measurement(self, session_id: str, measurement: bytes) -> Any:
        major, minor = self.sev.api
        return requests.post(
            f"{self.url}/v1/tee/sev/sessions/{session_id}/measurement",
            timeout=30,
            headers=self._headers("nova-service-project", "service"),
            json={"measurement": base64.b64encode(measurement).decode(),
                  "api_major": major, "api_minor": minor,
                  "build_id": self.sev.build_id, "policy": self.POLICY})

    def test_injected_packet_decrypts_only_for_the_right_firmware(
            self) -> None:
        import uuid

        secret_id, key = self._sev_secret()
        resp, launch = self._launch(self.FIRMWARE, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        table = launch.launch_secret(
            base64.b64decode(resp.json()["secret_header"]),
            base64.b64decode(resp.json()["secret"]))
        self.assertEqual(key, table[uuid.UUID(
            "736869e5-84f0-4973-92ec-06879ce3da0b")])
        resp, _ = self._launch(self.FIRMWARE + b"evil", secret_id)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_measurement_mismatch",
                         resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())

    def test_a_session_given_a_later_expiry_opens_nothing(self) -> None:
        # A database writer keeps a session alive past its end: its expiry
        # is under the sealed state's AAD.
        secret_id, _ = self._sev_secret()
        body, launch = self._started(secret_id)
        table = db.SEV_SESSIONS
        engine = sa.create_engine(self.server.layout.db_url,
                                  poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            expires = conn.execute(sa.select(table.c.expires_at).where(
                table.c.id == body["session_id"])).scalar_one()
            conn.execute(table.update().where(
                table.c.id == body["session_id"]).values(
                expires_at=expires + datetime.timedelta(days=1)))
        resp = self._measurement(body["session_id"], launch.launch_measure())
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_session_tampered",
                         resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())

    def test_a_malformed_measurement_costs_the_session_nothing(
            self) -> None:
        secret_id, key = self._sev_secret()
        body, launch = self._started(secret_id)
        measurement = base64.b64encode(launch.launch_measure()).decode()
        major, minor = self.sev.api
        good = {"measurement": measurement, "api_major": major,
                "api_minor": minor, "build_id": self.sev.build_id,
                "policy": self.POLICY}
        url = (f"{self.url}/v1/tee/sev/sessions/{body['session_id']}"
               "/measurement")
        headers = self._headers("nova-service-project", "service")
        for bad in ({"api_major": 1e300}, {"api_minor": "1"},
                    {"build_id": 256}, {"api_major": -1},
                    {"build_id": True}, {"measurement": None}):
            with self.subTest(bad=bad):
                resp = requests.post(url, timeout=30, headers=headers,
                                     json=dict(good, **bad))
                self.assertEqual(400, resp.status_code, resp.text)
                self.assertEqual("sev_measurement_invalid",
                                 resp.json()["error"]["code"])
        resp = requests.post(url, timeout=30, headers=headers,
                             data='{"api_major": Infinity}')
        self.assertEqual(400, resp.status_code, resp.text)
        # The session is still there: the well-formed answer gets the
        # packet.
        resp = requests.post(url, timeout=30, headers=headers, json=good)
        self.assertEqual(200, resp.status_code, resp.text)
        table = launch.launch_secret(
            base64.b64decode(resp.json()["secret_header"]),
            base64.b64decode(resp.json()["secret"]))
        self.assertIn(key, table.values())

    def test_no_packet_once_the_instance_is_deleted(self) -> None:
        secret_id, _ = self._sev_secret()
        body, launch = self._started(secret_id)
        measurement = launch.launch_measure()
        # The instance is deleted while its guest waits, paused.
        resp = requests.delete(
            f"{self.url}/v1/tee/instances/{self.INSTANCE}", timeout=30,
            headers=self._headers("nova-service-project", "service"))
        self.assertEqual(204, resp.status_code, resp.text)
        resp = self._measurement(body["session_id"], measurement)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("instance_deleted", resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())

    def test_sessions_need_the_service_role_and_a_trusted_chain(
            self) -> None:
        secret_id, _ = self._sev_secret()
        self.assertEqual(403, self._session(secret_id, "member").status_code)
        forged = sp_sev.SevPlatform()
        self.sev, real = forged, self.sev
        try:
            resp = self._session(secret_id)
        finally:
            self.sev = real
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_untrusted_platform",
                         resp.json()["error"]["code"])


    def test_one_instance_per_secret_within_its_project(self) -> None:
        secret_id, _ = self._sev_secret()
        other = "2b4ec3a4-0e3a-4b7e-9d61-6c1c0d1d3a02"
        resp = self._bind_instance(secret_id, other, project=OTHER)
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_project_mismatch",
                         resp.json()["error"]["code"])
        self.assertEqual(200, self._bind_instance(
            secret_id, self.INSTANCE).status_code)
        resp = self._bind_instance(secret_id, other)
        self.assertEqual(409, resp.status_code)
        # A session for another instance than the bound one is refused.
        chain = self.sev.pek + self.sev.oca + self.sev.cek
        resp = requests.post(
            f"{self.url}/v1/tee/sev/sessions", timeout=30,
            headers=self._headers("nova-service-project", "service"), json={
                "secret_id": secret_id, "policy": self.POLICY,
                "pdh": base64.b64encode(self.sev.pdh).decode(),
                "cert_chain": base64.b64encode(chain).decode(),
                "instance_uuid": other})
        self.assertEqual(403, resp.status_code)
        self.assertEqual("instance_not_bound", resp.json()["error"]["code"])
        # Deleting the instance retires the secret: no other instance gets
        # it, until its owner binds it to a policy again.
        resp = requests.delete(
            f"{self.url}/v1/tee/instances/{self.INSTANCE}", timeout=30,
            headers=self._headers("nova-service-project", "service"))
        self.assertEqual(204, resp.status_code)
        self.assertEqual(409, self._bind_instance(secret_id,
                                                  other).status_code)
        self._bind(secret_id, self._policy(
            tee="amd-sev", min_tcb={}, signers=[],
            measurements=[hashlib.sha256(self.FIRMWARE).hexdigest()]))
        self.assertEqual(200, self._bind_instance(secret_id,
                                                  other).status_code)

    def test_snp_release_is_tied_to_the_bound_instance(self) -> None:
        secret_id, key = self._bound_secret()
        self.assertEqual(200, self._bind_instance(
            secret_id, self.INSTANCE).status_code)
        mine = hashlib.sha256(b"openstack-tee:v1:"
                              + self.INSTANCE.encode()).digest()
        resp, guest_key = self._attempt(secret_id, host_data=mine)
        self.assertEqual(200, resp.status_code, resp.text)
        other = hashlib.sha256(b"openstack-tee:v1:"
                               + b"2b4ec3a4-0e3a-4b7e-9d61-6c1c0d1d3a02"
                               ).digest()
        self._refused("instance_mismatch", secret_id, host_data=other)
        requests.delete(
            f"{self.url}/v1/tee/instances/{self.INSTANCE}", timeout=30,
            headers=self._headers("nova-service-project", "service"))
        self._refused("instance_deleted", secret_id, host_data=mine)


class ServeCommandTest(base.TestCase):

    def test_serve_runs_the_suite_until_sigterm(self) -> None:
        import signal

        data = tempfile.mkdtemp()
        port = server.free_port()
        cmd = os.path.join(os.path.dirname(sys.executable), "openstack-tee")
        # TEE_FUNCTIONAL_DB's database (--database-url), or sqlite.
        db_url = self.useFixture(fixture.Database()).url
        argv = [cmd, "serve", "--port", str(port), "--data-dir", data,
                "--workers", "2"]
        if db_url:
            argv += ["--database-url", db_url]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        url = f"http://127.0.0.1:{port}"
        # serve prints its URL and the headers to use once every worker
        # is up; read until then (readline returns "" if it exits).
        seen = []
        for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
            seen.append(line)
            # The URL comes first; the usage text ends with this line.
            if "SIGTERM" in line and url in "".join(seen):
                break
        else:
            self.fail(f"openstack-tee serve exited: {''.join(seen)}")
        resp = requests.get(f"{url}/v1/tee/policies", timeout=5,
                            headers={"X-Project-Id": "p",
                                     "X-Roles": "member"})
        self.assertEqual(200, resp.status_code, resp.text)
        challenge = requests.post(f"{url}/v1/tee/challenge", timeout=5,
                                  json={"secret_id": str(uuid.uuid4())})
        self.assertEqual(201, challenge.status_code)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(0, proc.returncode, out)
        self.assertIn("listening on", "".join(seen))
        self.assertRaises(requests.ConnectionError, requests.get,
                          f"{url}/v1/tee/policies", timeout=5)
        sqlite_file = os.path.join(data, server.DB_NAME)
        if db_url is None:
            self.assertTrue(os.path.isfile(sqlite_file))
            return
        # That database was upgraded and used; no sqlite file was made,
        # and its password was not printed.
        password = sa.make_url(db_url).password
        self.assertTrue(password)
        self.assertNotIn(password, "".join(seen) + out)
        self.assertIn(f"database:      {server.safe_url(db_url)}",
                      "".join(seen))
        self.assertFalse(os.path.exists(sqlite_file))
        engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        tables = set(sa.inspect(engine).get_table_names())
        self.assertLessEqual({"secrets", "projects", "tee_rates"}, tables)
        with engine.connect() as conn:
            self.assertEqual(1, conn.execute(sa.text(
                "SELECT count(*) FROM tee_rates")).scalar_one())


class ServerCheckTest(base.TestCase):

    def test_missing_kek_stops_startup(self) -> None:
        exc = self.assertRaises(
            server.ServerError, self.useFixture,
            fixture.BarbicanServer(workers=1, extra_conf={
                "tee_sealed": {"kek_file": "/nonexistent/kek"}}))
        self.assertIn("cannot read the KEK file", str(exc))


class DurabilityTest(_ServerTestBase):
    """Generated keys, crash recovery, KEK rotation, rate limits."""

    def _release_ok(self, secret_id: str) -> bytes:
        resp, key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        return guest.decrypt(resp.json()["jwe"], key)

    def test_generated_key_from_an_order_is_sealed_and_releasable(
            self) -> None:
        resp = requests.post(f"{self.url}/v1/orders", timeout=30,
                             headers=self._headers(OWNER), json={
                                 "type": "key", "meta": {
                                     "name": "generated", "algorithm": "aes",
                                     "bit_length": 256, "mode": "cbc",
                                     "payload_content_type":
                                         "application/octet-stream"}})
        self.assertEqual(202, resp.status_code, resp.text)
        order = requests.get(resp.json()["order_ref"], timeout=30,
                             headers=self._headers(OWNER)).json()
        self.assertEqual("ACTIVE", order["status"], order)
        secret_id = order["secret_ref"].rsplit("/", 1)[1]
        self._bind(secret_id, self._policy())
        self.assertEqual(32, len(self._release_ok(secret_id)))

    def test_sigkill_under_load_loses_no_acknowledged_secret(self) -> None:
        stored: list[tuple[str, bytes]] = []
        errors: list[str] = []

        def store_one(_: int) -> None:
            try:
                stored.append(self._bound_secret())
            except Exception as exc:  # noqa: BLE001 - counted below
                errors.append(type(exc).__name__)

        pool = concurrent.futures.ThreadPoolExecutor(4)
        futures = [pool.submit(store_one, i) for i in range(40)]
        # Kill the server while stores and releases are in flight.
        deadline = time.monotonic() + 120
        while len(stored) < 8 and time.monotonic() < deadline:
            if all(f.done() for f in futures):
                break
            time.sleep(0.05)
        self.assertGreaterEqual(len(stored), 8, errors)
        for secret_id, _ in stored[:2]:
            pool.submit(self._attempt, secret_id)
        self.server.kill()
        pool.shutdown(wait=True)
        acknowledged = list(stored)
        self.server.restart()
        self.assertGreaterEqual(len(acknowledged), 8)
        for secret_id, key in acknowledged:
            self.assertEqual(key, self._release_ok(secret_id))

    def test_kek_rotation_and_rewrap_lose_nothing(self) -> None:
        from barbican_tee.plugin import keyring as keyring_mod

        before = [self._bound_secret() for _ in range(3)]
        # Floors set through the API (MACed under the old KEK): the
        # config's Milan floor (the model's TCB meets it) and a Genoa one.
        floors = {"milan": {"bootloader": 3, "tee": 0, "snp": 8,
                            "microcode": 115},
                  "genoa": {"bootloader": 1, "tee": 2, "snp": 3,
                            "microcode": 4}}
        for product, floor in floors.items():
            resp = requests.put(f"{self.url}/v1/tee/floors/{product}",
                                json=floor, timeout=30,
                                headers=self._headers(OWNER, "admin"))
            self.assertEqual(200, resp.status_code, resp.text)
        conf = self.server.conf_path
        with open(conf) as f:
            text = f.read()
        old = self.server.data_dir + "/tee-kek"
        new = self.server.data_dir + "/tee-kek-2"
        keyring_mod.write_key_file(new)
        with open(conf, "w") as f:
            f.write(text.replace(f"kek_file = {old}",
                                 f"kek_file = {new}\nprevious_kek_files = "
                                 f"{old}"))
        self.addCleanup(self._restore_conf, conf, text)
        # Before the old KEK comes back: rows MACed under the new one.
        self.addCleanup(self.server.sql, "DELETE FROM tee_floors")
        self.server.restart()
        for secret_id, key in before:
            self.assertEqual(key, self._release_ok(secret_id))
        after = self._bound_secret()
        status = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "openstack-tee"),
             "rewrap", "--config-file", conf],
            capture_output=True, text=True, check=False)
        self.assertEqual(0, status.returncode, status.stdout + status.stderr)
        self.assertIn("re-sealed", status.stdout)
        # The old KEK is retired: everything still opens.
        with open(conf, "w") as f:
            f.write(text.replace(f"kek_file = {old}", f"kek_file = {new}"))
        self.server.restart()
        for secret_id, key in before + [after]:
            self.assertEqual(key, self._release_ok(secret_id))
        # The floors were re-MACed too: still set, nothing "tampered".
        listed = requests.get(f"{self.url}/v1/tee/floors", timeout=30,
                              headers=self._headers(OWNER, "admin"))
        self.assertEqual(200, listed.status_code, listed.text)
        views = {f["product"]: f for f in listed.json()["floors"]}
        for product, floor in floors.items():
            self.assertNotIn("error", views[product])
            self.assertEqual(floor, views[product]["set"])

    def _restore_conf(self, conf: str, text: str) -> None:
        with open(conf, "w") as f:
            f.write(text)
        self.server.restart()


class RecordUpgradeTest(_ServerTestBase):
    """rewrap and the records of an earlier release.

    On a server of its own: DurabilityTest's KEK rotation leaves records
    under the KEK it retires, which rewrap counts as failed.
    """

    _release_ok = DurabilityTest._release_ok

    def test_rewrap_upgrades_records_of_an_earlier_release(self) -> None:
        """A version 1 record (not bound to its secret) becomes version 2.

        Its rows are what an earlier release left: the record alone, more
        or fewer keys than today's. rewrap seals it to its secret; the
        key inside is the one stored, and a second rewrap finds it current.
        """
        from barbican_tee.plugin import keyring as keyring_mod
        from barbican_tee.plugin import store as sealed_store

        secret_id, key = self._secret()
        other, other_key = self._bound_secret()
        rows = {r["key"]: r for r in self.server.sql(
            "SELECT * FROM secret_store_metadata WHERE secret_id = :s "
            "AND deleted = :f", {"s": secret_id, "f": False})}
        ring = keyring_mod.Keyring(keyring_mod.load_key_file(
            os.path.join(self.server.data_dir, server.TEE_KEK_NAME)))
        v1 = sealed_store.seal(ring, key, rows["tee_type"]["value"])
        self.assertNotIn("tee_secret", v1)
        self.server.sql("DELETE FROM secret_store_metadata WHERE secret_id "
                        "= :s AND secret_store_metadata.key LIKE 'tee%'",
                        {"s": secret_id})
        template = dict(rows["tee_type"])
        for name, value in v1.items():
            self.server.insert("secret_store_metadata", dict(
                template, id=str(uuid.uuid4()), key=name, value=value))
        resp, _ = self._attempt(secret_id)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sealed_record_unbound", resp.json()["error"]["code"])
        def rewrap() -> str:
            status = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable),
                              "openstack-tee"),
                 "rewrap", "--config-file", self.server.conf_path],
                capture_output=True, text=True, check=False)
            self.assertEqual(0, status.returncode,
                             status.stdout + status.stderr)
            return status.stdout

        self.assertIn("failed 0", rewrap())
        # Sealed to its secret now, with no policy (none was bound): the
        # owner binds one and the guest gets the very key stored.
        self._bind(secret_id, self._policy())
        self.assertEqual(key, self._release_ok(secret_id))
        self.assertEqual(other_key, self._release_ok(other))
        live = {r["key"] for r in self.server.sql(
            "SELECT secret_store_metadata.key FROM secret_store_metadata "
            "WHERE secret_id = :s AND deleted = :f",
            {"s": secret_id, "f": False})}
        self.assertIn("tee_secret", live)
        self.assertIn("re-sealed or re-MACed 0", rewrap())


class RateLimitTest(base.TestCase):

    def test_challenges_are_rate_limited_per_client_not_per_secret(
            self) -> None:
        # Challenges never spend the secret's budget (test_lockout has the
        # attacks); the client's address has its own.
        srv = self.useFixture(fixture.BarbicanServer(
            workers=2, extra_conf={"tee_api": {
                "release_rate_per_secret": "1",
                "release_rate_per_client": "3"}}))
        secret = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        codes = [requests.post(f"{srv.url}/v1/tee/challenge", timeout=30,
                               json={"secret_id": secret}).status_code
                 for _ in range(5)]
        self.assertEqual([201, 201, 201, 429, 429], codes)
        other = requests.post(f"{srv.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret[:-1] + "1"})
        self.assertEqual(429, other.status_code)
        self.assertEqual("rate_limited", other.json()["error"]["code"])
