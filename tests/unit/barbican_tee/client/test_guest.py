"""tee-guest and TEEClient against an in-test TEE service.

The service below implements challenge and release the way the REST
contract says: single-use nonces, SNP verification with the attestation
core (trusting the model's ARK), the report_data binding of nonce and key,
and the secret as a compact JWE (ECDH-ES+A256KW, A256GCM) to the posted
JWK. The real barbican-api is exercised by the functional tests.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import secrets
import socket
import stat
import sys
import threading
from typing import Any

import fixtures
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs as att_certs
from barbican_tee.client import guest
from barbican_tee.client import rest
from barbican_tee.client import tsm
from barbican_tee.cmd import tee_guest
from openstack_tee_demo.sp_model import configfs
from openstack_tee_demo.sp_model import snp as sp_snp
from tests import base

TOKEN = "good-token"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeTEEService:
    """Just enough of /v1/tee/ to test the client and tee-guest."""

    def __init__(self, sp: sp_snp.SecureProcessor) -> None:
        self.sp = sp
        self.verifier = snp.SnpVerifier(extra_roots=[sp.roots()])
        self.secrets: dict[str, bytes] = {}
        self.nonces: set[bytes] = set()
        self.refuse: tuple[int, str, str] | None = None
        self.policies: dict[str, dict[str, Any]] = {}
        self.bindings: dict[str, str] = {}
        self.challenges = 0
        self.released: list[dict[str, Any]] = []
        self.failures: list[str] = []
        # (max_age, expiry) of every release, as barbican-api gives it;
        # plain_lease: what the answer's JSON says instead (a host's edit).
        self.lease: tuple[int, int] | None = None
        self.plain_lease: dict[str, Any] | None = None
        self.renewals: list[Any] = []

    # -- routes ----------------------------------------------------------
    def handle(self, method: str, path: str, headers: Any,
               body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "tee"]:
            return 404, {"error": {"code": "not_found", "message": path}}
        route = parts[2:]
        if route == ["challenge"] and method == "POST":
            return self.challenge(body)
        if route == ["release"] and method == "POST":
            return self.release(body)
        if headers.get("X-Auth-Token") != TOKEN:
            return 401, {"error": {"code": "unauthorized",
                                   "message": "no valid token"}}
        if route == ["policies"] and method == "POST":
            pid = secrets.token_hex(8)
            self.policies[pid] = dict(body, id=pid)
            return 201, {"id": pid, "policy_ref": f"/v1/tee/policies/{pid}"}
        if route == ["policies"] and method == "GET":
            return 200, {"policies": list(self.policies.values())}
        if route == ["policies", "broken"]:
            return 500, "<html>Internal Server Error</html>"
        if len(route) == 2 and route[0] == "policies":
            if route[1] not in self.policies:
                return 404, {"error": {"code": "policy_not_found",
                                       "message": "no such policy"}}
            if method == "GET":
                return 200, self.policies[route[1]]
            if method == "DELETE":
                del self.policies[route[1]]
                return 204, None
        if (len(route) == 3 and route[0] == "secrets"
                and route[2] == "policy" and method == "PUT"):
            self.bindings[route[1]] = body["policy_id"]
            return 200, {"secret_id": route[1],
                         "policy_id": body["policy_id"]}
        return 405, {"error": {"code": "bad_route", "message": path}}

    def challenge(self, body: Any) -> tuple[int, Any]:
        if body.get("secret_id") not in self.secrets:
            return 404, {"error": {"code": "secret_not_found",
                                   "message": "no such secret"}}
        self.challenges += 1
        nonce = os.urandom(32)
        self.nonces.add(nonce)
        text = base64.urlsafe_b64encode(nonce).decode().rstrip("=")
        return 201, {"nonce": text, "expires_at": "2030-01-01T00:00:00Z"}

    def _deny(self, code: str, message: str) -> tuple[int, Any]:
        self.failures.append(code)
        return 403, {"error": {"code": code, "message": message}}

    def release(self, body: Any) -> tuple[int, Any]:
        secret = self.secrets.get(body.get("secret_id"))
        if secret is None:
            return 404, {"error": {"code": "secret_not_found",
                                   "message": "no such secret"}}
        nonce = _b64url_decode(body["nonce"])
        if nonce not in self.nonces:
            return self._deny("nonce_unknown", "nonce unknown or used")
        self.nonces.discard(nonce)
        evidence = body["evidence"]
        if evidence.get("format") != "amd-sev-snp-report":
            return self._deny("evidence_format", "unsupported format")
        vcek = evidence["vcek"].encode()
        chain = att_certs.load_ca_certs(evidence["cert_chain"].encode())
        try:
            verified = self.verifier.verify(
                base64.b64decode(evidence["report"]), vcek, chain=chain)
        except errors.AttestationError as exc:
            return self._deny(exc.code, exc.message)
        key = jwc_jwk.JWK(**body["public_key"])
        if key.has_private:
            return self._deny("bad_public_key", "a private key was posted")
        expected = hashlib.sha512(
            nonce + _b64url_decode(key.thumbprint())).digest()
        if verified.report.report_data != expected:
            return self._deny("report_data_mismatch",
                              "report_data does not bind nonce and key")
        if self.refuse is not None:
            status, code, message = self.refuse
            self.failures.append(code)
            return status, {"error": {"code": code, "message": message}}
        self.released.append(verified.claims())
        self.renewals.append(body.get("renewal"))
        protected: dict[str, Any] = {"alg": "ECDH-ES+A256KW",
                                     "enc": "A256GCM"}
        answer: dict[str, Any] = {}
        if self.lease is not None:
            protected.update(tee_max_age=self.lease[0],
                             tee_lease_exp=self.lease[1])
            answer.update(max_age=self.lease[0],
                          lease_expires_at=guest.iso_time(self.lease[1]))
        if self.plain_lease is not None:
            answer.update(self.plain_lease)
        token = jwc_jwe.JWE(secret, protected=json.dumps(protected))
        token.add_recipient(key)
        return 200, dict(answer, jwe=token.serialize(compact=True))


class FakeTEEServer(fixtures.Fixture):
    """FakeTEEService behind http.server on 127.0.0.1."""

    def __init__(self, service: FakeTEEService) -> None:
        super().__init__()
        self.service = service

    def _setUp(self) -> None:
        service = self.service

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                status, doc = service.handle(self.command, self.path,
                                             self.headers, body)
                if doc is None:
                    payload = b""
                    ctype = "application/json"
                elif isinstance(doc, str):
                    payload = doc.encode()
                    ctype = "text/html"
                else:
                    payload = json.dumps(doc).encode()
                    ctype = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        thread = threading.Thread(target=self.httpd.serve_forever,
                                  kwargs={"poll_interval": 0.02},
                                  daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(self.httpd.server_close)
        self.addCleanup(self.httpd.shutdown)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class _Base(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sp = sp_snp.SecureProcessor()

    def setUp(self) -> None:
        super().setUp()
        self.service = FakeTEEService(self.sp)
        self.secret = os.urandom(32)
        self.secret_id = "5a1d0c3e-6f6e-4a36-9a1c-5c2f5e0d2b7a"
        self.service.secrets[self.secret_id] = self.secret
        self.server = self.useFixture(FakeTEEServer(self.service))
        self.tmp = self.useFixture(fixtures.TempDir()).path


class TestTeeGuest(_Base):

    def _run(self, *extra: str, root: str | None = None,
             endpoint: str | None = None) -> tuple[int, bytes, str]:
        if root is None:
            root = self.useFixture(configfs.FakeConfigfsTsm(self.sp)).root
        out = io.BytesIO()
        err = io.StringIO()
        argv = ["fetch", "--secret", self.secret_id,
                "--endpoint", endpoint or self.server.url,
                "--tsm-root", root, "--timeout", "10", *extra]
        rc = tee_guest.main(argv, stdout=out, stderr=err)
        return rc, out.getvalue(), err.getvalue()

    def _assert_no_key(self, text: str) -> None:
        self.assertNotIn(self.secret.hex(), text)
        self.assertNotIn(base64.b64encode(self.secret).decode(), text)
        self.assertNotIn('"d"', text)

    def test_fetch_to_stdout(self) -> None:
        rc, out, err = self._run()
        self.assertEqual(0, rc, err)
        self.assertEqual(self.secret, out)
        self.assertEqual("", err)
        self.assertEqual(1, len(self.service.released))
        self.assertEqual("vcek", self.service.released[0]["signer"])
        self.assertEqual(set(), self.service.nonces)

    def test_fetch_to_file_0600(self) -> None:
        path = os.path.join(self.tmp, "luks.key")
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        rc, out, err = self._run("--out", path)
        self.assertEqual(0, rc, err)
        self.assertEqual(b"", out)
        with open(path, "rb") as f:
            self.assertEqual(self.secret, f.read())
        self.assertEqual(0o600, stat.S_IMODE(os.stat(path).st_mode))
        self.assertIn("mode 0600", err)
        self._assert_no_key(err)

    def test_existing_file_refused(self) -> None:
        path = os.path.join(self.tmp, "luks.key")
        with open(path, "wb") as f:
            f.write(b"old")
        rc, out, err = self._run("--out", path)
        self.assertEqual(1, rc)
        self.assertIn("output_exists", err)
        self.assertIn("refusing to overwrite", err)
        with open(path, "rb") as f:
            self.assertEqual(b"old", f.read())
        self.assertEqual(0, self.service.challenges)

    def test_existing_symlink_refused(self) -> None:
        path = os.path.join(self.tmp, "link")
        os.symlink(os.path.join(self.tmp, "nowhere"), path)
        rc, _out, err = self._run("--out", path)
        self.assertEqual(1, rc)
        self.assertIn("output_exists", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nowhere")))

    def test_write_new_file_o_excl(self) -> None:
        # The race the early check cannot see: O_EXCL still refuses.
        path = os.path.join(self.tmp, "k")
        tee_guest._write_new_file(path, b"one")
        self.assertRaises(tee_guest._OutputError,
                          tee_guest._write_new_file, path, b"two")
        with open(path, "rb") as f:
            self.assertEqual(b"one", f.read())

    def test_configfs_missing(self) -> None:
        rc, out, err = self._run(root=os.path.join(self.tmp, "no", "tsm"))
        self.assertEqual(2, rc)
        self.assertEqual(b"", out)
        self.assertIn("tsm_unavailable", err)
        self.assertIn("configfs", err)
        self.assertEqual(0, self.service.challenges)

    def test_unknown_provider(self) -> None:
        root = self.useFixture(configfs.FakeConfigfsTsm(
            self.sp, provider="weird_guest")).root
        rc, _out, err = self._run(root=root)
        self.assertEqual(2, rc)
        self.assertIn("tsm_unknown_provider", err)

    def test_service_refuses(self) -> None:
        self.service.refuse = (403, "policy_measurement",
                               "measurement is not in the policy")
        rc, out, err = self._run()
        self.assertEqual(3, rc)
        self.assertEqual(b"", out)
        self.assertIn("policy_measurement", err)
        self.assertIn("measurement is not in the policy", err)
        self.assertIn("HTTP 403", err)
        # fetch: a wrong request is refused (3), "not now" is 5.
        for status, code, expected in ((400, "evidence_invalid", 3),
                                       (429, "rate_limited", 5),
                                       (503, "database_unavailable", 5),
                                       (403, "nonce_unknown", 5)):
            self.service.refuse = (status, code, "no")
            rc, _out, err = self._run()
            self.assertEqual(expected, rc, (code, err))
            self.assertIn(code, err)

    def test_wrong_report_data_refused_by_service(self) -> None:
        # A report bound to other data is refused: the binding is checked.
        self.useFixture(fixtures.MonkeyPatch(
            "barbican_tee.client.guest.report_data",
            lambda nonce, key: b"\x01" * 64))
        rc, _out, err = self._run()
        self.assertEqual(3, rc)
        self.assertIn("report_data_mismatch", err)

    def test_connection_refused(self) -> None:
        rc, out, err = self._run(
            endpoint=f"http://127.0.0.1:{_closed_port()}")
        self.assertEqual(4, rc)
        self.assertEqual(b"", out)
        self.assertIn("network_error", err)
        self.assertIn("connection refused", err)

    def test_corrupted_auxblob(self) -> None:
        bad = (b"\x8d\x75\xda\x63" + b"\x00" * 12
               + (0xFFFF).to_bytes(4, "little") + (50).to_bytes(4, "little")
               + b"\x00" * 24)
        root = self.useFixture(configfs.FakeConfigfsTsm(
            self.sp, auxblob=bad)).root
        rc, _out, err = self._run(root=root)
        self.assertEqual(1, rc)
        self.assertIn("snp_cert_table_malformed", err)
        self.assertIn("auxblob", err)
        self.assertEqual([], self.service.released)

    def test_unknown_secret(self) -> None:
        out = io.BytesIO()
        err = io.StringIO()
        root = self.useFixture(configfs.FakeConfigfsTsm(self.sp)).root
        rc = tee_guest.main(["fetch", "--secret", "nope", "--endpoint",
                             self.server.url, "--tsm-root", root],
                            stdout=out, stderr=err)
        # A 404 is no verdict of the release contract (which refuses with
        # 403): try again later, maybe with the right endpoint.
        self.assertEqual(tee_guest.EXIT_RETRY, rc)
        self.assertIn("secret_not_found", err.getvalue())
        self.assertIn("could not answer", err.getvalue())

    def test_plain_http_only_to_loopback_or_when_asked(self) -> None:
        # The JWE proves nothing about who made it: over plain http a host
        # on the path could hand the guest a key it knows. Refused before
        # anything is sent (no challenge).
        root = self.useFixture(configfs.FakeConfigfsTsm(self.sp)).root
        for command in ("fetch", "renew"):
            err = io.StringIO()
            argv = [command, "--secret", "s", "--endpoint",
                    "http://kms.example:9311", "--tsm-root", root]
            if command == "renew":
                argv += ["--out", os.path.join(self.tmp, "k")]
            rc = tee_guest.main(argv, stdout=io.BytesIO(), stderr=err)
            self.assertEqual(1, rc, err.getvalue())
            self.assertIn("insecure_endpoint", err.getvalue())
        self.assertEqual(0, self.service.challenges)
        # --insecure-http lets it through (to a closed port here).
        err = io.StringIO()
        rc = tee_guest.main(["fetch", "--secret", "s", "--endpoint",
                             "http://192.0.2.1:9", "--insecure-http",
                             "--timeout", "0.2", "--tsm-root", root],
                            stdout=io.BytesIO(), stderr=err)
        self.assertEqual(tee_guest.EXIT_NETWORK, rc, err.getvalue())
        self.assertNotIn("insecure_endpoint", err.getvalue())

    def test_unusable_collateral_file_spends_no_nonce(self) -> None:
        missing = os.path.join(self.tmp, "missing.json")
        not_json = os.path.join(self.tmp, "collateral.txt")
        a_list = os.path.join(self.tmp, "list.json")
        with open(not_json, "w") as f:
            f.write("tcb_info: yes")
        with open(a_list, "w") as f:
            f.write("[]")
        for path, code in ((missing, "collateral_unreadable"),
                           (not_json, "collateral_invalid"),
                           (a_list, "collateral_invalid")):
            with self.subTest(code=code):
                rc, out, err = self._run("--collateral", path)
                self.assertEqual(1, rc)
                self.assertIn(code, err)
                self.assertEqual(b"", out)
        self.assertEqual(set(), self.service.nonces)
        self.assertEqual([], self.service.released)

    def test_usage_error(self) -> None:
        err = io.StringIO()
        with fixtures.MonkeyPatch("sys.stderr", err):
            rc = tee_guest.main(["fetch", "--secret", "x"])
        self.assertEqual(1, rc)


class TestRenew(_Base):
    """Leases and ``tee-guest renew`` on a clock the test controls."""

    NOW = 1_900_000_000

    def setUp(self) -> None:
        super().setUp()
        self.now = float(self.NOW)
        self.root = self.useFixture(configfs.FakeConfigfsTsm(self.sp)).root
        self.key_file = os.path.join(self.tmp, "disk.key")
        self.lease_file = self.key_file + ".lease"
        self.marker = os.path.join(self.tmp, "on-failure")
        self.service.lease = (60, self.NOW + 60)

    def _main(self, command: str, *extra: str,
              endpoint: str | None = None) -> tuple[int, str]:
        err = io.StringIO()
        argv = [command, "--secret", self.secret_id,
                "--endpoint", endpoint or self.server.url,
                "--tsm-root", self.root, "--timeout", "10",
                "--out", self.key_file, *extra]
        rc = tee_guest.main(argv, stdout=io.BytesIO(), stderr=err,
                            clock=lambda: self.now)
        return rc, err.getvalue()

    def _on_failure(self) -> list[str]:
        # No shell: the command and its arguments, as an operator gives.
        script = ("import os, sys; open(sys.argv[1], 'w').write("
                  "os.environ['TEE_GUEST_FAILURE_CODE'] + ' ' + "
                  "os.environ['TEE_GUEST_KEY_FILE'])")
        return ["--on-failure",
                f"{sys.executable} -c \"{script}\" {self.marker}"]

    def _lease_doc(self) -> dict[str, Any]:
        with open(self.lease_file) as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    def _fetched(self) -> None:
        rc, err = self._main("fetch")
        self.assertEqual(0, rc, err)
        self.assertIn("max_age 60 s", err)
        self.assertEqual({"secret_id": self.secret_id, "max_age": 60,
                          "expires_at": self.NOW + 60,
                          "lease_expires_at": guest.iso_time(
                              self.NOW + 60)}, self._lease_doc())
        self.assertEqual(0o600, stat.S_IMODE(os.stat(self.lease_file)
                                             .st_mode))

    def test_renew_attests_again_and_extends_the_lease(self) -> None:
        self._fetched()
        self.now += 30
        self.service.lease = (60, self.NOW + 90)
        rc, err = self._main("renew", *self._on_failure())
        self.assertEqual(0, rc, err)
        self.assertIn("renewed", err)
        # A whole new attestation, saying it is a renewal (for the audit).
        self.assertEqual([None, True], self.service.renewals)
        self.assertEqual(2, self.service.challenges)
        with open(self.key_file, "rb") as f:
            self.assertEqual(self.secret, f.read())
        self.assertEqual(0o600, stat.S_IMODE(os.stat(self.key_file)
                                             .st_mode))
        self.assertEqual(self.NOW + 90, self._lease_doc()["expires_at"])
        self.assertFalse(os.path.exists(self.marker))
        self.assertEqual([], [n for n in os.listdir(self.tmp)
                              if ".tmp-" in n])

    def test_refusal_drops_the_key_and_runs_the_action(self) -> None:
        self._fetched()
        self.service.refuse = (403, "tcb_below_floor", "below the floor")
        rc, err = self._main("renew", *self._on_failure())
        self.assertEqual(3, rc, err)
        self.assertIn("[tcb_below_floor]", err)
        self.assertIn("overwritten and removed", err)
        # Dropped although the lease still ran: the service said no.
        self.assertFalse(os.path.exists(self.key_file))
        self.assertFalse(os.path.exists(self.lease_file))
        with open(self.marker) as f:
            self.assertEqual(f"tcb_below_floor {self.key_file}", f.read())

    def test_unreachable_service_keeps_the_key_until_the_lease_ends(
            self) -> None:
        self._fetched()
        closed = f"http://127.0.0.1:{_closed_port()}"
        self.now += 59
        rc, err = self._main("renew", *self._on_failure(), endpoint=closed)
        self.assertEqual(4, rc, err)
        self.assertIn("is kept", err)
        self.assertTrue(os.path.exists(self.key_file))
        self.assertFalse(os.path.exists(self.marker))
        # A spent nonce is no refusal of this guest either, nor is an
        # answer that is not the release contract's verdict (a 404 from a
        # proxy or a barbican-api without the filter, a verifier that
        # failed on the service's side, 429, 5xx): try again (5).
        for status, code in ((403, "nonce_expired"), (404, "http_404"),
                             (403, "evidence_verifier_error"),
                             (429, "rate_limited"),
                             (503, "database_unavailable")):
            self.service.refuse = (status, code, "not a verdict")
            rc, err = self._main("renew", *self._on_failure())
            self.assertEqual(tee_guest.EXIT_RETRY, rc, err)
            self.assertIn("is kept", err)
            self.assertTrue(os.path.exists(self.key_file), code)
            self.assertFalse(os.path.exists(self.marker))
        # A request the service found wrong (a 400) is no verdict either:
        # kept, exit 1 (not 3, which for renew means the key is gone).
        self.service.refuse = (400, "evidence_invalid", "bad evidence")
        rc, err = self._main("renew", *self._on_failure())
        self.assertEqual(tee_guest.EXIT_ERROR, rc, err)
        self.assertTrue(os.path.exists(self.key_file))
        # Once the lease has ended, any failure drops the key: exit 3,
        # the key is gone.
        self.now += 1
        rc, err = self._main("renew", *self._on_failure(), endpoint=closed)
        self.assertEqual(tee_guest.EXIT_REFUSED, rc, err)
        self.assertIn("its lease ended", err)
        self.assertFalse(os.path.exists(self.key_file))
        self.assertFalse(os.path.exists(self.lease_file))
        with open(self.marker) as f:
            self.assertEqual(f"network_error {self.key_file}", f.read())

    def test_lease_is_read_from_the_encrypted_release_only(self) -> None:
        # A host that edits the plain answer is caught.
        for plain in ({"max_age": 3600},
                      {"lease_expires_at": guest.iso_time(self.NOW + 999)}):
            with self.subTest(plain=plain):
                self.service.plain_lease = plain
                rc, err = self.main_fetch_to_stdout()
                self.assertEqual(1, rc, err)
                self.assertIn("lease_mismatch", err)
        # Stripping the plain fields changes nothing: the header rules.
        self.service.plain_lease = {"max_age": None,
                                    "lease_expires_at": None}
        rc, err = self.main_fetch_to_stdout()
        self.assertEqual(0, rc, err)
        self.assertIn("max_age 60 s", err)

    def main_fetch_to_stdout(self) -> tuple[int, str]:
        err = io.StringIO()
        rc = tee_guest.main(["fetch", "--secret", self.secret_id,
                             "--endpoint", self.server.url,
                             "--tsm-root", self.root],
                            stdout=io.BytesIO(), stderr=err,
                            clock=lambda: self.now)
        return rc, err.getvalue()

    def test_guest_clock_never_lengthens_the_lease(self) -> None:
        header = {"tee_max_age": 60, "tee_lease_exp": self.NOW + 60}
        # The guest's clock behind the service's: its own receipt + 60.
        lease = guest.lease_from(header, {}, self.NOW - 3600)
        self.assertEqual(self.NOW - 3540, lease.expires_at)
        # Ahead: the service's expiry.
        lease = guest.lease_from(header, {}, self.NOW + 10)
        self.assertEqual(self.NOW + 60, lease.expires_at)
        self.assertIsNone(guest.lease_from({}, {}, self.NOW))
        for bad in ({"tee_max_age": 60}, {"tee_max_age": True,
                                          "tee_lease_exp": 5},
                    {"tee_max_age": 0, "tee_lease_exp": 5}):
            with self.subTest(header=bad):
                exc = self.assertRaises(guest.GuestError, guest.lease_from,
                                        bad, {}, self.NOW)
                self.assertEqual("lease_mismatch", exc.code)

    def test_no_lease_no_lease_file(self) -> None:
        self.service.lease = None
        with open(self.lease_file, "w") as f:
            f.write("stale")
        rc, err = self._main("fetch")
        self.assertEqual(0, rc, err)
        self.assertNotIn("lease", err)
        self.assertFalse(os.path.exists(self.lease_file))
        self.service.refuse = (503, "unavailable", "try later")
        rc, err = self._main("renew")
        self.assertEqual(tee_guest.EXIT_RETRY, rc, err)
        self.assertIn("no lease", err)
        self.assertTrue(os.path.exists(self.key_file))


class TestGuestPieces(base.TestCase):

    def test_report_data(self) -> None:
        key = guest.make_key()
        nonce = os.urandom(32)
        text = base64.urlsafe_b64encode(nonce).decode()
        thumb = hashlib.sha256(json.dumps(
            {"crv": "P-384", "kty": "EC", "x": key["x"], "y": key["y"]},
            separators=(",", ":"), sort_keys=True).encode()).digest()
        expected = hashlib.sha512(nonce + thumb).digest()
        self.assertEqual(expected, guest.report_data(text, key))
        self.assertEqual(expected, guest.report_data(text.rstrip("="), key))
        self.assertEqual(64, len(expected))

    def test_bad_nonce(self) -> None:
        key = guest.make_key()
        for nonce in ("not base64!", ""):
            exc = self.assertRaises(guest.GuestError, guest.report_data,
                                    nonce, key)
            self.assertEqual("bad_nonce", exc.code)

    def test_public_jwk_has_no_private_part(self) -> None:
        doc = guest.public_jwk(guest.make_key())
        self.assertEqual({"kty", "crv", "x", "y"}, set(doc))
        self.assertEqual("P-384", doc["crv"])

    def test_tdx_evidence(self) -> None:
        ev = guest.build_evidence(tsm.Report("tdx_guest", b"quote", None, 1))
        self.assertEqual({"format": "intel-tdx-quote",
                          "quote": base64.b64encode(b"quote").decode()}, ev)

    def test_tdx_evidence_with_collateral(self) -> None:
        collateral = {"tcb_info": "{}", "qe_identity": "{}"}
        ev = guest.build_evidence(tsm.Report("tdx_guest", b"quote", None, 1),
                                  collateral)
        self.assertEqual({"format": "intel-tdx-quote",
                          "quote": base64.b64encode(b"quote").decode(),
                          "collateral": collateral}, ev)

    def test_snp_evidence_without_auxblob(self) -> None:
        ev = guest.build_evidence(tsm.Report("sev_guest", b"r", None, 1))
        self.assertEqual({"format": "amd-sev-snp-report",
                          "report": base64.b64encode(b"r").decode()}, ev)

    def test_decrypt_wrong_key(self) -> None:
        key = guest.make_key()
        token = jwc_jwe.JWE(b"secret", protected=json.dumps(
            {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
        token.add_recipient(key)
        compact = token.serialize(compact=True)
        self.assertEqual(b"secret", guest.decrypt(compact, key))
        exc = self.assertRaises(guest.GuestError, guest.decrypt, compact,
                                guest.make_key())
        self.assertEqual("jwe_invalid", exc.code)
        exc = self.assertRaises(guest.GuestError, guest.decrypt, "x.y",
                                key)
        self.assertEqual("jwe_invalid", exc.code)

    def test_decrypt_refuses_other_algorithms(self) -> None:
        key = guest.make_key()
        token = jwc_jwe.JWE(b"secret", protected=json.dumps(
            {"alg": "ECDH-ES", "enc": "A256GCM"}))
        token.add_recipient(key)
        exc = self.assertRaises(guest.GuestError, guest.decrypt,
                                token.serialize(compact=True), key)
        self.assertEqual("jwe_invalid", exc.code)


class TestTEEClient(_Base):

    def test_challenge(self) -> None:
        client = rest.TEEClient(self.server.url + "/v1/")
        nonce, expires = client.challenge(self.secret_id)
        self.assertEqual(32, len(_b64url_decode(nonce)))
        self.assertEqual("2030-01-01T00:00:00Z", expires)

    def test_policies_with_headers(self) -> None:
        client = rest.TEEClient(self.server.url,
                                headers={"X-Auth-Token": TOKEN})
        made = client.create_policy({"name": "p", "tee": "amd-sev-snp"})
        self.assertIn("policy_ref", made)
        self.assertEqual([dict(name="p", tee="amd-sev-snp", id=made["id"])],
                         client.list_policies())
        self.assertEqual("p", client.get_policy(made["id"])["name"])
        bound = client.bind_secret(self.secret_id, made["id"])
        self.assertEqual(made["id"], bound["policy_id"])
        self.assertIsNone(client.delete_policy(made["id"]))
        exc = self.assertRaises(rest.TEEClientError, client.get_policy,
                                made["id"])
        self.assertEqual((404, "policy_not_found"), (exc.status, exc.code))

    def test_policies_with_keystoneauth_session(self) -> None:
        sess = ksa_session.Session(
            auth=token_endpoint.Token(self.server.url, TOKEN))
        client = rest.TEEClient(self.server.url, session=sess)
        made = client.create_policy({"name": "q"})
        self.assertEqual("q", client.get_policy(made["id"])["name"])
        self.assertEqual(1, len(client.list_policies()))

    def test_error_body_parsed(self) -> None:
        client = rest.TEEClient(self.server.url)
        exc = self.assertRaises(rest.TEEClientError, client.list_policies)
        self.assertEqual(401, exc.status)
        self.assertEqual("unauthorized", exc.code)
        self.assertEqual("no valid token", exc.message)
        self.assertIn("HTTP 401", str(exc))

    def test_error_body_not_json(self) -> None:
        client = rest.TEEClient(self.server.url,
                                headers={"X-Auth-Token": TOKEN})
        exc = self.assertRaises(rest.TEEClientError, client.get_policy,
                                "broken")
        self.assertEqual((500, "http_500"), (exc.status, exc.code))

    def test_network_error(self) -> None:
        for sess in (None, ksa_session.Session()):
            client = rest.TEEClient(f"http://127.0.0.1:{_closed_port()}",
                                    session=sess, timeout=5)
            exc = self.assertRaises(rest.TEEClientError, client.challenge,
                                    "s")
            self.assertIsNone(exc.status)
            self.assertEqual("network_error", exc.code)
            self.assertIn("127.0.0.1", exc.message)

    def test_bad_endpoint(self) -> None:
        self.assertRaises(ValueError, rest.TEEClient, "kms:9311")
