"""The client address of the per-client rate limit, behind proxies."""

from __future__ import annotations

from typing import Any

from barbican_tee.api import client_addr
from tests import base

LB = "10.0.0.5"


def _env(remote: str, xff: str | None = None,
         fwd: str | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"REMOTE_ADDR": remote}
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
