"""A per-process bound around calls into endorsement source plugins.

The release route takes no token: anyone may present a report, and the
chip id and TCB an SNP report names (or a TDX quote) are read before its
signature is checked. An endorsement source that asks a network service
(a site's KDS proxy, say) would then make one outgoing request per
forged report: an amplifier. :class:`BoundedSource` wraps each enabled
source (unless its class sets ``bounded = False``) with:

* a small LRU cache of the answers found, keyed by (source, what was
  asked: chip id, TCB and signer, or the quote's digest), each kept for
  ``[tee_attestation] endorsement_cache_ttl`` seconds; "not found" and
  errors are not cached, so that an endorsement made available later is
  used at once (a CRL answer, even "no CRL", is cached: it is asked for
  every SNP report; a source without CRLs is not asked at all);
* at most ``endorsement_source_concurrency`` calls into the source at a
  time, and at most ``endorsement_source_calls_per_minute`` calls (cache
  misses) a minute, per process and source. Beyond either the release is
  refused with ``endorsement_source_busy`` (answered 503: try later),
  never waited for.

A source's class may narrow this with ``bound_policy``
(:class:`BoundPolicy`): which methods' answers are cached, for how long
at most (an answer's own expiry), and whether the concurrency and
per-minute limits apply. The built-in ``database`` source, local and
cheap, has its VCEKs cached (never past their notAfter), no limits, and
everything else (its CRLs: revocation applies at once) read on every call.

What a source answers is still verified against the trust roots by the
format's verifier; the cache adds no trust either.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
import datetime
import hashlib
import threading
import time
from typing import Any
from typing import ClassVar
from typing import TypeVar

from oslo_config import cfg

from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod

_T = TypeVar("_T")


class SourceBusy(errors.VerificationFailed):
    """The endorsement source's bound is reached: refused, try later."""

    code = "endorsement_source_busy"


# The interface methods whose answers the bound may cache (the others,
# tdx_collateral_verified, go straight through).
CACHEABLE = frozenset({"snp_endorsement", "snp_crls", "tdx_collateral",
                       "tdx_collateral_number", "tdx_collateral_crls"})


@dataclasses.dataclass(frozen=True)
class BoundPolicy:
    """How the bound treats one source (its class's ``bound_policy``)."""

    # Methods whose answers are cached for [tee_attestation]
    # endorsement_cache_ttl; the others call the source every time.
    cached: frozenset[str] = CACHEABLE
    # Whether calls into the source (cache misses) count against
    # endorsement_source_concurrency and _calls_per_minute.
    limited: bool = True
    # Per cached method: when (wall clock, aware) an answer stops being
    # usable, so that it is never kept past it; None: not kept at all.
    keep_until: Mapping[
        str, Callable[[Any], datetime.datetime | None]] = (
            dataclasses.field(default_factory=dict))

    def __post_init__(self) -> None:
        # A misspelt method would silently not be cached.
        unknown = (set(self.cached) | set(self.keep_until)) - CACHEABLE
        if unknown:
            raise ValueError(f"not cacheable: {sorted(unknown)}")


DEFAULT_POLICY = BoundPolicy()


def policy_of(source: evidence_mod.EndorsementSource) -> BoundPolicy:
    """The :class:`BoundPolicy` the source's class declares."""
    policy = getattr(type(source), "bound_policy", DEFAULT_POLICY)
    if not isinstance(policy, BoundPolicy):
        raise TypeError(f"{type(source).__name__}.bound_policy is not a "
                        "source_bound.BoundPolicy")
    return policy


class BoundedSource(evidence_mod.EndorsementSource):
    """An endorsement source behind a cache and a concurrency/rate bound."""

    name: ClassVar[str] = "bounded"

    def __init__(self, inner: evidence_mod.EndorsementSource,
                 conf: cfg.ConfigOpts,
                 clock: Callable[[], float] = time.monotonic,
                 policy: BoundPolicy | None = None) -> None:
        super().__init__(conf)
        group = conf.tee_attestation
        self.inner = inner
        self.policy = policy if policy is not None else policy_of(inner)
        self.source_name = type(inner).name
        self._ttl = float(group.endorsement_cache_ttl)
        self._size = int(group.endorsement_cache_size)
        self._per_minute = float(group.endorsement_source_calls_per_minute)
        self._clock = clock
        self._slots = threading.BoundedSemaphore(
            int(group.endorsement_source_concurrency))
        # key -> (expires at, answer), least recently used first.
        self._cache: collections.OrderedDict[
            tuple[Any, ...], tuple[float, Any]] = collections.OrderedDict()
        # Token bucket: at most a minute's calls at once, refilled evenly.
        self._tokens = self._per_minute
        self._filled_at = clock()
        self._lock = threading.Lock()

    def snp_endorsement(self, chip_id: bytes, reported_tcb: int,
                        signer: str) -> bytes | None:
        return self._call("snp_endorsement",
                          ("snp", bytes(chip_id), int(reported_tcb),
                           str(signer)),
                          lambda: self.inner.snp_endorsement(
                              chip_id, reported_tcb, signer))

    def tdx_collateral(self, quote: bytes) -> str | None:
        return self._call("tdx_collateral",
                          ("tdx", hashlib.sha256(quote).digest()),
                          lambda: self.inner.tdx_collateral(quote))

    def _overrides(self, method: str) -> bool:
        """Whether the source answers ``method`` itself (else: nothing)."""
        return getattr(type(self.inner), method) is not getattr(
            evidence_mod.EndorsementSource, method)

    def tdx_collateral_number(self, quote: bytes) -> int | None:
        if not self._overrides("tdx_collateral_number"):
            return None  # the base class's answer, without a token
        return self._call("tdx_collateral_number",
                          ("tdx-number", hashlib.sha256(quote).digest()),
                          lambda: self.inner.tdx_collateral_number(quote))

    def tdx_collateral_crls(self, quote: bytes) -> list[bytes]:
        if not self._overrides("tdx_collateral_crls"):
            return []  # the base class's answer, without a token
        return self._call("tdx_collateral_crls",
                          ("tdx-crls", hashlib.sha256(quote).digest()),
                          lambda: self.inner.tdx_collateral_crls(quote))

    def tdx_collateral_verified(self, quote: bytes, collateral: str) -> None:
        # After verification only (no amplifier): straight through.
        self.inner.tdx_collateral_verified(quote, collateral)

    def snp_crls(self, product: str) -> list[bytes]:
        # Every method of the interface goes to the source: one left to
        # the base class would answer "nothing" (no CRL: no revocation).
        # Asked for every SNP report: a source without CRLs costs no
        # token, and an answer (no CRL included) is kept for the TTL.
        if not self._overrides("snp_crls"):
            return []
        return self._call("snp_crls", ("crls", str(product)),
                          lambda: self.inner.snp_crls(product),
                          cache_empty=True)

    def _cached(self, key: tuple[Any, ...], now: float) -> Any:
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                return None
            if found[0] <= now:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return found[1]

    def _take_token(self, now: float) -> bool:
        with self._lock:
            elapsed = max(0.0, now - self._filled_at)
            self._filled_at = now
            self._tokens = min(self._per_minute,
                               self._tokens + elapsed * self._per_minute
                               / 60.0)
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True

    def _busy(self, why: str) -> SourceBusy:
        return SourceBusy(
            f"the endorsement source {self.source_name} {why}; try again "
            "later (or send the endorsement with the evidence)",
            code=SourceBusy.code)

    def _call(self, method: str, key: tuple[Any, ...],
              call: Callable[[], _T], cache_empty: bool = False) -> _T:
        cached = method in self.policy.cached
        now = self._clock()
        if cached:
            hit = self._cached(key, now)
            if hit is not None:
                answer: _T = hit
                return answer
        if self.policy.limited:
            if not self._take_token(now):
                raise self._busy("was asked too often in the last minute")
            if not self._slots.acquire(blocking=False):
                raise self._busy("has too many calls in progress")
            try:
                answer = call()
            finally:
                self._slots.release()
        else:
            answer = call()
        if cached and (answer or (cache_empty and answer is not None)):
            life = self._ttl
            until = self.policy.keep_until.get(method)
            if until is not None:
                # Never kept past the answer's own expiry.
                expires = until(answer)
                if expires is None:
                    return answer
                life = min(life, (expires - datetime.datetime.now(
                    datetime.UTC)).total_seconds())
            if life > 0 and self._size > 0:
                with self._lock:
                    self._cache[key] = (self._clock() + life, answer)
                    self._cache.move_to_end(key)
                    while len(self._cache) > self._size:
                        self._cache.popitem(last=False)
        return answer


def bound(source: evidence_mod.EndorsementSource,
          conf: cfg.ConfigOpts) -> evidence_mod.EndorsementSource:
    """``source`` behind a :class:`BoundedSource`, unless it opts out."""
    if not getattr(type(source), "bounded", True):
        return source
    return BoundedSource(source, conf)
