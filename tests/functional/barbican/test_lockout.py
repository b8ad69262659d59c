"""Anonymous callers cannot lock the genuine guest out (issue 10, item 8).

A real barbican-api (gunicorn, 2 gevent workers) with low limits. The
attacker knows the secret's id and speaks from other loopback addresses
(all of 127.0.0.0/8 is local on Linux, and the server sees the connection's
source as REMOTE_ADDR); every attack has the genuine guest's release next
to it as the positive control.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import socket
import string
import subprocess
import time
from typing import Any
import uuid

import fixtures
from jwcrypto import jwk
import requests
from requests import adapters

from barbican_tee.api import nonce as nonce_mod
from barbican_tee.client import guest
from barbican_tee.plugin import keyring
from barbican_tee import server
from openstack_tee_demo.sp_model import snp as sp_model
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import test_release

PER_SECRET = 3
PER_CLIENT = 40


class _SourceAdapter(adapters.HTTPAdapter):
    """Connections from one local source address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def _session(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _SourceAdapter(source))
    # One connection per request: threads share these sessions, and a
    # kept-alive connection the server closes (gunicorn's keep-alive
    # timeout) just as a POST goes out on it is a reset on the client's
    # side, not an answer of the server's.
    session.headers["Connection"] = "close"
    return session


def _respell(nonce: str) -> str:
    """The same bytes, with an unused bit of the last character set.

    A nonce's 41 bytes leave 2 of its 55 characters' 330 bits unused.
    """
    digits = string.ascii_uppercase + string.ascii_lowercase + string.digits
    digits += "-_"
    return nonce[:-1] + digits[digits.index(nonce[-1]) ^ 1]


class LockoutTest(test_release._ServerTestBase):

    EXTRA_CONF = {"tee_api": {
        "release_rate_per_secret": str(PER_SECRET),
        "release_rate_per_client": str(PER_CLIENT)}}

    # Each test speaks from its own addresses, so that the per-client
    # budget of one test is not spent by another in the same minute.
    def _client(self, last: int) -> requests.Session:
        session = _session(f"127.0.{self.ADDRESS}.{last}")
        self.addCleanup(session.close)
        return session

    ADDRESS = 0

    def setUp(self) -> None:
        super().setUp()
        LockoutTest.ADDRESS += 1

    @staticmethod
    def _fresh_window(seconds: float) -> None:
        """Wait for a new rate window if fewer than ``seconds`` are left."""
        left = 60 - time.time() % 60
        if left < seconds:
            time.sleep(left + 0.2)

    def _challenge(self, client: requests.Session, secret_id: str,
                   **headers: str) -> requests.Response:
        return client.post(f"{self.url}/v1/tee/challenge", timeout=30,
                           json={"secret_id": secret_id}, headers=headers)

    def _release(self, client: requests.Session, secret_id: str,
                 nonce: str | None = None,
                 sp: sp_model.SecureProcessor | None = None,
                 headers: dict[str, str] | None = None, **report: Any
                 ) -> tuple[requests.Response, jwk.JWK]:
        """A release with evidence made for ``nonce`` (a fresh one if None)."""
        sp = sp or self.sp
        if nonce is None:
            resp = self._challenge(client, secret_id)
            self.assertEqual(201, resp.status_code, resp.text)
            nonce = resp.json()["nonce"]
        key = guest.make_key()
        report.setdefault("measurement", test_release.MEASUREMENT)
        raw = sp.report(report_data=guest.report_data(nonce, key), **report)
        pem = base64.encodebytes(sp.vcek_der).decode()
        evidence = {"format": "amd-sev-snp-report",
                    "report": base64.b64encode(raw).decode(),
                    "vcek": "-----BEGIN CERTIFICATE-----\n" + pem
                    + "-----END CERTIFICATE-----\n",
                    "cert_chain": sp.bundle_pem().decode()}
        resp = client.post(f"{self.url}/v1/tee/release", timeout=30,
                           headers=headers or {},
                           json={"secret_id": secret_id, "nonce": nonce,
                                 "evidence": evidence,
                                 "public_key": guest.public_jwk(key)})
        return resp, key

    def _released(self, client: requests.Session, secret_id: str,
                  key: bytes, **kw: Any) -> None:
        resp, guest_key = self._release(client, secret_id, **kw)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def _code(self, resp: requests.Response) -> str:
        self.assertNotIn("jwe", resp.json())
        return str(resp.json()["error"]["code"])

    def _nonce_key(self) -> bytes:
        path = os.path.join(self.server.data_dir, server.TEE_KEK_NAME)
        return keyring.load_key_file(path).derive("nonce")

    # -- the attacks ---------------------------------------------------
    def test_anonymous_flood_does_not_lock_out_the_guest(self) -> None:
        secret_id, key = self._bound_secret()
        self._fresh_window(40)
        attacker, other = self._client(2), self._client(3)
        # X-Forwarded-For naming the guest's address: were it trusted, the
        # flood would be charged to the guest.
        spoof = {"X-Forwarded-For": f"127.0.{self.ADDRESS}.1"}
        seen: list[tuple[int, str]] = []
        for i in range(PER_CLIENT + 6):
            if i % 3 == 0:
                resp = self._challenge(attacker, secret_id, **spoof)
            elif i % 3 == 1:
                resp = attacker.post(
                    f"{self.url}/v1/tee/release", timeout=30, headers=spoof,
                    json={"secret_id": secret_id, "nonce": "A" * 55,
                          "evidence": {"format": "amd-sev-snp-report"},
                          "public_key": guest.public_jwk(guest.make_key())})
            else:
                # An authentic nonce and verified evidence of a guest the
                # owner's policy does not name.
                resp = self._challenge(other, secret_id)
                self.assertEqual(201, resp.status_code, resp.text)
                resp, _ = self._release(
                    attacker, secret_id, nonce=resp.json()["nonce"],
                    headers=spoof, measurement=b"\x05" * 48)
            seen.append((resp.status_code,
                         "" if resp.status_code == 201 else self._code(resp)))
        answered = [s for s in seen if s[0] != 429]
        # Far more anonymous calls for the secret than its budget went
        # through, until the attacker's own address ran out.
        self.assertGreater(len(answered), PER_SECRET * 5)
        self.assertIn((403, "nonce_unknown"), answered)
        self.assertIn((403, "policy_measurement"), answered)
        self.assertEqual((429, "rate_limited"), seen[-1], seen)
        # Neither does another forwarded address get it a fresh budget.
        resp = self._challenge(attacker, secret_id,
                               **{"X-Forwarded-For": "203.0.113.9"})
        self.assertEqual(429, resp.status_code, resp.text)
        # The genuine guest, from its own address, gets its key.
        self._released(self._client(1), secret_id, key)

    def test_per_secret_budget_still_limits_the_genuine_guest(self) -> None:
        secret_id, key = self._bound_secret()
        self._fresh_window(30)
        client = self._client(1)
        for _ in range(PER_SECRET):
            self._released(client, secret_id, key)
        resp, _ = self._release(client, secret_id)
        self.assertEqual(429, resp.status_code, resp.text)
        self.assertEqual("rate_limited", self._code(resp))
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=rate_limited", self._log())
        # Counted only once the evidence met the policy: a bad guest still
        # gets its own refusal, not the budget's.
        resp, _ = self._release(client, secret_id, measurement=b"\x05" * 48)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("policy_measurement", self._code(resp))
        # Another secret's budget is its own.
        other_id, other_key = self._bound_secret()
        self._released(client, other_id, other_key)

    def test_challenges_write_no_row(self) -> None:
        secret_id, _ = self._bound_secret()
        self._fresh_window(20)
        client = self._client(1)
        # The client's rate bucket first: it is per address, not per
        # secret, and is the one row an address may cost in a minute.
        self.assertEqual(201, self._challenge(client, secret_id).status_code)
        before = self._row_counts()
        missing = [str(uuid.uuid4()) for _ in range(10)]
        for secret in [*missing, secret_id, secret_id]:
            resp = self._challenge(client, secret)
            self.assertEqual(201, resp.status_code, resp.text)
            self.assertRegex(resp.json()["nonce"], r"^[A-Za-z0-9_-]{55}$")
        self.assertEqual(before, self._row_counts())
        dump = "\n".join(
            str(row) for table in self.server.table_names()
            for row in self.server.sql(
                f'SELECT * FROM {table}'))  # noqa: S608 - table names
        for secret in missing:
            self.assertNotIn(secret, dump)
        # Positive control: the counts do move when something is written.
        self._bound_secret()
        self.assertNotEqual(before, self._row_counts())

    def _row_counts(self) -> dict[str, int]:
        return {t: self.server.sql(
            f"SELECT count(*) AS n FROM {t}")[0]["n"]  # noqa: S608
            for t in self.server.table_names()}

    def test_forged_and_spent_nonces_are_refused(self) -> None:
        secret_id, key = self._bound_secret()
        other_id, _ = self._bound_secret()
        client = self._client(1)

        def fresh(secret: str = secret_id) -> str:
            resp = self._challenge(client, secret)
            self.assertEqual(201, resp.status_code, resp.text)
            return str(resp.json()["nonce"])

        def flipped(nonce: str, byte: int) -> str:
            raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
            raw[byte] ^= 0x01
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        valid = fresh()
        swapped = next(i for i, c in enumerate(valid) if c.isalpha())
        now = int(time.time())
        cases = [
            ("nonce_unknown", flipped(valid, 12)),  # in the random part
            ("nonce_unknown", flipped(valid, 5)),  # in the expiry
            ("nonce_unknown", valid[:swapped] + valid[swapped].swapcase()
             + valid[swapped + 1:]),
            ("nonce_unknown", fresh(other_id)),
            ("nonce_unknown", nonce_mod.issue(os.urandom(32), secret_id,
                                              now + 300)),
            ("nonce_unknown", "A" * 43),
            ("nonce_expired", nonce_mod.issue(self._nonce_key(), secret_id,
                                              now - 1)),
        ]
        for code, nonce in cases:
            with self.subTest(code=code, nonce=nonce):
                resp, _ = self._release(client, secret_id, nonce=nonce)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertEqual(code, self._code(resp))
        # The nonce all of them were made from still works, once; neither
        # it nor another spelling of its bytes works again.
        self._released(client, secret_id, key, nonce=valid)
        for nonce in (valid, _respell(valid)):
            with self.subTest(spent=nonce):
                resp, _ = self._release(client, secret_id, nonce=nonce)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertEqual("nonce_unknown", self._code(resp))
        # A nonce forged with the service's own key is accepted: the
        # test's forgeries above failed for what they changed, not for
        # how the test made them.
        self._released(client, secret_id, key, nonce=nonce_mod.issue(
            self._nonce_key(), secret_id, now + 300))

    def test_one_nonce_released_once_under_32_concurrent_attempts(
            self) -> None:
        secret_id, key = self._bound_secret()
        self._fresh_window(30)
        nonce = self._challenge(self._client(1), secret_id).json()["nonce"]
        source = f"127.0.{self.ADDRESS}.1"

        def attempt(_: int) -> tuple[requests.Response, jwk.JWK]:
            with _session(source) as session:
                return self._release(session, secret_id, nonce=nonce)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(attempt, range(32)))
        codes = sorted(r.status_code for r, _ in results)
        self.assertEqual([200] + [403] * 31, codes)
        for resp, guest_key in results:
            if resp.status_code == 200:
                self.assertEqual(key, guest.decrypt(resp.json()["jwe"],
                                                    guest_key))
            else:
                self.assertEqual("nonce_unknown", self._code(resp))


class SlowClientTest(base.TestCase):
    """``openstack-tee serve`` answers while slow clients hold connections."""

    WORKERS = 2

    def test_half_open_connections_do_not_block_the_server(self) -> None:
        data = self.useFixture(fixtures.TempDir()).path
        port = server.free_port()
        argv = [base.installed_command("openstack-tee"), "serve", "--port",
                str(port), "--data-dir", data, "--workers", str(self.WORKERS)]
        # TEE_FUNCTIONAL_DB's database (--database-url), or sqlite.
        db_url = self.useFixture(fixture.Database()).url
        if db_url:
            argv += ["--database-url", db_url]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop, proc)
        url = f"http://127.0.0.1:{port}"
        seen = []
        for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
            seen.append(line)
            if url in line:
                break
        else:
            self.fail(f"openstack-tee serve exited: {''.join(seen)}")
        held = []
        # 2*W connections stopped inside their headers, 2*W inside their
        # body: each kept a sync worker waiting until gunicorn's timeout.
        for i in range(4 * self.WORKERS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            self.addCleanup(sock.close)
            head = ("POST /v1/tee/challenge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\n")
            body = json.dumps({"secret_id": str(uuid.uuid4())}).encode()
            if i % 2 == 0:
                sock.sendall(head.encode())
            else:
                sock.sendall(head.encode() + b"Content-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n"
                             + body[:5])
            held.append((sock, i % 2, body))
        time.sleep(1)  # the server has accepted them all
        started = time.monotonic()
        resp = requests.get(f"{url}/v1/tee/policies", timeout=10,
                            headers={"X-Project-Id": "p",
                                     "X-Roles": "member"})
        elapsed = time.monotonic() - started
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertLess(elapsed, 3.0)
        # The held connections were alive and waited on: finishing one of
        # each kind now gets its answer.
        for sock, in_body, body in held[:2]:
            if in_body:
                sock.sendall(body[5:])
            else:
                sock.sendall(b"Content-Length: " + str(len(body)).encode()
                             + b"\r\n\r\n" + body)
            reply = sock.recv(65536)
            self.assertTrue(reply.startswith(b"HTTP/1.1 201"), reply[:200])

    @staticmethod
    def _stop(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
