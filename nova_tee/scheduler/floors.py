"""The platform TCB floors TEEFilter holds SNP hosts to, read from Barbican.

``GET /v1/tee/floors`` (the effective floor per product: the higher of
barbican.conf's and the one an administrator set) through the suite's
client, kept for ``[tee] floor_cache_ttl`` seconds; each request of a read
waits at most ``[tee] floor_read_timeout`` seconds. Reading fails closed:
Barbican unreachable or answering an error never turns a refusal into a
pass. The last floors read stay in force past their TTL (retried at most
every few seconds); before any were read, :meth:`FloorCache.current`
answers None and TEEFilter refuses every host for SEV-SNP requests.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.client import rest
from nova_tee import barbican
from nova_tee import specs

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

SNP_PRODUCTS = ("milan", "genoa", "turin")
# Seconds between two attempts while Barbican cannot be read.
RETRY_AFTER = 5.0
# product -> effective floor in tee.snp_tcb order (BL, TEE, SNP, UCODE
# and FMC, 0 when the floor has none); a product without one is absent;
# a product Barbican answered an error for maps to UNREADABLE.
Floors = dict[str, tuple[int, ...]]
# Barbican could not give this product's floor (an error entry, e.g.
# tcb_floor_tampered): its hosts are refused, as its releases are.
UNREADABLE: tuple[int, ...] = ()


class FloorReadError(Exception):
    """The floors could not be read (the message says why)."""


def client() -> rest.TEEClient:
    """Barbican's /v1/tee API with nova's service credentials."""
    return barbican.client("nova-scheduler",
                           float(CONF.tee.floor_read_timeout))


def parse(views: list[dict[str, object]]) -> Floors:
    """The SNP products' effective floors of a ``GET /v1/tee/floors``."""
    out: Floors = {}
    seen = set()
    for view in views:
        product = view.get("product")
        seen.add(product)
        if product not in SNP_PRODUCTS:
            continue
        if "error" in view:
            # Never "no floor": that product's hosts are refused.
            error = view["error"]
            LOG.warning("TEEFilter: Barbican cannot give the %s platform "
                        "TCB floor (%s): its hosts are refused for "
                        "amd-sev-snp requests", product,
                        error.get("code") if isinstance(error, dict)
                        else error)
            out[str(product)] = UNREADABLE
            continue
        floor = view.get("effective")
        if floor is None:
            continue
        if not isinstance(floor, dict):
            raise FloorReadError(f"the {product} floor is not an object")
        values = []
        for name in (*specs.TCB_KEYS, "fmc"):
            value = floor.get(name)
            if value is None and name == "fmc":
                value = 0
            if isinstance(value, bool) or not isinstance(value, int):
                raise FloorReadError(f"the {product} floor has no {name}")
            values.append(value)
        out[str(product)] = tuple(values)
    missing = set(SNP_PRODUCTS) - seen
    if missing:
        # An answer that leaves a product out is not "no floor".
        raise FloorReadError("the floors answer lacks "
                             f"{', '.join(sorted(missing))}")
    return out


def fetch() -> Floors:
    try:
        return parse(client().list_floors())
    except rest.TEEClientError as exc:
        raise FloorReadError(f"{exc.code}: {exc.message}") from None


class FloorCache:
    """The floors last read, re-read once they are ``ttl`` seconds old."""

    def __init__(self, reader: Callable[[], Floors] = fetch,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._clock = clock
        # (read at, floors), replaced as a whole.
        self._state: tuple[float, Floors] | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def current(self) -> Floors | None:
        """The floors in force; None if none were ever read."""
        state = self._state
        now = self._clock()
        if state is not None and now - state[0] < CONF.tee.floor_cache_ttl:
            return state[1]
        if now < self._next_try:
            # Barbican failed just now: the last floors read (if any)
            # stay in force.
            return state[1] if state else None
        if state is None:
            # Nothing to fall back on yet: wait for a read in progress
            # rather than refuse this request's every host at startup.
            # A read is bounded by [tee] floor_read_timeout per request
            # (the token request, then the floors).
            if not self._lock.acquire(
                    timeout=2 * float(CONF.tee.floor_read_timeout) + 1):
                return None
            if self._state is not None or self._clock() < self._next_try:
                # Read (or failed) while this request waited.
                self._lock.release()
                return self._state[1] if self._state else None
        elif not self._lock.acquire(blocking=False):
            # Another request is reading them: the last floors stay.
            return state[1]
        try:
            floors = self._reader()
        except Exception as exc:  # noqa: BLE001 - any failure fails closed
            self._next_try = now + min(RETRY_AFTER,
                                       CONF.tee.floor_cache_ttl or
                                       RETRY_AFTER)
            if state is None:
                LOG.error("TEEFilter: cannot read the platform TCB floors "
                          "from Barbican (%s) and none were ever read: "
                          "every host is refused for amd-sev-snp "
                          "requests until they can be", exc)
            else:
                LOG.warning("TEEFilter: cannot read the platform TCB "
                            "floors from Barbican (%s); the floors read "
                            "%.0f s ago stay in force", exc,
                            now - state[0])
            return state[1] if state else None
        finally:
            self._lock.release()
        self._state = (now, floors)
        return floors


CACHE = FloorCache()


def refusal(floors: Floors | None, product: str | None,
            tcb: tuple[int, ...] | None) -> str | None:
    """Why an SNP host fails the floors, or None if it meets them."""
    if floors is None:
        return ("no platform TCB floor could ever be read from Barbican "
                "([tee] barbican_url): refused until one is")
    if product is None or tcb is None:
        # A host whose nova-compute predates tee.snp_product (a rolling
        # upgrade, scheduler first): not held here, so that SNP guests
        # still boot while computes are upgraded. What it says of itself
        # is no proof anyway: Barbican applies the same floors to the
        # attested report at every release, and refuses.
        return None
    if product not in SNP_PRODUCTS:
        # parse() saw every known product: an unknown name is no "no floor".
        return (f"reports an SNP product ({product}) the floors do not "
                "know")
    floor = floors.get(product)
    if floor is None:
        return None
    if floor == UNREADABLE:
        return (f"Barbican cannot give the {product} platform TCB floor "
                "(see GET /v1/tee/floors): refused until it can")
    have = tcb + (0,) * (5 - len(tcb))
    names = (*specs.TCB_KEYS, "fmc")
    low = [names[i] for i in range(5) if have[i] < floor[i]]
    if low:
        return (f"SNP TCB below the {product} platform floor in "
                f"{', '.join(low)}")
    return None
