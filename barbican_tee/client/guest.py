"""What a confidential guest does to get its key (``tee-guest fetch``).

1. make an ephemeral EC P-384 key;
2. ask for a challenge (a base64url nonce);
3. ``report_data = SHA-512(nonce || RFC 7638 SHA-256 thumbprint)``, the
   thumbprint as its 32 raw bytes, so the report binds both the nonce and
   the key the secret will be encrypted to;
4. get a report (SEV-SNP) or quote (TDX) with that report data through
   configfs-tsm and build the evidence object of the REST contract;
5. post it to ``/v1/tee/release`` and decrypt the compact JWE
   (ECDH-ES+A256KW, A256GCM) with the ephemeral private key.

When the policy gives a lease, the JWE's protected header (authenticated
with the secret by A256GCM) carries ``tee_max_age`` and ``tee_lease_exp``;
:func:`release_key` reads the lease from there, never from the answer's
plain JSON fields alone (a host could change those), and refuses an answer
whose plain fields disagree with it.

The private key never leaves this process and is never printed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
import dataclasses
import datetime
import hashlib
import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography import x509
from jwcrypto import common as jwc_common
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk

from barbican_tee.client import rest
from barbican_tee.client import snp_certs
from barbican_tee.client import tsm

JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
FORMAT_SNP = "amd-sev-snp-report"
FORMAT_TDX = "intel-tdx-quote"


class GuestError(Exception):
    """The fetch failed for a reason that is neither configfs-tsm's nor
    the service's; ``code`` is stable.

    Codes: ``bad_nonce``, ``jwe_invalid``, ``lease_mismatch``,
    ``snp_cert_table_malformed``, ``unsupported_provider``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (strictly)."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    stripped = text.strip().rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_",
                            validate=True)


def make_key() -> jwc_jwk.JWK:
    """A fresh EC P-384 key pair for one release."""
    return jwc_jwk.JWK.generate(kty="EC", crv="P-384")


def public_jwk(key: jwc_jwk.JWK) -> dict[str, Any]:
    """The public half as a JSON object (never the private ``d``)."""
    doc: dict[str, Any] = json.loads(key.export_public())
    return doc


def thumbprint(key: jwc_jwk.JWK) -> bytes:
    """RFC 7638 SHA-256 thumbprint of the public key, 32 raw bytes."""
    return b64url_decode(key.thumbprint())


def report_data(nonce: str, key: jwc_jwk.JWK) -> bytes:
    """``SHA-512(nonce bytes || thumbprint bytes)``: 64 bytes."""
    try:
        nonce_bytes = b64url_decode(nonce)
    except (ValueError, binascii.Error):
        raise GuestError("bad_nonce",
                         "the challenge's nonce is not base64url") from None
    if not nonce_bytes:
        raise GuestError("bad_nonce", "the challenge's nonce is empty")
    return hashlib.sha512(nonce_bytes + thumbprint(key)).digest()


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines)
            + "\n-----END CERTIFICATE-----\n")


def _ca_pem(der: bytes, name: str) -> str:
    """PEM of an ASK/ARK, checking it is a certificate at all."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise GuestError(snp_certs.CertTableError.code,
                         f"the {name} in the certificate table is not an "
                         "X.509 certificate") from None
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def build_evidence(report: tsm.Report,
                   collateral: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The ``evidence`` object of the REST contract for one report.

    ``collateral`` (TDX only) is Intel PCS's QuoteCollateralV3 for the
    platform, which the service verifies the quote with.
    """
    if report.provider == "tdx_guest":
        tdx: dict[str, Any] = {
            "format": FORMAT_TDX,
            "quote": base64.b64encode(report.outblob).decode("ascii")}
        if collateral is not None:
            tdx["collateral"] = collateral
        return tdx
    if report.provider != "sev_guest":
        raise GuestError("unsupported_provider",
                         f"no evidence format for provider "
                         f"{report.provider!r}")
    evidence: dict[str, Any] = {
        "format": FORMAT_SNP,
        "report": base64.b64encode(report.outblob).decode("ascii"),
    }
    if report.auxblob:
        try:
            certs = snp_certs.parse_cert_table(report.auxblob)
        except snp_certs.CertTableError as exc:
            raise GuestError(exc.code,
                             f"the SEV-SNP certificate table in auxblob is "
                             f"unusable: {exc.message}") from None
        # VCEK/VLEK go as DER in PEM armour, untouched: their serial 0 is
        # something the verifier handles, not this side.
        for name in ("vcek", "vlek"):
            if name in certs:
                evidence[name] = _pem(certs[name])
        chain = [_ca_pem(certs[n], n.upper()) for n in ("ask", "ark")
                 if n in certs]
        if chain:
            evidence["cert_chain"] = "".join(chain)
    return evidence


@dataclasses.dataclass(frozen=True)
class Lease:
    """How long a released key may be held.

    ``expires_at`` (POSIX seconds) is the earlier of the service's expiry
    and this guest's own clock at receipt plus ``max_age``: a clock that
    differs from the service's never lengthens the lease.
    """

    max_age: int
    expires_at: int

    def as_dict(self) -> dict[str, Any]:
        return {"max_age": self.max_age, "expires_at": self.expires_at,
                "lease_expires_at": iso_time(self.expires_at)}


@dataclasses.dataclass(frozen=True)
class Released:
    key: bytes
    lease: Lease | None


def iso_time(posix: int) -> str:
    """``2026-11-30T13:00:00Z`` for POSIX seconds."""
    when = datetime.datetime.fromtimestamp(posix, datetime.UTC)
    return when.replace(tzinfo=None).isoformat() + "Z"


def _parse_iso(text: Any) -> int | None:
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        when = datetime.datetime.fromisoformat(text[:-1])
    except ValueError:
        return None
    return int(when.replace(tzinfo=datetime.UTC).timestamp())


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def lease_from(header: dict[str, Any], answer: dict[str, Any],
               now: float) -> Lease | None:
    """The lease of a release, from the JWE's protected header.

    ``answer``'s ``max_age`` and ``lease_expires_at`` must say the same
    (or be absent); ``now`` is this guest's clock when the answer came.
    """
    max_age = header.get("tee_max_age")
    expiry = header.get("tee_lease_exp")
    plain = (answer.get("max_age"), answer.get("lease_expires_at"))
    if max_age is None and expiry is None:
        if plain != (None, None):
            raise GuestError("lease_mismatch",
                             "the answer names a lease the encrypted "
                             "release does not carry")
        return None
    seconds, end = _positive_int(max_age), _positive_int(expiry)
    if seconds is None or end is None:
        raise GuestError("lease_mismatch",
                         "the release's lease is malformed")
    if plain != (None, None) and (
            plain[0] != seconds or _parse_iso(plain[1]) != end):
        raise GuestError("lease_mismatch",
                         "the answer's max_age / lease_expires_at differ "
                         "from the lease in the encrypted release")
    return Lease(max_age=seconds, expires_at=min(end, int(now) + seconds))


def decrypt(token: str, key: jwc_jwk.JWK) -> bytes:
    """Open the compact JWE that ``release`` returned."""
    return _open(token, key)[0]


def _open(token: str, key: jwc_jwk.JWK) -> tuple[bytes, dict[str, Any]]:
    """The JWE's payload and its (authenticated) protected header."""
    try:
        jwe = jwc_jwe.JWE(algs=[JWE_ALG, JWE_ENC])
        jwe.deserialize(token, key=key)
        header = jwe.jose_header
        if header.get("alg") != JWE_ALG or header.get("enc") != JWE_ENC:
            raise GuestError(
                "jwe_invalid",
                f"the JWE uses alg {header.get('alg')!r} / enc "
                f"{header.get('enc')!r}, not {JWE_ALG} / {JWE_ENC}")
        payload: bytes = jwe.payload
    except GuestError:
        raise
    except (jwc_common.JWException, ValueError, TypeError, KeyError):
        raise GuestError("jwe_invalid",
                         "the released secret cannot be decrypted with "
                         "this guest's key (malformed or not for this "
                         "key)") from None
    return payload, dict(header)


def fetch_key(client: rest.TEEClient, secret_id: str,
              reporter: tsm.TSMReporter | None = None,
              privlevel: int | None = None,
              collateral: dict[str, Any] | None = None) -> bytes:
    """Run the whole runtime-attestation flow; return the secret.

    ``collateral``: see :func:`build_evidence` (needed for TDX).
    """
    return release_key(client, secret_id, reporter, privlevel=privlevel,
                       collateral=collateral).key


def release_key(client: rest.TEEClient, secret_id: str,
                reporter: tsm.TSMReporter | None = None,
                privlevel: int | None = None,
                collateral: dict[str, Any] | None = None,
                renewal: bool = False,
                clock: Callable[[], float] = time.time) -> Released:
    """:func:`fetch_key`, with the release's lease.

    Every call is a new attestation: a new key pair, challenge, report
    and release. ``renewal`` only tells the service's audit record that
    this guest held the key before. ``clock`` is this guest's clock.
    """
    reporter = reporter or tsm.TSMReporter()
    # Fail before asking for a nonce when there is no configfs-tsm.
    reporter.check()
    key = make_key()
    nonce, _expires = client.challenge(secret_id)
    data = report_data(nonce, key)
    report = reporter.get_report(data, privlevel=privlevel)
    evidence = build_evidence(report, collateral)
    answer = client.release_answer(secret_id, nonce, evidence,
                                   public_jwk(key), renewal=renewal)
    secret, header = _open(answer["jwe"], key)
    return Released(key=secret,
                    lease=lease_from(header, answer, clock()))
