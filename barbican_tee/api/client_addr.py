"""The client address the per-client rate limit counts, behind proxies.

Behind a load balancer every connection comes from the balancer, so
``REMOTE_ADDR`` alone would put every guest in one budget. The address a
proxy forwards is believed only from a proxy the operator trusts
(``[tee_api] trusted_proxies``, addresses or CIDRs; empty by default):

* the immediate peer (the connection's address) not trusted: the peer is
  the client, whatever the headers say;
* the peer trusted: the header it writes (``[tee_api] forwarded_header``,
  ``X-Forwarded-For`` or RFC 7239 ``Forwarded``; the other one is
  ignored, since a client could send it through a proxy that does not
  touch it) is read from the right, skipping trusted addresses; the
  first untrusted one is the client. Entries to its left were written by
  the client itself and are never used.

oslo.middleware's ``HTTPProxyToWSGI`` (``http_proxy_to_wsgi``, in Barbican's
pipelines) is no help here: with ``[oslo_middleware]
enable_proxy_headers_parsing`` it copies the whole ``X-Forwarded-For``
value, or the left-most ``Forwarded`` ``for=``, into ``REMOTE_ADDR``
without asking who sent it. The ``tee_peer`` filter, placed before it,
keeps the connection's own address in :data:`PEER_KEY`, which is read
here instead of ``REMOTE_ADDR``.

Without ``tee_peer`` in front (:data:`PEER_KEY` absent) an error is logged
once per process, and ``REMOTE_ADDR`` is used only for a request that
carries neither ``X-Forwarded-For`` nor ``Forwarded`` (the only headers
``http_proxy_to_wsgi`` rewrites it from); a request that carries one is
counted in the shared bucket ``unknown``. So is any peer or forwarded
value that is not an IP address, and a unix-socket peer (empty address)
unless ``trusted_proxies`` lists the literal ``unix``. IPv6 clients are
counted per prefix (``[tee_api] client_ipv6_prefix``, 64 by default):
one host usually holds a whole /64.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
import ipaddress
from typing import Any
from typing import Literal

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Any], Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# ``unix`` in trusted_proxies: a peer on a unix socket (no address).
UNIX: Literal["unix"] = "unix"
Trusted = Network | Literal["unix"]
# The one bucket of every client whose address is not known for sure.
UNKNOWN = "unknown"

# Set by tee_peer; a client cannot write a WSGI environ key that is not an
# HTTP_* header.
PEER_KEY = "openstack_tee.peer_addr"
HEADERS = {"x-forwarded-for": "HTTP_X_FORWARDED_FOR",
           "forwarded": "HTTP_FORWARDED"}


class PeerFilter:
    """``tee_peer``: keep the connection's address.

    Placed before a proxy middleware that may rewrite ``REMOTE_ADDR``.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # The outermost tee_peer saw the server's value: keep it.
        environ.setdefault(PEER_KEY, environ.get("REMOTE_ADDR", ""))
        return self.app(environ, start_response)

    @classmethod
    def factory(cls, global_config: dict[str, str],
                **local_config: str) -> Callable[[WSGIApp], PeerFilter]:
        return cls


def parse_trusted(values: Iterable[str]) -> list[Trusted]:
    """``trusted_proxies`` as networks, or ``unix``.

    ValueError names a bad entry.
    """
    out: list[Trusted] = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        if value.lower() == UNIX:
            out.append(UNIX)
            continue
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(
                f"[tee_api] trusted_proxies: {value!r} is not an address "
                "or a CIDR") from None
    return out


def _address(text: str) -> Address | None:
    """An address as a proxy writes it, or None.

    ``[v6]:port``, ``v4:port``, a quoted RFC 7239 node; None for anything
    else (``unknown``, obfuscated ``_names``).
    """
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _chain(environ: dict[str, Any], header: str) -> list[str]:
    """The header's addresses, left to right (client first)."""
    value = str(environ.get(HEADERS[header], ""))
    if not value.strip():
        return []
    if header == "x-forwarded-for":
        return value.split(",")
    out = []
    for element in value.split(","):
        node = ""
        for pair in element.split(";"):
            key, _, val = pair.partition("=")
            if key.strip().lower() == "for":
                node = val
        out.append(node)
    return out


def _trusted(addr: Address | None, trusted: Sequence[Trusted]) -> bool:
    return addr is not None and any(
        not isinstance(net, str) and addr.version == net.version
        and addr in net for net in trusted)


_no_peer_logged = False


def _log_no_peer() -> None:
    global _no_peer_logged
    if not _no_peer_logged:
        _no_peer_logged = True
        LOG.error("openstack-tee: the tee_peer filter is not in front of "
                  "this pipeline: requests carrying X-Forwarded-For or "
                  "Forwarded are all counted as one client, 'unknown'. "
                  "Put tee_peer at the front of the pipeline (before "
                  "tee_public and http_proxy_to_wsgi) in api-paste.ini.")


def _bucket(addr: Address, ipv6_prefix: int) -> str:
    if isinstance(addr, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((addr, ipv6_prefix), strict=False))
    return str(addr)


def client_address(environ: dict[str, Any], trusted: Sequence[Trusted],
                   header: str = "x-forwarded-for",
                   ipv6_prefix: int = 128) -> str:
    """The bucket a request's per-client budget is counted under.

    An IPv4 address, an IPv6 address (``ipv6_prefix`` 128) or prefix
    (``2001:db8::/64``), or :data:`UNKNOWN`.
    """
    if PEER_KEY in environ:
        raw = str(environ[PEER_KEY] or "")
    else:
        _log_no_peer()
        if any(environ.get(h) for h in HEADERS.values()):
            return UNKNOWN
        raw = str(environ.get("REMOTE_ADDR") or "")
    current: Address | None
    if not raw.strip() or raw.startswith(("unix:", "/")):
        # A unix socket: only a proxy there, if trusted, says who.
        if UNIX not in trusted:
            return UNKNOWN
        current = None
    else:
        current = _address(raw)
        if current is None:
            return UNKNOWN
    if current is None or _trusted(current, trusted):
        for entry in reversed(_chain(environ, header)):
            addr = _address(entry)
            if addr is None:
                # A trusted proxy wrote something that is no address: the
                # request stays with that proxy's budget.
                break
            current = addr
            if not _trusted(addr, trusted):
                break
    return UNKNOWN if current is None else _bucket(current, ipv6_prefix)
