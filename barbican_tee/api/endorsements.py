"""The endorsement cache: ``/v1/tee/endorsements`` and its source plugin.

A release needs endorsements the guest may not send: an SNP report's VCEK
(with its ASK), AMD's CRLs, a TDX quote's Intel PCS collateral. They are
kept in the ``tee_endorsements`` table, imported by an administrator (a
bundle fetched from AMD KDS / Intel PCS on a machine with access) or a
service (nova-compute publishing its host's VCEK):

* ``POST /v1/tee/endorsements``: import a bundle (``tee:endorsement:import``)
  with an audit notification ``tee.endorsement.imported``;
* ``GET /v1/tee/endorsements``: list the cache (``tee:endorsement:get``).

Nothing in the table is trusted. Every entry is verified on import against
the roots the suite pins (AMD's ARKs and ``extra_snp_trust_roots``; for
TDX, Intel's root inside dcap-qvl) and verified again on use, by the same
code that verifies what a guest sends. Expiry comes from the signed
objects (a certificate's notAfter, a CRL's nextUpdate, a TCB info's
nextUpdate), never from the ``expires_at`` column, which is only there to
list and sort. An expired entry is refused with ``endorsement_expired``.

Revocation and rollback. A CRL row (and a TDX collateral row, whose older
copies may rate a platform better) carries a MAC under a key derived from
the KEK, so a database writer without the KEK cannot add one; a row that
does not authenticate refuses the product's releases
(``endorsement_tampered``). Each API process keeps the newest CRL (by CRL
number, then thisUpdate) and the newest collateral (by TCB evaluation data
number, then issue date) it has authenticated, and keeps using it when the
row is deleted or replaced by an older one: deleting or rolling back a row
never un-revokes within a running process. The remaining limit: after a
restart, a writer who deleted the rows, or put back an older MACed CRL
still inside its nextUpdate, is believed until the next import; an older
CRL is bounded by its own nextUpdate. Pin CRLs that must hold against a
database writer in ``[tee_attestation] snp_crl_files`` too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
import dataclasses
import datetime
import functools
import hashlib
import json
import re
import threading
from typing import Any
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography import x509
from oslo_config import cfg
from oslo_db import exception as db_exc
from oslo_db import options as db_options
from oslo_log import log as logging
from oslo_policy import policy as oslo_policy
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation.snp_certs import Product
from barbican_tee.attestation import source_bound
from barbican_tee.attestation import tdx
from barbican_tee.plugin import keyring as keyring_mod

LOG = logging.getLogger(__name__)

EVENT = "tee.endorsement.imported"
KINDS = ("vcek", "ask", "asvk", "ark", "crl", "tdx_collateral")
# Rows whose older copies could turn a refusal into a release: MACed.
MACED = ("crl", "tdx_collateral")
PRODUCTS = ("milan", "genoa", "turin", "tdx")
MAX_ITEMS = 64
MAX_LIST = 1000
# How many rows one lookup at release reads, at most.
_LOOKUP_LIMIT = 16
_SUBJECT = re.compile(r"[0-9A-Fa-f:]{1,160}")
# The SGX extension's FMSPC (OID 1.2.840.113741.1.13.1.4), OCTET STRING 6.
_FMSPC_DER = bytes.fromhex("060a2a864886f84d010d01040406")

RULES = [
    oslo_policy.RuleDefault(
        "tee:endorsement:import", "role:admin or role:service",
        "Import endorsements (VCEKs, AMD CAs and CRLs, Intel PCS "
        "collateral) into the cache; each is verified against the pinned "
        "roots (administrators, and nova-compute's service user)."),
    oslo_policy.RuleDefault(
        "tee:endorsement:get", "role:admin or role:service",
        "List the endorsement cache."),
]


class EndorsementError(Exception):
    """A request refused: ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _utc(dt: datetime.datetime) -> datetime.datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=datetime.UTC)


def _naive(dt: datetime.datetime) -> datetime.datetime:
    return dt.astimezone(datetime.UTC).replace(tzinfo=None, microsecond=0)


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return ("-----BEGIN CERTIFICATE-----\n" + body
            + "-----END CERTIFICATE-----\n")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One verified cache entry, ready to be stored."""

    id: str
    kind: str
    product: str
    lookup: str
    expires_at: datetime.datetime  # aware, UTC
    crl_number: str | None
    data: str

    def view(self, new: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "product": self.product,
            "subject": self.lookup,
            "expires_at": _naive(self.expires_at).isoformat() + "Z",
            "crl_number": self.crl_number}
        if new is not None:
            out["new"] = new
        return out


# -- verifying one item (import) ------------------------------------------
def _bad(index: int, message: str, code: str = "endorsement_invalid"
         ) -> EndorsementError:
    return EndorsementError(400, code, f"endorsements[{index}]: {message}")


def _item_bytes(item: dict[str, Any], index: int) -> bytes:
    if isinstance(item.get("pem"), str):
        return str(item["pem"]).encode()
    if isinstance(item.get("der"), str):
        try:
            return base64.b64decode(item["der"], validate=True)
        except (binascii.Error, ValueError):
            raise _bad(index, "der is not base64") from None
    raise _bad(index, "give the object as pem (text) or der (base64)")


def _collateral_number(doc: dict[str, Any]) -> int:
    """The collateral's TCB info tcbEvaluationDataNumber (-1: none)."""
    return int(json.loads(doc["tcb_info"]).get("tcbEvaluationDataNumber",
                                               -1))


def _collateral_order(doc: dict[str, Any]) -> tuple[Any, ...]:
    """How recent verified collateral is: its TCB info, then its CRLs.

    (tcbEvaluationDataNumber, issueDate, then each CRL's
    :func:`snp_certs.crl_order`): of two collateral with the same TCB
    info, the one with the newer PCK CRL (revocations) ranks first.
    """
    crls = tdx.collateral_crls(doc)
    return (_collateral_number(doc),
            str(json.loads(doc["tcb_info"]).get("issueDate", "")),
            *(snp_certs.crl_order(crls[f]) for f in tdx.CRL_FIELDS))


def _collateral_expiry(doc: dict[str, Any]) -> datetime.datetime:
    """The earliest nextUpdate of the collateral's signed parts."""
    times = []
    for field in ("tcb_info", "qe_identity"):
        text = json.loads(doc[field]).get("nextUpdate")
        times.append(datetime.datetime.fromisoformat(
            str(text).replace("Z", "+00:00")))
    for field, crl in tdx.collateral_crls(doc).items():
        if crl.next_update_utc is None:
            raise ValueError(f"{field} has no nextUpdate")
        times.append(crl.next_update_utc)
    return min(_utc(t) for t in times)


class Importer:
    """Verifies bundle items against the pinned roots."""

    def __init__(self, verifier: snp.SnpVerifier) -> None:
        self.verifier = verifier

    def _roots(self, product: Product | None = None
               ) -> list[snp_certs.ProductRoots]:
        return self.verifier.trusted_roots(product)

    def _ca(self, index: int, kind: str, data: bytes,
            now: datetime.datetime) -> Entry:
        try:
            certs = snp_certs.load_ca_certs(data)
        except errors.InvalidInput as exc:
            raise _bad(index, exc.message) from None
        if len(certs) != 1:
            raise _bad(index, "one certificate per item")
        cert = certs[0]
        der = cert.public_bytes(serialization.Encoding.DER)
        name = snp_certs.common_name(cert)
        if kind == "ark":
            # The same root: subject and key (a re-issued certificate of
            # the same key, say with another validity, is that root).
            spki = cert.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)
            roots = [r for r in self._roots()
                     if r.ark.subject == cert.subject
                     and r.ark.public_key().public_bytes(
                         serialization.Encoding.DER,
                         serialization.PublicFormat.SubjectPublicKeyInfo)
                     == spki and snp_certs.ca_signed_by(cert, r.ark)]
            if not roots:
                raise _bad(index, "this ARK is not one of the pinned roots",
                           "endorsement_untrusted")
        else:
            want_vlek = kind == "asvk"
            if name.startswith("SEV-VLEK-") != want_vlek or not (
                    name.startswith("SEV-")):
                raise _bad(index, f"{name!r} is not an {kind.upper()}")
            roots = [r for r in self._roots()
                     if snp_certs.ca_signed_by(cert, r.ark)]
            if not roots:
                raise _bad(index, f"{name} is not signed by a pinned ARK",
                           "endorsement_untrusted")
        if not (cert.not_valid_before_utc <= now
                <= cert.not_valid_after_utc):
            raise _bad(index, f"{name} is not valid now (until "
                       f"{cert.not_valid_after_utc.isoformat()})",
                       "endorsement_expired")
        product = roots[0].product.name.lower()
        return Entry(_entry_id(kind, der), kind, product, product,
                     cert.not_valid_after_utc, None, _pem(der))

    def _vcek(self, index: int, data: bytes, chain: list[x509.Certificate],
              now: datetime.datetime) -> Entry:
        try:
            cert = snp_certs.parse_endorsement_cert(data)
        except errors.InvalidInput as exc:
            raise _bad(index, exc.message) from None
        if cert.kind is not snp_certs.SignerKind.VCEK or cert.hwid is None:
            raise _bad(index, "not a VCEK (with a hwID)")
        if not cert.not_before <= now <= cert.not_after:
            raise _bad(index, f"the VCEK is not valid now (until "
                       f"{cert.not_after.isoformat()})",
                       "endorsement_expired")
        try:
            cert, product = self.verifier.verify_endorsement(
                cert.der, chain, now, snp_certs.SignerKind.VCEK)
        except errors.AttestationError as exc:
            raise _bad(index, f"the VCEK does not verify: {exc.message}",
                       "endorsement_untrusted") from None
        tcb = snp.TcbVersion(
            bootloader=cert.bl_spl or 0, tee=cert.tee_spl or 0,
            snp=cert.snp_spl or 0, microcode=cert.ucode_spl or 0,
            fmc=(cert.fmc_spl or 0) if product is Product.TURIN else None)
        assert cert.hwid is not None
        lookup = vcek_lookup(cert.hwid, tcb.encode(product))
        return Entry(_entry_id("vcek", cert.der), "vcek",
                     product.name.lower(), lookup, cert.not_after, None,
                     _pem(cert.der))

    def _crl(self, index: int, data: bytes,
             now: datetime.datetime) -> Entry:
        try:
            crl = snp_certs.load_crl(data)
        except errors.InvalidInput as exc:
            raise _bad(index, exc.message) from None
        roots = [r for r in self._roots()
                 if r.ark.subject == crl.issuer and snp_certs.rsa_pss_verify(
                     r.ark, crl.signature, crl.tbs_certlist_bytes)]
        if not roots:
            raise _bad(index, "the CRL is not signed by a pinned ARK",
                       "endorsement_untrusted")
        next_update = crl.next_update_utc
        if next_update is None:
            raise _bad(index, "the CRL has no nextUpdate")
        if next_update < now:
            raise _bad(index, "the CRL expired at "
                       f"{next_update.isoformat()}", "endorsement_expired")
        number, _ = snp_certs.crl_order(crl)
        der = crl.public_bytes(serialization.Encoding.DER)
        product = roots[0].product.name.lower()
        return Entry(_entry_id("crl", der), "crl", product, product,
                     next_update, None if number < 0 else str(number),
                     base64.b64encode(der).decode())

    def _collateral(self, index: int, item: dict[str, Any],
                    now: datetime.datetime) -> Entry:
        value = item.get("collateral")
        if not isinstance(value, (dict, str)):
            raise _bad(index, "collateral must be QuoteCollateralV3 (an "
                       "object or JSON text)")
        try:
            loaded = tdx.load_collateral(value)
            doc = json.loads(loaded.json_text)
            expires = _collateral_expiry(doc)
            _collateral_order(doc)
        except errors.AttestationError as exc:
            raise _bad(index, exc.message) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _bad(index, f"collateral is not usable: {exc}") from None
        if expires < now:
            raise _bad(index, f"the collateral expired at "
                       f"{expires.isoformat()}", "endorsement_expired")
        quote = item.get("quote")
        if quote is None:
            # dcap-qvl verifies the collateral's signatures only with a
            # quote: unverified collateral is neither stored nor ranked.
            raise _bad(index, "tdx_collateral needs quote: a quote "
                       "(base64) of one of the platform's TDs to verify "
                       "it with (the CLI's --tdx-quote)",
                       "endorsement_quote_required")
        # Verified whole, as at release.
        try:
            raw = base64.b64decode(str(quote), validate=True)
            tdx.verify_quote(raw, loaded.json_text, now)
        except (binascii.Error, ValueError):
            raise _bad(index, "quote is not base64") from None
        except errors.AttestationError as exc:
            raise _bad(index, f"the collateral does not verify: "
                       f"{exc.message}", "endorsement_untrusted"
                       ) from None
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        number = _collateral_number(doc)
        return Entry(_entry_id("tdx_collateral", text.encode()),
                     "tdx_collateral", "tdx", loaded.fmspc.lower(), expires,
                     str(number), text)

    def verify_bundle(self, body: dict[str, Any], cached_cas: Iterable[str],
                      now: datetime.datetime) -> list[Entry]:
        """Every item verified, or :class:`EndorsementError` (none kept)."""
        items = body.get("endorsements")
        if not isinstance(items, list) or not items or len(items) > (
                MAX_ITEMS) or not all(isinstance(i, dict) for i in items):
            raise EndorsementError(
                400, "endorsement_bundle_invalid",
                f"a bundle is {{\"endorsements\": [item, ...]}} with 1 to "
                f"{MAX_ITEMS} objects")
        unknown = sorted(set(body) - {"endorsements", "version"})
        if unknown or body.get("version", 1) != 1:
            raise EndorsementError(400, "endorsement_bundle_invalid",
                                   "a bundle takes version (1) and "
                                   "endorsements")
        for index, item in enumerate(items):
            if item.get("kind") not in KINDS:
                raise _bad(index, f"kind must be one of {', '.join(KINDS)}")
        out: list[Entry] = []
        # CAs first: a VCEK may chain through an ASK of the same bundle.
        chain: list[x509.Certificate] = []
        for text in cached_cas:
            chain.extend(snp_certs.load_ca_certs(text.encode()))
        for index, item in enumerate(items):
            if item["kind"] in ("ask", "asvk", "ark"):
                entry = self._ca(index, item["kind"],
                                 _item_bytes(item, index), now)
                out.append(entry)
                chain.extend(snp_certs.load_ca_certs(entry.data.encode()))
        for index, item in enumerate(items):
            kind = item["kind"]
            if kind == "vcek":
                out.append(self._vcek(index, _item_bytes(item, index),
                                      chain, now))
            elif kind == "crl":
                out.append(self._crl(index, _item_bytes(item, index), now))
            elif kind == "tdx_collateral":
                out.append(self._collateral(index, item, now))
        return out


def _entry_id(kind: str, content: bytes) -> str:
    return hashlib.sha256(kind.encode() + b":" + content).hexdigest()


def vcek_lookup(hwid: bytes, tcb_raw: int) -> str:
    """The lookup key of a VCEK: its hwID and TCB_VERSION, in hex."""
    return f"{hwid.hex()}:{tcb_raw:016x}"


def quote_fmspc(quote: bytes) -> str | None:
    """The FMSPC in a quote's PCK certificate (unverified: a lookup key).

    dcap-qvl checks at release that the collateral's FMSPC is the PCK
    certificate's, so a wrong guess here is refused there.
    """
    pos = quote.find(_FMSPC_DER)
    if pos < 0:
        # PEM certification data: the PCK certificate is base64 text.
        for block in re.findall(rb"-----BEGIN CERTIFICATE-----(.*?)-----END",
                                quote[:65536], re.S)[:1]:
            try:
                der = base64.b64decode(b"".join(block.split()))
            except (binascii.Error, ValueError):
                return None
            return quote_fmspc(der) if der.find(_FMSPC_DER) >= 0 else None
        return None
    value = quote[pos + len(_FMSPC_DER):pos + len(_FMSPC_DER) + 6]
    return value.hex() if len(value) == 6 else None


# -- storage ----------------------------------------------------------------
def _mac_input(row: dict[str, Any]) -> bytes:
    return json.dumps(
        ["endorsement", row["id"], row["kind"], row["product"],
         row["lookup"], row["crl_number"],
         hashlib.sha256(row["data"].encode()).hexdigest(),
         row["expires_at"].isoformat(), row["imported_at"].isoformat(),
         row["imported_by"]], separators=(",", ":")).encode()


def mac_input(row: dict[str, Any]) -> bytes:
    """What a MACed row's MAC covers (for ``openstack-tee rewrap``)."""
    return _mac_input(row)


# (kind, product or lookup, issuer) -> (order, data) of the newest
# authenticated entry this process has seen: a row deleted or replaced by
# an older one keeps being answered from here.
_NEWEST: dict[tuple[str, str, bytes], tuple[Any, str]] = {}
_NEWEST_LOCK = threading.Lock()


def _remember(key: tuple[str, str, bytes], order: Any, data: str
              ) -> tuple[Any, str]:
    with _NEWEST_LOCK:
        seen = _NEWEST.get(key)
        if seen is None or seen[0] < order:
            _NEWEST[key] = (order, data)
            return order, data
        return seen


def _remembered_order(key: tuple[str, str, bytes]
                      ) -> tuple[Any, str] | None:
    with _NEWEST_LOCK:
        return _NEWEST.get(key)


def remember_collateral(text: str) -> None:
    """Rank collateral that verified (at release, or on import)."""
    try:
        doc = json.loads(text)
        fmspc = str(json.loads(doc["tcb_info"])["fmspc"]).lower()
        order = _collateral_order(doc)
    except (ValueError, TypeError, KeyError):
        return
    _remember(("tdx_collateral", fmspc, b""), order, text)


def _remembered(kind: str, name: str) -> list[tuple[bytes, str]]:
    with _NEWEST_LOCK:
        return [(issuer, data) for (k, n, issuer), (_, data)
                in _NEWEST.items() if k == kind and n == name]


@functools.lru_cache(maxsize=32)
def _select_statement(kinds: int, lookups: int) -> sa.Select[Any]:
    """Rows of any of ``kinds`` kinds for any of ``lookups`` lookups.

    Bound parameters :k0.., :l0.. and the row limit :n; built once per
    shape (a release reads one kind for one product on every call, and
    building the statement cost more CPU than running it).
    """
    t = db.ENDORSEMENTS
    return t.select().where(
        t.c.kind.in_([sa.bindparam(f"k{i}") for i in range(kinds)]),
        t.c.lookup.in_([sa.bindparam(f"l{i}") for i in range(lookups)])
    ).order_by(t.c.expires_at.desc()).limit(sa.bindparam("n"))


class Tampered(errors.VerificationFailed):
    """A MACed row that does not authenticate (fail closed)."""

    code = "endorsement_tampered"


class EndorsementStore:
    """``tee_endorsements`` rows."""

    def __init__(self, engine: sa.Engine,
                 keyring: keyring_mod.Keyring) -> None:
        self.engine = engine
        self.keyring = keyring

    @staticmethod
    def _query(kinds: tuple[str, ...], lookups: list[str], limit: int
               ) -> tuple[sa.Select[Any], dict[str, Any]]:
        params: dict[str, Any] = {"n": limit}
        params.update((f"k{i}", k) for i, k in enumerate(kinds))
        params.update((f"l{i}", x) for i, x in enumerate(lookups))
        return _select_statement(len(kinds), len(lookups)), params

    def crl_read(self, product: str) -> db.Read:
        """The query :meth:`crls` makes, for a release's admission to run."""
        return db.Read.of(self.engine,
                          *self._query(("crl",), [product], _LOOKUP_LIMIT))

    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def _select(self, kind: str | tuple[str, ...], lookups: list[str],
                limit: int = _LOOKUP_LIMIT) -> list[dict[str, Any]]:
        kinds = (kind,) if isinstance(kind, str) else kind
        query, params = self._query(kinds, lookups, limit)
        rows = db.prefetched(self.engine, query, params)
        if rows is None:
            with self.engine.connect() as conn:
                rows = conn.execute(query, params).mappings().all()
        exact = [dict(r) for r in rows
                 if r["kind"] in kinds and r["lookup"] in lookups]
        if len(exact) != len(rows):
            # Only MariaDB/MySQL match these (their binary collation pads
            # with spaces: 'milan ' = 'milan'), and only rows written to
            # the database directly have them; each took a LIMIT slot.
            LOG.error("openstack-tee: %d %s row(s) in tee_endorsements "
                      "match %s only with trailing spaces: written to the "
                      "database directly; ignored (import the "
                      "endorsements again and delete them)",
                      len(rows) - len(exact), "/".join(kinds),
                      ",".join(lookups))
        return exact

    def _authentic(self, row: dict[str, Any]) -> bool:
        try:
            return bool(row["mac_kek"]) and self.keyring.check_mac(
                row["mac_kek"], _mac_input(row), bytes.fromhex(row["mac"]))
        except (ValueError, TypeError):
            return False

    def cas(self, product: str | None = None) -> list[str]:
        products = [product] if product else list(PRODUCTS)
        return [r["data"] for r in self._select(("ask", "asvk"), products)]

    @db.again_on_duplicate
    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def put(self, entries: list[Entry], user: str) -> list[bool]:
        """Store the entries in one transaction; which ones were new."""
        now = db.utcnow().replace(microsecond=0)
        t = db.ENDORSEMENTS
        kid = self.keyring.current.kid
        new = []
        with self.engine.begin() as conn:
            for entry in entries:
                if entry.kind not in MACED:
                    continue
                # Importing again is how an administrator recovers from a
                # row that does not authenticate: such rows of the same
                # product (or FMSPC) go.
                rows = conn.execute(t.select().where(
                    t.c.kind == entry.kind,
                    t.c.lookup == entry.lookup)).mappings().all()
                forged = [r["id"] for r in rows
                          if not self._authentic(dict(r))]
                if forged:
                    LOG.warning("openstack-tee: removing %d %s row(s) for "
                                "%s that do not authenticate", len(forged),
                                entry.kind, entry.lookup)
                    conn.execute(t.delete().where(t.c.id.in_(forged)))
            present = {r[0] for r in conn.execute(sa.select(t.c.id).where(
                t.c.id.in_([e.id for e in entries])))}
            for entry in entries:
                if entry.id in present:
                    new.append(False)
                    continue
                present.add(entry.id)
                row: dict[str, Any] = {
                    "id": entry.id, "kind": entry.kind,
                    "product": entry.product, "lookup": entry.lookup,
                    "expires_at": _naive(entry.expires_at),
                    "crl_number": entry.crl_number, "data": entry.data,
                    "imported_at": now, "imported_by": user[:255],
                    "mac_kek": None, "mac": None}
                if entry.kind in MACED:
                    row["mac_kek"] = kid
                    row["mac"] = self.keyring.mac(kid,
                                                  _mac_input(row)).hex()
                conn.execute(t.insert().values(**row))
                new.append(True)
        return new

    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def entries(self, kind: str | None, product: str | None,
             subject: str | None) -> list[dict[str, Any]]:
        t = db.ENDORSEMENTS
        query = sa.select(t.c.id, t.c.kind, t.c.product, t.c.lookup,
                          t.c.expires_at, t.c.crl_number, t.c.imported_at,
                          t.c.imported_by)
        if kind:
            query = query.where(t.c.kind == kind)
        if product:
            query = query.where(t.c.product == product)
        if subject:
            query = query.where(t.c.lookup.startswith(subject.lower(),
                                                      autoescape=True))
        query = query.order_by(t.c.kind, t.c.product, t.c.lookup,
                               t.c.expires_at).limit(MAX_LIST)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def newest_crl_order(self, product: str, issuer: bytes,
                         roots: Iterable[snp_certs.ProductRoots]
                         ) -> tuple[int, datetime.datetime] | None:
        """The newest cached CRL's order among the rows the ARK signed.

        Every row whose CRL signature verifies against a pinned ARK
        counts, MAC or not: the ARK's signature cannot be forged, and a
        row MACed under a retired KEK (or not at all) still proves that
        the newer CRL exists. The MAC guards against adding rows.
        """
        arks = [r.ark for r in roots]
        best = None
        for row in self._select("crl", [product]):
            try:
                crl = _load_crl(base64.b64decode(row["data"]))
            except (binascii.Error, ValueError, errors.InvalidInput):
                continue
            if crl.issuer.public_bytes() != issuer:
                continue
            if not any(ark.subject == crl.issuer and snp_certs.rsa_pss_verify(
                    ark, crl.signature, crl.tbs_certlist_bytes)
                    for ark in arks):
                continue
            order = snp_certs.crl_order(crl)
            best = order if best is None or best < order else best
        return best

    # -- at release ------------------------------------------------------
    def vcek(self, chip_id: bytes, tcb_raw: int,
             now: datetime.datetime) -> bytes | None:
        """The cached VCEK (PEM, then cached ASKs) for a report, or None.

        One indexed exact lookup (Turin's VCEKs carry chip_id[:8]).
        """
        keys = [vcek_lookup(chip_id, tcb_raw),
                vcek_lookup(chip_id[:8], tcb_raw)]
        rows = self._select("vcek", keys)
        if not rows:
            return None
        usable = []
        for row in rows:
            try:
                cert = snp_certs.parse_endorsement_cert(row["data"].encode())
            except errors.InvalidInput:
                continue  # verified on import: changed in the database
            if cert.not_before <= now <= cert.not_after:
                usable.append((cert.not_after, row))
        if not usable:
            raise errors.VerificationFailed(
                "the cached VCEK for this chip and TCB has expired: import "
                "a fresh one (openstack tee endorsement import)",
                code="endorsement_expired")
        usable.sort(key=lambda pair: pair[0], reverse=True)
        row = usable[0][1]
        cas = self._select("ask", [row["product"]])
        return (str(row["data"])
                + "".join(str(r["data"]) for r in cas)).encode()

    def crls(self, product: str) -> list[bytes]:
        """The newest authenticated CRL of each issuer for ``product``."""
        newest: dict[bytes, tuple[Any, bytes]] = {}
        for row in self._select("crl", [product]):
            if not self._authentic(row):
                raise Tampered(
                    f"a cached {product} CRL does not authenticate "
                    "(changed in the database, or MACed under a KEK no "
                    "longer configured): releases of the product are "
                    "refused until an administrator imports it again")
            try:
                der = base64.b64decode(row["data"], validate=True)
                crl = _load_crl(der)
            except (binascii.Error, ValueError, errors.InvalidInput):
                raise Tampered(f"a cached {product} CRL is not "
                               "decodable") from None
            issuer = crl.issuer.public_bytes()
            order = snp_certs.crl_order(crl)
            if issuer not in newest or newest[issuer][0] < order:
                newest[issuer] = (order, der)
        out = {}
        for issuer, (order, der) in newest.items():
            _, text = _remember(("crl", product, issuer), order,
                                base64.b64encode(der).decode())
            out[issuer] = base64.b64decode(text)
        # Rows gone from the database: the newest seen still applies.
        for issuer, text in _remembered("crl", product):
            out.setdefault(issuer, base64.b64decode(text))
        return list(out.values())

    def collateral(self, fmspc: str, now: datetime.datetime) -> str | None:
        """The newest authenticated collateral for an FMSPC, or None."""
        best: tuple[Any, str] | None = None
        for row in self._select("tdx_collateral", [fmspc]):
            if not self._authentic(row):
                raise Tampered(
                    f"cached TDX collateral for FMSPC {fmspc} does not "
                    "authenticate: releases on those platforms are refused "
                    "until an administrator imports it again")
            try:
                order = _collateral_order(json.loads(row["data"]))
            except (ValueError, TypeError, KeyError):
                raise Tampered(f"cached TDX collateral for FMSPC {fmspc} "
                               "is not decodable") from None
            if best is None or best[0] < order:
                best = (order, row["data"])
        # Newer collateral that verified in this process (rows deleted or
        # replaced by older ones) wins; only verified collateral is
        # remembered (:func:`remember_collateral`).
        seen = _remembered_order(("tdx_collateral", fmspc, b""))
        if seen is not None and (best is None or best[0] < seen[0]):
            best = seen
        if best is None:
            return None
        text = best[1]
        if _collateral_expiry(json.loads(text)) < now:
            raise errors.VerificationFailed(
                f"the cached TDX collateral for FMSPC {fmspc} has expired: "
                "import a fresh one from Intel PCS",
                code="endorsement_expired")
        return text


    def newest_collateral_number(self, fmspc: str) -> int | None:
        """The highest tcbEvaluationDataNumber of authenticated collateral.

        Rows that authenticate (only verified collateral is MACed) and
        collateral that verified in this process; None: none known.
        """
        best = None
        for row in self._select("tdx_collateral", [fmspc]):
            if not self._authentic(row):
                continue
            try:
                number = _collateral_number(json.loads(row["data"]))
            except (ValueError, TypeError, KeyError):
                continue
            best = number if best is None else max(best, number)
        seen = _remembered_order(("tdx_collateral", fmspc, b""))
        if seen is not None:
            best = seen[0][0] if best is None else max(best, seen[0][0])
        return best

    def newest_collateral_crls(self, fmspc: str) -> list[bytes]:
        """The CRLs (DER) of authenticated collateral for an FMSPC.

        Of rows that authenticate and of the collateral that verified in
        this process (:func:`remember_collateral`): each issuer's newest
        stands against an older one a guest sends
        (``tdx_collateral_outdated``).
        """
        docs = []
        for row in self._select("tdx_collateral", [fmspc]):
            if self._authentic(row):
                docs.append(row["data"])
        seen = _remembered_order(("tdx_collateral", fmspc, b""))
        if seen is not None:
            docs.append(seen[1])
        out: dict[bytes, None] = {}
        for text in docs:
            try:
                crls = tdx.collateral_crls(json.loads(text))
            except (ValueError, TypeError, KeyError):
                continue
            for crl in crls.values():
                out[crl.public_bytes(serialization.Encoding.DER)] = None
        return list(out)


_CRLS: dict[bytes, x509.CertificateRevocationList] = {}
_CRLS_LOCK = threading.Lock()


def _load_crl(der: bytes) -> x509.CertificateRevocationList:
    """A parsed CRL, parsed once per distinct bytes (not trusted)."""
    key = hashlib.sha256(der).digest()
    with _CRLS_LOCK:
        hit = _CRLS.get(key)
    if hit is not None:
        return hit
    crl = snp_certs.load_crl(der)
    with _CRLS_LOCK:
        if len(_CRLS) > 64:
            _CRLS.clear()
        _CRLS[key] = crl
    return crl


# -- the REST side ------------------------------------------------------------
def import_bundle(store: EndorsementStore, importer: Importer,
                  body: dict[str, Any], user: str,
                  notifier: Any) -> dict[str, Any]:
    """Verify and store a bundle, all or nothing; audit it."""
    now = datetime.datetime.now(datetime.UTC)
    entries = importer.verify_bundle(body, store.cas(), now)
    for entry in entries:
        if entry.kind == "crl":
            crl = _load_crl(base64.b64decode(entry.data))
            issuer = crl.issuer.public_bytes()
            newest = store.newest_crl_order(
                entry.product, issuer,
                importer.verifier.trusted_roots())
            with _NEWEST_LOCK:
                seen = _NEWEST.get(("crl", entry.product, issuer))
            for known in (newest, seen[0] if seen else None):
                if known is not None and snp_certs.crl_order(crl) < known:
                    raise EndorsementError(
                        409, "crl_older",
                        f"a newer {entry.product} CRL is already cached; "
                        "an older one is never imported over it")
    new = store.put(entries, user)
    for entry in entries:
        if entry.kind == "crl":
            crl = _load_crl(base64.b64decode(entry.data))
            _remember(("crl", entry.product, crl.issuer.public_bytes()),
                      snp_certs.crl_order(crl), entry.data)
        elif entry.kind == "tdx_collateral":
            remember_collateral(entry.data)  # verified with its quote
    views = [e.view(n) for e, n in zip(entries, new, strict=True)]
    LOG.info("openstack-tee audit %s user=%s entries=%s", EVENT, user,
             ",".join(f"{e.kind}:{e.product}:{e.id[:16]}"
                      + ("" if n else "(present)")
                      for e, n in zip(entries, new, strict=True)))
    if notifier is not None:
        try:
            notifier.info({}, EVENT, {"user_id": user,
                                      "endorsements": views})
        except Exception:  # noqa: BLE001 - the log line above stands
            LOG.exception("openstack-tee: audit notification failed")
    return {"endorsements": views}


def list_view(store: EndorsementStore,
              query: dict[str, list[str]]) -> dict[str, Any]:
    unknown = sorted(set(query) - {"kind", "product", "subject"})
    one = {k: v[-1] for k, v in query.items() if v}
    kind, product = one.get("kind"), one.get("product")
    subject = one.get("subject")
    if unknown or (kind and kind not in KINDS) or (
            product and product not in PRODUCTS) or (
            subject and not _SUBJECT.fullmatch(subject)):
        raise EndorsementError(
            400, "endorsement_filter_invalid",
            f"filters: kind ({', '.join(KINDS)}), product "
            f"({', '.join(PRODUCTS)}), subject (a hex prefix)")
    now = db.utcnow()
    rows = store.entries(kind, product, subject)
    return {"endorsements": [
        {"id": r["id"], "kind": r["kind"], "product": r["product"],
         "subject": r["lookup"],
         "expires_at": r["expires_at"].isoformat() + "Z",
         "expired": r["expires_at"] < now,
         "crl_number": r["crl_number"],
         "imported_at": r["imported_at"].isoformat() + "Z",
         "imported_by": r["imported_by"]} for r in rows]}


def list_rules() -> list[oslo_policy.RuleDefault]:
    return list(RULES)


# -- the endorsement source plugin ("database") ------------------------------
def _vcek_not_after(answer: bytes) -> datetime.datetime | None:
    """The found VCEK's notAfter (the answer's first PEM), or None."""
    try:
        return x509.load_pem_x509_certificate(answer).not_valid_after_utc
    except ValueError:
        return None


class DatabaseEndorsementSource(evidence_mod.EndorsementSource):
    """The cache as an endorsement source (``[tee_attestation]
    endorsement_sources = database``).

    Asked with the unverified report's chip id and TCB before the report
    is verified: one indexed exact lookup, no network. Outside an API
    process (no ``[database] connection``) it holds nothing.
    """

    name = "database"
    # Local and cheap: no concurrency or per-minute limit. Found VCEKs
    # (with their ASKs) are kept by source_bound's cache: public
    # certificates that the verifier checks against the pinned roots,
    # its CRLs and notAfter on every use, as if the guest had sent them;
    # keeping them saves two queries and a parse per release and adds no
    # trust. Kept at most [tee_attestation] endorsement_cache_ttl
    # seconds, never past the VCEK's notAfter. CRLs and TDX collateral
    # are read on every call: a CRL imported now refuses at once.
    bound_policy: ClassVar[source_bound.BoundPolicy] = (
        source_bound.BoundPolicy(
            cached=frozenset({"snp_endorsement"}), limited=False,
            keep_until={"snp_endorsement": _vcek_not_after}))

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self._store: EndorsementStore | None = None
        self._lock = threading.Lock()

    def _get(self) -> EndorsementStore | None:
        if self._store is None:
            self.conf.register_opts(db_options.database_opts,
                                    group="database")
            url = self.conf.database.connection
            if not url:
                return None
            from barbican_tee.plugin import store as sealed_store
            with self._lock:
                if self._store is None:
                    self._store = EndorsementStore(
                        db.process_engine(url, self.conf),
                        sealed_store.load_keyring(self.conf))
        return self._store

    @staticmethod
    def _unavailable(what: str, exc: Exception
                     ) -> evidence_mod.SourceUnavailable:
        # What the retries could not mend: a refusal with its code
        # (audited by the release route), never a release, never a 500.
        LOG.error("openstack-tee: cannot read the endorsement cache "
                  "(%s): %s", what, type(exc).__name__)
        return evidence_mod.SourceUnavailable(
            f"the endorsement cache ({what}) cannot be read from the "
            "database right now; try again later",
            code=evidence_mod.SourceUnavailable.code)

    def snp_endorsement(self, chip_id: bytes, reported_tcb: int,
                        signer: str) -> bytes | None:
        store = self._get()
        if store is None or signer != "vcek":
            return None
        now = datetime.datetime.now(datetime.UTC)
        try:
            return store.vcek(chip_id, reported_tcb, now)
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            raise self._unavailable("vcek", exc) from None

    def snp_crls(self, product: str) -> list[bytes]:
        store = self._get()
        if store is None:
            return []
        try:
            return store.crls(product)
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            raise self._unavailable("crl", exc) from None

    def tdx_collateral(self, quote: bytes) -> str | None:
        store = self._get()
        fmspc = quote_fmspc(quote)
        if store is None or fmspc is None:
            return None
        try:
            return store.collateral(fmspc,
                                    datetime.datetime.now(datetime.UTC))
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            raise self._unavailable("tdx_collateral", exc) from None

    def tdx_collateral_number(self, quote: bytes) -> int | None:
        store = self._get()
        fmspc = quote_fmspc(quote)
        if store is None or fmspc is None:
            return None
        try:
            return store.newest_collateral_number(fmspc)
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            raise self._unavailable("tdx_collateral", exc) from None

    def tdx_collateral_crls(self, quote: bytes) -> list[bytes]:
        store = self._get()
        fmspc = quote_fmspc(quote)
        if store is None or fmspc is None:
            return []
        try:
            return store.newest_collateral_crls(fmspc)
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            raise self._unavailable("tdx_collateral", exc) from None

    def tdx_collateral_verified(self, quote: bytes, collateral: str) -> None:
        remember_collateral(collateral)


@db._retry  # noqa: SLF001 - the suite's own retry policy
def remac(engine: sa.Engine, keyring: keyring_mod.Keyring) -> int:
    """MAC every authentic MACed row under the current KEK (rewrap).

    A row that does not authenticate under any configured KEK is left as
    it is (it keeps refusing); the count of rows re-MACed is returned.
    For ``openstack-tee rewrap`` after a KEK rotation.
    """
    t = db.ENDORSEMENTS
    kid = keyring.current.kid
    done = 0
    with engine.begin() as conn:
        rows = conn.execute(t.select().where(
            t.c.kind.in_(MACED))).mappings().all()
        for found in rows:
            row = dict(found)
            if row["mac_kek"] == kid:
                continue
            try:
                intact = keyring.check_mac(row["mac_kek"], _mac_input(row),
                                           bytes.fromhex(row["mac"]))
            except (ValueError, TypeError):
                intact = False
            if not intact:
                continue
            conn.execute(t.update().where(t.c.id == row["id"]).values(
                mac_kek=kid, mac=keyring.mac(kid, _mac_input(row)).hex()))
            done += 1
    return done
