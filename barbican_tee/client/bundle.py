"""Endorsement bundles: what ``POST /v1/tee/endorsements`` takes.

A bundle is JSON::

    {"version": 1,
     "endorsements": [
        {"kind": "vcek", "der": "<base64 DER>"},
        {"kind": "ask", "pem": "-----BEGIN CERTIFICATE-----..."},
        {"kind": "crl", "der": "<base64 DER>"},
        {"kind": "tdx_collateral", "collateral": {...QuoteCollateralV3...},
         "quote": "<base64 quote, optional: verified with it on import>"}]}

:func:`from_files` builds one from the files as AMD's KDS and Intel's PCS
serve them (a VCEK in DER, ``cert_chain`` in PEM, a CRL in DER or PEM,
QuoteCollateralV3 JSON), recognising each by its content; a file that is
already a bundle is taken as it is. Nothing is verified here: Barbican
verifies every entry against its pinned roots on import.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp_certs

KINDS = ("vcek", "ask", "asvk", "ark", "crl", "tdx_collateral")


class BundleError(ValueError):
    """A file that is no endorsement this module recognises."""


def _cert_kind(cn: str) -> str | None:
    if cn.startswith("ARK-"):
        return "ark"
    if cn.startswith("SEV-VLEK-"):
        return "asvk"
    if cn == "SEV-VCEK":
        return "vcek"
    if cn.startswith("SEV-") and cn not in ("SEV-VLEK",):
        return "ask"
    return None


def items_from_bytes(data: bytes, name: str = "file",
                     quote: bytes | None = None) -> list[dict[str, Any]]:
    """The bundle items one file holds."""
    text = data.lstrip()
    if text.startswith(b"{"):
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise BundleError(f"{name}: not JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("endorsements"),
                                                list):
            return list(doc["endorsements"])
        if isinstance(doc, dict) and "tcb_info" in doc:
            item: dict[str, Any] = {"kind": "tdx_collateral",
                                    "collateral": doc}
            if quote is not None:
                item["quote"] = base64.b64encode(quote).decode()
            return [item]
        raise BundleError(f"{name}: JSON that is neither a bundle nor "
                          "QuoteCollateralV3")
    if b"-----BEGIN X509 CRL-----" in data:
        return [{"kind": "crl", "pem": data.decode()}]
    if text.startswith(b"-----BEGIN CERTIFICATE-----"):
        items = []
        for der in snp_certs._pem_blocks(data):  # noqa: SLF001
            items.append(_der_item(der, name))
        return items
    return [_der_item(data, name)]


def _der_item(der: bytes, name: str) -> dict[str, Any]:
    encoded = base64.b64encode(der).decode()
    try:
        cert = snp_certs.parse_endorsement_cert(der)
        if cert.subject_cn == "SEV-VCEK":
            return {"kind": "vcek", "der": encoded}
    except errors.InvalidInput:
        pass
    try:
        ca = snp_certs.load_ca_certs(der)[0]
        kind = _cert_kind(snp_certs.common_name(ca))
        if kind is not None and kind != "vcek":
            return {"kind": kind, "der": encoded}
    except errors.InvalidInput:
        pass
    try:
        x509.load_der_x509_crl(der)
        return {"kind": "crl", "der": encoded}
    except ValueError:
        pass
    raise BundleError(f"{name}: not a VCEK, an AMD CA certificate, a CRL "
                      "or QuoteCollateralV3")


def from_files(paths: list[str], quote: str | None = None
               ) -> dict[str, Any]:
    """A bundle of every endorsement in ``paths``."""
    raw_quote = None
    if quote is not None:
        with open(quote, "rb") as f:
            raw_quote = f.read()
    items: list[dict[str, Any]] = []
    for path in paths:
        with open(path, "rb") as f:
            items.extend(items_from_bytes(f.read(), path, raw_quote))
    return {"version": 1, "endorsements": items}
