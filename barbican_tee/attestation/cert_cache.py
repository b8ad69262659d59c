"""Parsed CA certificates of SNP evidence, cached by their exact bytes.

Guests send the same ASK/ARK chain with every release; parsing it (and
touching every field, as :func:`snp_certs.load_ca_certs` does so that bad
input fails early) cost as much CPU as the report's signature check. This
caches only the parse: the result for a SHA-256 digest of the exact bytes
the caller sent, so different bytes are parsed anew. Nothing here is
verified or trusted; the verifier checks each certificate's signature,
validity and revocation as before (and caches verified endorsement keys
itself). Bytes that fail to parse are not cached: they fail again, with
the same error, on every request.
"""

from __future__ import annotations

import collections
import hashlib
import threading

from cryptography import x509

from barbican_tee.attestation import snp_certs

_SIZE = 64
_cache: collections.OrderedDict[bytes, tuple[x509.Certificate, ...]] = (
    collections.OrderedDict())
_lock = threading.Lock()


def load_ca_certs(data: bytes) -> list[x509.Certificate]:
    """:func:`snp_certs.load_ca_certs`, parsed once per distinct bytes."""
    key = hashlib.sha256(data).digest()
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return list(hit)
    certs = snp_certs.load_ca_certs(data)
    with _lock:
        _cache[key] = tuple(certs)
        while len(_cache) > _SIZE:
            _cache.popitem(last=False)
    return certs
