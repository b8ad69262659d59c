"""The client address of the per-client rate limit, behind proxies."""

from __future__ import annotations

from typing import Any
from unittest import mock

from barbican_tee.api import client_addr
from tests import base

LB = "10.0.0.5"


def _env(remote: str, xff: str | None = None,
         fwd: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"REMOTE_ADDR": remote,
                           client_addr.PEER_KEY: remote}
    if xff is not None:
        env["HTTP_X_FORWARDED_FOR"] = xff
    if fwd is not None:
        env["HTTP_FORWARDED"] = fwd
    return env


class ClientAddressTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.trusted = client_addr.parse_trusted(["10.0.0.0/24",
                                                  "2001:db8::1"])

    def addr(self, env: dict[str, Any], header: str = "x-forwarded-for",
             trusted: Any = None) -> str:
        return client_addr.client_address(
            env, self.trusted if trusted is None else trusted, header)

    def test_no_trusted_proxies_headers_ignored(self) -> None:
        env = _env("192.0.2.7", xff="198.51.100.1", fwd="for=198.51.100.2")
        self.assertEqual("192.0.2.7", self.addr(env, trusted=[]))
        self.assertEqual("192.0.2.7",
                         self.addr(env, "forwarded", trusted=[]))

    def test_untrusted_peer_headers_ignored(self) -> None:
        self.assertEqual("192.0.2.7",
                         self.addr(_env("192.0.2.7", xff="198.51.100.1")))

    def test_trusted_peer_right_most_untrusted(self) -> None:
        # The left-most entry is the client's own writing.
        env = _env(LB, xff="6.6.6.6, 198.51.100.1, 10.0.0.9")
        self.assertEqual("198.51.100.1", self.addr(env))
        # Positive control: the forged entry would win if read.
        self.assertEqual("6.6.6.6", self.addr(env, trusted=[
            *self.trusted, *client_addr.parse_trusted(["198.51.100.1"])]))

    def test_trusted_peer_without_header_is_the_proxy(self) -> None:
        self.assertEqual(LB, self.addr(_env(LB)))
        self.assertEqual(LB, self.addr(_env(LB, xff="")))

    def test_garbage_from_the_proxy_stays_with_the_proxy(self) -> None:
        self.assertEqual(LB, self.addr(_env(LB, xff="1.2.3.4, nonsense")))
        self.assertEqual("10.0.0.9",
                         self.addr(_env(LB, xff="junk, 10.0.0.9")))

    def test_forwarded_header(self) -> None:
        env = _env(LB, xff="198.51.100.9", fwd=(
            'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, '
            "for=10.0.0.3;by=10.0.0.5"))
        self.assertEqual("2001:db8:cafe::17", self.addr(env, "forwarded"))
        # The header not configured is never read.
        self.assertEqual("198.51.100.9", self.addr(env))
        self.assertEqual(LB, self.addr(_env(LB, fwd="for=198.51.100.9")))

    def test_ports_and_mapped_addresses(self) -> None:
        self.assertEqual("198.51.100.1",
                         self.addr(_env(LB, xff="198.51.100.1:5555")))
        self.assertEqual("198.51.100.1",
                         self.addr(_env("::ffff:10.0.0.5",
                                        xff="::ffff:198.51.100.1")))
        self.assertEqual("2001:db8::2",
                         self.addr(_env("2001:db8::1", xff="2001:db8::2")))

    def test_peer_key_wins_over_rewritten_remote_addr(self) -> None:
        # http_proxy_to_wsgi put the whole header into REMOTE_ADDR.
        env = _env("6.6.6.6, 198.51.100.1", xff="6.6.6.6, 198.51.100.1")
        env[client_addr.PEER_KEY] = "192.0.2.7"
        self.assertEqual("192.0.2.7", self.addr(env))

    def test_peer_filter_keeps_the_outermost_address(self) -> None:
        seen: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            seen.append(dict(environ))
            return []

        inner = client_addr.PeerFilter.factory({})(app)

        def rewrite(environ: dict[str, Any], start_response: Any) -> Any:
            environ["REMOTE_ADDR"] = "6.6.6.6"
            return inner(environ, start_response)

        client_addr.PeerFilter(rewrite)({"REMOTE_ADDR": "192.0.2.7"}, None)
        self.assertEqual("192.0.2.7", seen[0][client_addr.PEER_KEY])

    def test_bad_trusted_entry_is_refused(self) -> None:
        self.assertRaises(ValueError, client_addr.parse_trusted,
                          ["10.0.0.0/24", "lb.example.org"])
        self.assertEqual([], client_addr.parse_trusted(["", " "]))

    def test_values_that_are_no_address_share_one_bucket(self) -> None:
        long = "x" * 400 + ", 1.2.3.4"
        for peer in (long, "nonsense", "1.2.3.4.5"):
            self.assertEqual("unknown", self.addr(_env(peer)))
        # A trusted proxy forwarding garbage: its own budget.
        self.assertEqual(LB, self.addr(_env(LB, xff="x" * 400)))
        # Positive control: a valid peer is its own bucket.
        self.assertEqual("1.2.3.4", self.addr(_env("1.2.3.4")))

    def test_missing_peer_key(self) -> None:
        with mock.patch.object(client_addr, "_no_peer_logged", False), \
                mock.patch.object(client_addr.LOG, "error") as error:
            # http_proxy_to_wsgi may have rewritten REMOTE_ADDR from the
            # header: not believed.
            env = {"REMOTE_ADDR": "203.0.113.7",
                   "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
            self.assertEqual("unknown", self.addr(env))
            self.assertEqual("unknown", self.addr(
                {"REMOTE_ADDR": "203.0.113.7",
                 "HTTP_FORWARDED": "for=203.0.113.7"}))
            # No header: nothing could have rewritten it.
            self.assertEqual("192.0.2.7",
                             self.addr({"REMOTE_ADDR": "192.0.2.7"}))
            self.assertEqual(1, error.call_count)
            # Positive control: with tee_peer's key the header is ignored
            # and the connection counts.
            env[client_addr.PEER_KEY] = "192.0.2.8"
            self.assertEqual("192.0.2.8", self.addr(env))

    def test_unix_socket_peer(self) -> None:
        unix = client_addr.parse_trusted(["unix", "10.0.0.5"])
        self.assertEqual(["unix"], [t for t in unix if isinstance(t, str)])
        for peer in ("", "unix:/run/barbican.sock"):
            env = _env(peer, xff="6.6.6.6, 198.51.100.1")
            # Not trusted: every client shares one bucket.
            self.assertEqual("unknown", self.addr(env))
            # Trusted: the right-most untrusted forwarded address.
            self.assertEqual("198.51.100.1", self.addr(env, trusted=unix))
            self.assertEqual("unknown", self.addr(_env(peer), trusted=unix))
            self.assertEqual("unknown", self.addr(
                _env(peer, xff="junk"), trusted=unix))
        # "unix" trusts no TCP peer.
        self.assertEqual("192.0.2.7", self.addr(
            _env("192.0.2.7", xff="198.51.100.1"),
            trusted=client_addr.parse_trusted(["unix"])))

    def test_ipv6_prefix_buckets(self) -> None:
        def bucket(remote: str, prefix: int) -> str:
            return client_addr.client_address(
                _env(remote), [], "x-forwarded-for", prefix)
        self.assertEqual("2001:db8:1:2::/64",
                         bucket("2001:db8:1:2:aaaa::1", 64))
        self.assertEqual(bucket("2001:db8:1:2::1", 64),
                         bucket("2001:db8:1:2:ffff:1:2:3", 64))
        self.assertNotEqual(bucket("2001:db8:1:2::1", 64),
                            bucket("2001:db8:1:3::1", 64))
        self.assertEqual("2001:db8:1::/48", bucket("2001:db8:1:2::1", 48))
        self.assertEqual("2001:db8:1:2::1", bucket("2001:db8:1:2::1", 128))
        # IPv4 (and IPv4-mapped) per address.
        self.assertEqual("192.0.2.7", bucket("192.0.2.7", 64))
        self.assertEqual("192.0.2.7", bucket("::ffff:192.0.2.7", 64))
        # Forwarded through a trusted proxy too.
        self.assertEqual("2001:db8:cafe::/64", client_addr.client_address(
            _env(LB, xff="2001:db8:cafe::17"), self.trusted,
            "x-forwarded-for", 64))
