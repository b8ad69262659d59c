"""Per-client rate limits behind a load balancer (issue 12, finding 6).

A real barbican-api (gunicorn) with ``[tee_api] trusted_proxies =
127.0.0.1`` and oslo.middleware's proxy header parsing on, as an operator
behind a balancer would set it. 127.0.0.1 plays the balancer; clients that
connect directly speak from other loopback addresses (all of 127.0.0.0/8
is local on Linux). The per-client budget is 3 challenges a minute.

A balancer on the same host may instead reach gunicorn on a unix socket
(``UnixSocketProxyTest``): a second gunicorn of the same deployment binds
one, and only ``unix`` in trusted_proxies makes its forwarded header count.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
from typing import Any
import uuid

import requests

from barbican_tee import server
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import test_lockout

PER_CLIENT = 3
CONF = {"tee_api": {"release_rate_per_client": str(PER_CLIENT),
                    "trusted_proxies": "127.0.0.1"},
        # http_proxy_to_wsgi then writes X-Forwarded-For into REMOTE_ADDR.
        "oslo_middleware": {"enable_proxy_headers_parsing": "True"}}


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as a balancer on the same host speaks."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        self.sock = sock


class _Base(base.TestCase):

    PIPELINE: tuple[str, ...] = server.DEFAULT_PIPELINE
    CONF: dict[str, dict[str, str]] = CONF
    # Also a gunicorn of the same deployment on a unix socket.
    UNIX = False
    ADDRESS = 0

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = fixture.BarbicanServer(workers=1, extra_conf=cls.CONF,
                                            paste_filters=cls.PIPELINE)
        cls.server.setUp()
        cls.url = cls.server.url
        if cls.UNIX:
            try:
                cls._start_unix()
            except BaseException:
                cls.server.cleanUp()
                raise

    @classmethod
    def _start_unix(cls) -> None:
        """gunicorn with the same configuration, bound to a unix socket."""
        layout = cls.server.layout
        cls.socket_path = os.path.join(layout.data_dir, "api.sock")
        argv = server.gunicorn_argv(cls.server.port, 1)
        argv[argv.index("--bind") + 1] = f"unix:{cls.socket_path}"
        # A Server whose process is this gunicorn: its stop() ends it.
        unix = server.Server(layout, cls.server.port, 1)
        with open(os.path.join(layout.data_dir, "unix-api.log"),
                  "ab") as log:
            unix.process = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=server.server_env(layout), cwd=layout.data_dir,
                start_new_session=True)
        cls.server.addCleanup(unix.stop)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if unix.process.poll() is not None:
                raise AssertionError("gunicorn on the unix socket exited")
            with contextlib.suppress(OSError):
                if cls._unix_post("/v1/tee/challenge", {})[0] == 400:
                    return
            time.sleep(0.2)
        raise AssertionError("gunicorn on the unix socket did not answer")

    @classmethod
    def _unix_post(cls, path: str, body: Any,
                   **headers: str) -> tuple[int, Any]:
        conn = _UnixConnection(cls.socket_path)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers=dict(headers, **{
                             "Content-Type": "application/json"}))
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.cleanUp()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        # Each test has its own addresses: no budget carries over ...
        type(self).ADDRESS += 1
        # ... nor does the minute end halfway through (a test sends ten
        # requests at most).
        left = 60 - time.time() % 60
        if left < 10:
            time.sleep(left + 0.2)

    def _from(self, last: int) -> requests.Session:
        """A client connecting directly from its own loopback address."""
        session = test_lockout._session(f"127.0.{self.ADDRESS}.{last}")
        self.addCleanup(session.close)
        return session

    def _proxy(self) -> requests.Session:
        """The trusted balancer, 127.0.0.1."""
        session = test_lockout._session("127.0.0.1")
        self.addCleanup(session.close)
        return session

    def _challenge(self, client: requests.Session, **headers: str) -> int:
        resp = client.post(f"{self.url}/v1/tee/challenge", timeout=30,
                           json={"secret_id": str(uuid.uuid4())},
                           headers=headers)
        self.assertIn(resp.status_code, (201, 429), resp.text)
        if resp.status_code == 429:
            self.assertEqual("rate_limited", resp.json()["error"]["code"])
        return resp.status_code

    def _spend(self, client: requests.Session, **headers: Any) -> None:
        for _ in range(PER_CLIENT):
            self.assertEqual(201, self._challenge(client, **headers))
        self.assertEqual(429, self._challenge(client, **headers))

    def _unix_challenge(self, **headers: str) -> int:
        status, body = self._unix_post(
            "/v1/tee/challenge", {"secret_id": str(uuid.uuid4())},
            **headers)
        self.assertIn(status, (201, 429), body)
        if status == 429:
            self.assertEqual("rate_limited", body["error"]["code"])
        return status


class TrustedProxiesTest(_Base):

    def test_spoofed_headers_from_an_untrusted_peer(self) -> None:
        client = self._from(1)
        for i in range(PER_CLIENT):
            self.assertEqual(201, self._challenge(
                client, **{"X-Forwarded-For": f"203.0.113.{i}",
                           "Forwarded": f"for=198.51.100.{i}"}))
        # Every forged address is still this connection's budget.
        self.assertEqual(429, self._challenge(
            client, **{"X-Forwarded-For": "203.0.113.200"}))
        self.assertEqual(429, self._challenge(
            client, **{"Forwarded": "for=198.51.100.200"}))
        # ... and naming another client charges that client nothing.
        self.assertEqual(201, self._challenge(self._from(2)))

    def test_forwarded_clients_get_their_own_budgets(self) -> None:
        proxy = self._proxy()
        first = {"X-Forwarded-For": f"198.51.{self.ADDRESS}.1"}
        self._spend(proxy, **first)
        # Another client behind the same balancer still has its budget.
        second = {"X-Forwarded-For": f"198.51.{self.ADDRESS}.2"}
        self.assertEqual(201, self._challenge(proxy, **second))
        # A direct client is its own address, whatever it sends.
        self.assertEqual(201, self._challenge(self._from(1), **first))

    def test_a_forged_left_most_entry_does_not_help(self) -> None:
        proxy = self._proxy()
        attacker = f"198.51.{self.ADDRESS}.1"
        self._spend(proxy, **{"X-Forwarded-For": attacker})
        # The attacker writes its own X-Forwarded-For; the balancer
        # appends the address it saw: the right-most entry is the client.
        for forged in ("203.0.113.9", "127.0.0.1", "10.1.1.1, 10.1.1.2"):
            self.assertEqual(429, self._challenge(proxy, **{
                "X-Forwarded-For": f"{forged}, {attacker}"}))
        # A Forwarded header the balancer does not write is not read.
        self.assertEqual(429, self._challenge(proxy, **{
            "Forwarded": "for=203.0.113.9", "X-Forwarded-For": attacker}))
        # Positive control: 203.0.113.9 itself does have a budget.
        self.assertEqual(201, self._challenge(proxy, **{
            "X-Forwarded-For": "203.0.113.9"}))


    def test_ipv6_clients_are_counted_per_64(self) -> None:
        proxy = self._proxy()
        net = f"2001:db8:{self.ADDRESS:x}:1"
        self._spend(proxy, **{"X-Forwarded-For": f"{net}::1"})
        # Another address of the same /64 (client_ipv6_prefix) is the same
        # client: one host holds a whole /64.
        for other in (f"{net}:ffff:ffff:ffff:fffe", f"{net}:0:0:0:2"):
            self.assertEqual(429, self._challenge(
                proxy, **{"X-Forwarded-For": other}))
        # The next /64 has its own budget.
        self.assertEqual(201, self._challenge(proxy, **{
            "X-Forwarded-For": f"2001:db8:{self.ADDRESS:x}:2::1"}))


class UnixSocketProxyTest(_Base):
    """The balancer reaches gunicorn on a unix socket: ``unix`` trusted."""

    CONF = {"tee_api": {"release_rate_per_client": str(PER_CLIENT),
                        "trusted_proxies": "unix"},
            "oslo_middleware": {"enable_proxy_headers_parsing": "True"}}
    UNIX = True

    def test_forwarded_clients_on_the_socket(self) -> None:
        first = {"X-Forwarded-For": f"198.51.{self.ADDRESS}.1"}
        for _ in range(PER_CLIENT):
            self.assertEqual(201, self._unix_challenge(**first))
        self.assertEqual(429, self._unix_challenge(**first))
        # Another client behind it has its own budget; the right-most
        # entry is the one the balancer wrote.
        self.assertEqual(201, self._unix_challenge(**{
            "X-Forwarded-For": f"198.51.{self.ADDRESS}.2"}))
        self.assertEqual(429, self._unix_challenge(**{
            "X-Forwarded-For": f"203.0.113.9, 198.51.{self.ADDRESS}.1"}))
        # Over TCP, 127.0.0.1 is not trusted here: the same header from
        # it is that connection's own budget.
        self.assertEqual(201, self._challenge(self._proxy(), **first))

    def test_without_a_header_the_socket_is_one_client(self) -> None:
        # Nothing says who is behind the socket: one shared budget.
        spent = 0
        while self._unix_challenge() == 201:
            spent += 1
            self.assertLessEqual(spent, PER_CLIENT)
        self.assertEqual(429, self._unix_challenge())


class UntrustedUnixSocketTest(_Base):
    """``unix`` not in trusted_proxies: a header on the socket is ignored."""

    UNIX = True

    def test_headers_on_an_untrusted_socket(self) -> None:
        spent = 0
        while self._unix_challenge(**{
                "X-Forwarded-For": f"198.51.{self.ADDRESS}.{spent}"}) == 201:
            spent += 1
            self.assertLessEqual(spent, PER_CLIENT)
        # Every forged address was the one "unknown" budget ...
        self.assertEqual(429, self._unix_challenge(**{
            "X-Forwarded-For": "203.0.113.77"}))
        # ... which a TCP client does not share.
        self.assertEqual(201, self._challenge(self._from(1)))


class WithoutPeerFilterTest(_Base):
    """Without tee_peer, a forwarded header no longer escapes the limit.

    http_proxy_to_wsgi rewrites REMOTE_ADDR from X-Forwarded-For before the
    filter sees it; the filter cannot tell, so every request carrying the
    header is counted in one bucket, ``unknown``. Without the header,
    REMOTE_ADDR is the connection's own.
    """

    PIPELINE = tuple(f for f in server.DEFAULT_PIPELINE if f != "tee_peer")

    def test_forwarded_requests_share_one_budget(self) -> None:
        client = self._from(1)
        self._spend(client)
        # Before the fix each forged address was a fresh budget; now they
        # all share "unknown" (fresh here: PER_CLIENT requests pass).
        for i in range(PER_CLIENT):
            self.assertEqual(201, self._challenge(
                client, **{"X-Forwarded-For": f"203.0.113.{i}"}))
        self.assertEqual(429, self._challenge(
            client, **{"X-Forwarded-For": "203.0.113.200"}))
        # ... from any connection, with either header.
        self.assertEqual(429, self._challenge(
            self._from(2), **{"X-Forwarded-For": "198.51.100.7"}))
        self.assertEqual(429, self._challenge(
            self._from(2), **{"Forwarded": "for=198.51.100.8"}))
        # Positive control: a direct client without the headers is still
        # its own address, with its own budget.
        self.assertEqual(201, self._challenge(self._from(3)))
