"""Intel TDX quotes: parsing and DCAP verification.

A TDX quote (Intel TDX DCAP Quote Generation Library and Quote Verification
Library API, appendix "Quote Format") is parsed here with explicit offsets
into an immutable :class:`TdxQuote`:

* a 48-byte header (version, attestation key type, TEE type 0x81, QE/PCE
  SVN, QE vendor id, user data);
* the body: for version 4 a TD report 1.0 (584 bytes); for version 5 a
  body type and size followed by a TD report 1.0 (type 2, 584 bytes), 1.5
  (type 3, 648 bytes: adds TEE_TCB_SVN2 and MR_SERVICETD) or 1.5 extended
  (type 4, 885 bytes, as produced by TDX module 1.5+ and accepted by
  dcap-qvl 0.7);
* a 4-byte signature data length and the ECDSA-P256 signature data
  (signature, attestation key, certification data).

:func:`verify_quote` then hands the raw quote and the caller's collateral
(QuoteCollateralV3 JSON, the format of dcap-qvl and Intel PCCS) to dcap-qvl,
which checks the quote signature, the QE report, the PCK chain, the CRLs and
the TCB level, at a verification time the caller must pass. The report that
dcap-qvl verified is cross-checked against our own parse, and the result is
returned as :class:`TdxClaims` for the policy evaluator. Policy evaluation
never happens here.

Only :mod:`barbican_tee.attestation.errors` exceptions leave this module.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime
import json
import re
import struct
from typing import Any

from cryptography import x509
import dcap_qvl  # type: ignore[import-untyped,unused-ignore]

from barbican_tee.attestation import errors

HEADER_SIZE = 48
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
TD_REPORT15EX_SIZE = 885
BODY_DESCRIPTOR_SIZE = 6  # v5: u16 body type + u32 body size
SIG_LEN_SIZE = 4
MAX_QUOTE_SIZE = 1 << 20

TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_TYPE_ECDSA_P256 = 2
SUPPORTED_VERSIONS = (4, 5)

BODY_SGX_ENCLAVE_REPORT = 1
BODY_TD_REPORT10 = 2
BODY_TD_REPORT15 = 3
BODY_TD_REPORT15EX = 4
_BODY_SIZES = {
    BODY_TD_REPORT10: TD_REPORT10_SIZE,
    BODY_TD_REPORT15: TD_REPORT15_SIZE,
    BODY_TD_REPORT15EX: TD_REPORT15EX_SIZE,
}

# ECDSA-P256 signature data: r||s (64), attestation public key (64), then
# certification data: u16 type, u32 size, data.
ECDSA_SIG_SIZE = 64
ECDSA_KEY_SIZE = 64
CERT_DATA_HEADER_SIZE = 6
# TDX quotes certify the attestation key with a QE report (type 6), which
# in turn carries the PCK certificate chain.
CERT_DATA_QE_REPORT = 6

_HEADER = struct.Struct("<HHIHH16s20s")
_U32 = struct.Struct("<I")
_BODY_DESCRIPTOR = struct.Struct("<HI")
_CERT_DATA_HEADER = struct.Struct("<HI")


class TdAttributeBit:
    """Bit positions of TDX TD ATTRIBUTES (TDX module ABI, TD_PARAMS)."""

    DEBUG = 0
    SEPT_VE_DISABLE = 28
    MIGRATABLE = 29
    PKS = 30
    KL = 31
    PERFMON = 63


# TUD bits 7:1, SEC bits 27:8 and OTHER bits 62:32 are reserved.
TD_ATTRIBUTES_RESERVED_MASK = (
    0xFE | (((1 << 20) - 1) << 8) | (((1 << 31) - 1) << 32))


@dataclasses.dataclass(frozen=True)
class TdAttributes:
    """Decoded TD ATTRIBUTES (a little-endian 64-bit field)."""

    raw: int
    debug: bool
    sept_ve_disable: bool
    migratable: bool
    pks: bool
    kl: bool
    perfmon: bool
    reserved: int  # the reserved bits that are set (0 when well formed)

    @classmethod
    def decode(cls, raw: int) -> TdAttributes:
        def bit(n: int) -> bool:
            return bool(raw >> n & 1)

        return cls(
            raw=raw,
            debug=bit(TdAttributeBit.DEBUG),
            sept_ve_disable=bit(TdAttributeBit.SEPT_VE_DISABLE),
            migratable=bit(TdAttributeBit.MIGRATABLE),
            pks=bit(TdAttributeBit.PKS),
            kl=bit(TdAttributeBit.KL),
            perfmon=bit(TdAttributeBit.PERFMON),
            reserved=raw & TD_ATTRIBUTES_RESERVED_MASK,
        )


@dataclasses.dataclass(frozen=True)
class TdReport:
    """The TD report carried in a quote body (1.0, 1.5 or 1.5 extended)."""

    body_type: int
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None  # TD report 1.5 and later
    mr_service_td: bytes | None  # TD report 1.5 and later
    extension: bytes  # the 237 bytes of a 1.5 extended body, else b""

    @property
    def version(self) -> str:
        return "1.0" if self.body_type == BODY_TD_REPORT10 else "1.5"

    @property
    def attributes(self) -> TdAttributes:
        return TdAttributes.decode(int.from_bytes(self.td_attributes,
                                                  "little"))


@dataclasses.dataclass(frozen=True)
class QuoteSignatureData:
    """ECDSA-P256 quote signature data (not verified by the parser)."""

    ecdsa_signature: bytes
    attestation_key: bytes
    certification_data_type: int
    certification_data: bytes


@dataclasses.dataclass(frozen=True)
class TdxQuote:
    """A parsed TDX quote, version 4 or 5. Nothing here is verified."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int  # version 4 quotes always carry a TD report 1.0
    report: TdReport
    signature_data: QuoteSignatureData
    signed_length: int  # header and body: what the attestation key signs
    trailing_length: int  # bytes after the signature data (padding)


@dataclasses.dataclass(frozen=True)
class TdxClaims:
    """What a verified quote proves, for the policy evaluator."""

    quote_version: int
    tee_type: int
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    td_attributes: int
    debug: bool
    attributes: TdAttributes
    xfam: int
    tee_tcb_svn: bytes
    mr_service_td: bytes | None
    tcb_status: str
    advisory_ids: tuple[str, ...]
    fmspc: str  # 12 upper-case hex digits, from the signed TCB info

    def as_dict(self) -> dict[str, Any]:
        """Claims as plain data, bytes as lowercase hex."""
        return {
            "tee": "intel-tdx",
            "quote_version": self.quote_version,
            "mr_td": self.mr_td.hex(),
            "mr_config_id": self.mr_config_id.hex(),
            "mr_owner": self.mr_owner.hex(),
            "mr_owner_config": self.mr_owner_config.hex(),
            "mr_seam": self.mr_seam.hex(),
            "mr_signer_seam": self.mr_signer_seam.hex(),
            "rtmrs": [r.hex() for r in self.rtmrs],
            "report_data": self.report_data.hex(),
            "td_attributes": f"{self.td_attributes:#018x}",
            "debug": self.debug,
            "xfam": f"{self.xfam:#018x}",
            "tee_tcb_svn": self.tee_tcb_svn.hex(),
            "mr_service_td": (self.mr_service_td.hex()
                              if self.mr_service_td is not None else None),
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "fmspc": self.fmspc.lower(),
        }


# --------------------------------------------------------------------------
# Parsing


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise errors.InvalidInput(
            f"TDX quote truncated: {what} needs {end} bytes, "
            f"got {len(data)}", code="tdx_quote_truncated")


def _as_bytes(quote: object) -> bytes:
    if isinstance(quote, bytes):
        data = quote
    elif isinstance(quote, (bytearray, memoryview)):
        data = bytes(quote)
    else:
        raise errors.InvalidInput(
            f"TDX quote must be bytes, not {type(quote).__name__}",
            code="tdx_quote_not_bytes")
    if len(data) > MAX_QUOTE_SIZE:
        raise errors.InvalidInput(
            f"TDX quote of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}",
            code="tdx_quote_too_large")
    return data


def _parse_td_report(body: bytes, body_type: int) -> TdReport:
    def field(offset: int, size: int) -> bytes:
        return body[offset:offset + size]

    rtmrs = (field(328, 48), field(376, 48), field(424, 48),
             field(472, 48))
    is_15 = body_type in (BODY_TD_REPORT15, BODY_TD_REPORT15EX)
    return TdReport(
        body_type=body_type,
        tee_tcb_svn=field(0, 16),
        mr_seam=field(16, 48),
        mr_signer_seam=field(64, 48),
        seam_attributes=field(112, 8),
        td_attributes=field(120, 8),
        xfam=field(128, 8),
        mr_td=field(136, 48),
        mr_config_id=field(184, 48),
        mr_owner=field(232, 48),
        mr_owner_config=field(280, 48),
        rtmrs=rtmrs,
        report_data=field(520, 64),
        tee_tcb_svn2=field(584, 16) if is_15 else None,
        mr_service_td=field(600, 48) if is_15 else None,
        extension=body[TD_REPORT15_SIZE:] if is_15 else b"",
    )


def _parse_signature_data(sig: bytes) -> QuoteSignatureData:
    fixed = ECDSA_SIG_SIZE + ECDSA_KEY_SIZE + CERT_DATA_HEADER_SIZE
    if len(sig) < fixed:
        raise errors.InvalidInput(
            f"TDX quote signature data is {len(sig)} bytes, at least "
            f"{fixed} needed", code="tdx_signature_data_malformed")
    cert_type, cert_size = _CERT_DATA_HEADER.unpack_from(
        sig, ECDSA_SIG_SIZE + ECDSA_KEY_SIZE)
    if fixed + cert_size != len(sig):
        raise errors.InvalidInput(
            f"TDX quote certification data size {cert_size} does not "
            f"match the {len(sig) - fixed} bytes left in the signature "
            "data", code="tdx_signature_data_malformed")
    if cert_type != CERT_DATA_QE_REPORT:
        raise errors.InvalidInput(
            f"TDX quote certification data type {cert_type}, "
            f"{CERT_DATA_QE_REPORT} (QE report) expected",
            code="tdx_certification_data_type")
    return QuoteSignatureData(
        ecdsa_signature=sig[:ECDSA_SIG_SIZE],
        attestation_key=sig[ECDSA_SIG_SIZE:ECDSA_SIG_SIZE + ECDSA_KEY_SIZE],
        certification_data_type=cert_type,
        certification_data=sig[fixed:],
    )


def parse_quote(quote: bytes) -> TdxQuote:
    """Parse a binary TDX quote (version 4 or 5); verify nothing.

    Bytes after the declared signature data are tolerated (quote buffers
    are often padded) and counted in ``trailing_length``; they are not
    covered by any signature.
    """
    data = _as_bytes(quote)
    _need(data, HEADER_SIZE, "the header")
    (version, att_key_type, tee_type, qe_svn, pce_svn, qe_vendor_id,
     user_data) = _HEADER.unpack_from(data, 0)
    if tee_type == TEE_TYPE_SGX:
        raise errors.InvalidInput(
            f"not a TDX quote: SGX quote (version {version}, TEE type 0)",
            code="tdx_quote_is_sgx")
    if tee_type != TEE_TYPE_TDX:
        raise errors.InvalidInput(
            f"not a TDX quote: TEE type {tee_type:#x}",
            code="tdx_quote_tee_type")
    if version not in SUPPORTED_VERSIONS:
        raise errors.InvalidInput(
            f"unsupported TDX quote version {version} (4 or 5 expected)",
            code="tdx_quote_version")
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise errors.InvalidInput(
            f"unsupported TDX attestation key type {att_key_type} "
            "(2, ECDSA-P256, expected)", code="tdx_quote_att_key_type")

    if version == 4:
        body_type = BODY_TD_REPORT10
        body_offset = HEADER_SIZE
        body_size = TD_REPORT10_SIZE
    else:
        _need(data, HEADER_SIZE + BODY_DESCRIPTOR_SIZE, "the body type")
        body_type, body_size = _BODY_DESCRIPTOR.unpack_from(data,
                                                            HEADER_SIZE)
        if body_type == BODY_SGX_ENCLAVE_REPORT:
            raise errors.InvalidInput(
                "not a TDX quote: version 5 quote with an SGX enclave "
                "report body", code="tdx_quote_is_sgx")
        if body_type not in _BODY_SIZES:
            raise errors.InvalidInput(
                f"unsupported TDX quote body type {body_type}",
                code="tdx_quote_body_type")
        if body_size != _BODY_SIZES[body_type]:
            raise errors.InvalidInput(
                f"TDX quote body type {body_type} declares {body_size} "
                f"bytes, {_BODY_SIZES[body_type]} expected",
                code="tdx_quote_body_size")
        body_offset = HEADER_SIZE + BODY_DESCRIPTOR_SIZE

    signed_length = body_offset + body_size
    _need(data, signed_length + SIG_LEN_SIZE, "the body")
    report = _parse_td_report(data[body_offset:signed_length], body_type)
    (sig_len,) = _U32.unpack_from(data, signed_length)
    sig_offset = signed_length + SIG_LEN_SIZE
    _need(data, sig_offset + sig_len, "the signature data")
    signature = _parse_signature_data(data[sig_offset:sig_offset + sig_len])
    return TdxQuote(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        body_type=body_type,
        report=report,
        signature_data=signature,
        signed_length=signed_length,
        trailing_length=len(data) - sig_offset - sig_len,
    )


_HEX_WS = re.compile(r"\s+")


def quote_from_hex(text: str | bytes) -> bytes:
    """Decode a hex-text quote (optional ``0x`` prefix, whitespace)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise errors.InvalidInput(
                "TDX quote hex text is not ASCII",
                code="tdx_quote_hex_invalid") from None
    if not isinstance(text, str):
        raise errors.InvalidInput(
            f"TDX quote hex text must be str or bytes, not "
            f"{type(text).__name__}", code="tdx_quote_hex_invalid")
    compact = _HEX_WS.sub("", text)
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    try:
        return binascii.unhexlify(compact)
    except (binascii.Error, ValueError):
        raise errors.InvalidInput(
            "TDX quote hex text is not valid hexadecimal",
            code="tdx_quote_hex_invalid") from None


# --------------------------------------------------------------------------
# Verification (dcap-qvl behind a small typed wrapper)

_COLLATERAL_FIELDS = (
    "pck_crl_issuer_chain", "root_ca_crl", "pck_crl",
    "tcb_info_issuer_chain", "tcb_info", "tcb_info_signature",
    "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
)
_FMSPC = re.compile(r"[0-9A-Fa-f]{12}")


# The collateral's CRLs: the PCK CA's (revokes platforms' PCK certificates)
# and the root CA's.
CRL_FIELDS = ("pck_crl", "root_ca_crl")


def collateral_crls(doc: dict[str, Any]
                    ) -> dict[str, x509.CertificateRevocationList]:
    """The collateral's CRLs by field, parsed (hex DER or PEM).

    Not verified: :func:`verify_quote` does. ValueError (or KeyError,
    TypeError) for a document without them.
    """
    out = {}
    for field in CRL_FIELDS:
        value = doc[field]
        raw = (value.encode() if value.lstrip().startswith("-----")
               else bytes.fromhex(value))
        out[field] = (x509.load_pem_x509_crl(raw)
                      if raw.startswith(b"-----")
                      else x509.load_der_x509_crl(raw))
    return out


@dataclasses.dataclass(frozen=True)
class _Collateral:
    json_text: str
    fmspc: str


@dataclasses.dataclass(frozen=True)
class _QvlResult:
    status: str
    advisory_ids: tuple[str, ...]
    report: dict[str, str]  # flattened TD report fields, hex


# dcap-qvl reports failures as ValueError("Verification failed: ...")
# with an anyhow chain; map the known ones, in order, to stable codes.
_QVL_ERRORS: tuple[tuple[str, type[errors.AttestationError], str], ...] = (
    ("No matching TCB level found", errors.VerificationFailed,
     "tdx_tcb_no_match"),
    ("TCB status is invalid", errors.VerificationFailed,
     "tdx_tcb_status_invalid"),
    ("CrlExpired", errors.VerificationFailed, "tdx_collateral_expired"),
    ("TCBInfo expired", errors.VerificationFailed,
     "tdx_collateral_expired"),
    ("QE Identity expired", errors.VerificationFailed,
     "tdx_collateral_expired"),
    ("issue date is in the future", errors.VerificationFailed,
     "tdx_collateral_not_yet_valid"),
    ("CertExpired", errors.VerificationFailed, "tdx_cert_expired"),
    ("CertNotValidYet", errors.VerificationFailed,
     "tdx_cert_not_yet_valid"),
    ("CertRevoked", errors.VerificationFailed, "tdx_cert_revoked"),
    ("Failed to verify certificate chain", errors.VerificationFailed,
     "tdx_cert_chain_invalid"),
    ("ISV enclave report signature is invalid", errors.VerificationFailed,
     "tdx_signature_invalid"),
    ("Signature is invalid for qe_report", errors.VerificationFailed,
     "tdx_qe_report_signature_invalid"),
    ("QE report hash mismatch", errors.VerificationFailed,
     "tdx_qe_report_hash_mismatch"),
    ("in quote_collateral", errors.VerificationFailed,
     "tdx_collateral_signature_invalid"),
    ("Fmspc mismatch", errors.VerificationFailed, "tdx_fmspc_mismatch"),
    ("non-TDX TCB info", errors.VerificationFailed,
     "tdx_collateral_mismatch"),
    ("QE ISVSVN", errors.VerificationFailed, "tdx_qe_identity_mismatch"),
    ("QE report validation failed", errors.VerificationFailed,
     "tdx_qe_identity_mismatch"),
    ("Unknown QE vendor ID", errors.VerificationFailed,
     "tdx_qe_vendor_unknown"),
    ("Debug mode is enabled", errors.VerificationFailed,
     "tdx_debug_rejected"),
    ("Reserved bits in TD attributes", errors.VerificationFailed,
     "tdx_td_attributes_rejected"),
    ("SEPT_VE_DISABLE is not enabled", errors.VerificationFailed,
     "tdx_td_attributes_rejected"),
    ("Invalid MR service TD", errors.VerificationFailed,
     "tdx_mr_service_td_rejected"),
    ("Failed to decode quote", errors.InvalidInput, "tdx_quote_malformed"),
    ("Failed to extract PCK certificates", errors.InvalidInput,
     "tdx_pck_chain_malformed"),
    ("Failed to parse PCK certificate", errors.InvalidInput,
     "tdx_pck_chain_malformed"),
    ("Failed to decode TcbInfo", errors.InvalidInput,
     "tdx_collateral_invalid"),
    ("Failed to decode QeIdentity", errors.InvalidInput,
     "tdx_collateral_invalid"),
    ("Failed to parse JSON", errors.InvalidInput, "tdx_collateral_invalid"),
    ("Failed to parse PCK CRL", errors.InvalidInput,
     "tdx_collateral_invalid"),
    ("Failed to parse CRL", errors.InvalidInput, "tdx_collateral_invalid"),
    ("Failed to parse TCB Info", errors.InvalidInput,
     "tdx_collateral_invalid"),
    ("Failed to parse QE Identity", errors.InvalidInput,
     "tdx_collateral_invalid"),
)


def _map_qvl_error(message: str) -> errors.AttestationError:
    message = message.removeprefix("Verification failed: ")
    for needle, cls, code in _QVL_ERRORS:
        if needle in message:
            return cls(f"TDX quote verification: {message}", code=code)
    return errors.VerificationFailed(
        f"TDX quote verification: {message}",
        code="tdx_verification_failed")


def _is_library_error(exc: BaseException) -> bool:
    # pyo3 turns Rust panics into PanicException, a BaseException.
    return (isinstance(exc, Exception)
            or type(exc).__name__ == "PanicException")


def _flatten_report(doc: Any) -> dict[str, str]:
    """The TD report of dcap-qvl's VerifiedReport JSON, as flat hex."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ValueError("report is not a single-variant object")
    kind, node = next(iter(doc.items()))
    if kind not in ("TD10", "TD15", "TD15Ex"):
        raise ValueError(f"report is {kind}, not a TD report")
    flat: dict[str, str] = {}
    while isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                flat.setdefault(key, value)
        node = node.get("base")
    return flat


def _qvl_verify(quote: bytes, collateral_json: str,
                now_secs: int) -> _QvlResult:
    """Typed wrapper around dcap_qvl; raises only our exceptions."""
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except BaseException as exc:
        if not _is_library_error(exc):
            raise
        raise errors.InvalidInput(
            f"TDX collateral rejected by dcap-qvl: {exc}",
            code="tdx_collateral_invalid") from None
    try:
        verified = dcap_qvl.verify(quote, collateral, now_secs)
        status = verified.status
        advisories = verified.advisory_ids
        report_doc = json.loads(verified.to_json()).get("report")
    except BaseException as exc:
        if not _is_library_error(exc):
            raise
        raise _map_qvl_error(str(exc)) from None
    try:
        report = _flatten_report(report_doc)
        if not isinstance(status, str) or not all(
                isinstance(a, str) for a in advisories):
            raise ValueError("status or advisory ids are not strings")
    except (TypeError, ValueError) as exc:
        raise errors.VerificationFailed(
            f"unexpected dcap-qvl result: {exc}",
            code="tdx_verification_failed") from None
    return _QvlResult(status=status, advisory_ids=tuple(advisories),
                      report=report)


def _load_collateral(collateral: dict[str, Any] | bytes | str
                     ) -> _Collateral:
    try:
        if isinstance(collateral, dict):
            doc: Any = collateral
            text = json.dumps(collateral)
        else:
            if isinstance(collateral, bytes):
                collateral = collateral.decode("utf-8")
            if not isinstance(collateral, str):
                raise TypeError(type(collateral).__name__)
            text = collateral
            doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        missing = [f for f in _COLLATERAL_FIELDS
                   if not isinstance(doc.get(f), str)]
        if missing:
            raise ValueError("missing or non-string " + ", ".join(missing))
        tcb_info = json.loads(doc["tcb_info"])
        fmspc = tcb_info.get("fmspc") if isinstance(tcb_info, dict) else None
        if not isinstance(fmspc, str) or not _FMSPC.fullmatch(fmspc):
            raise ValueError("tcb_info has no 12-hex-digit fmspc")
    except (TypeError, ValueError, RecursionError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise errors.InvalidInput(
            f"TDX collateral is not QuoteCollateralV3 JSON: {exc}",
            code="tdx_collateral_invalid") from None
    return _Collateral(json_text=text, fmspc=fmspc.upper())


def load_collateral(collateral: dict[str, Any] | bytes | str
                    ) -> _Collateral:
    """Parse QuoteCollateralV3 (not verified: :func:`verify_quote` does)."""
    return _load_collateral(collateral)


def _now_secs(at: datetime.datetime) -> int:
    if not isinstance(at, datetime.datetime) or at.utcoffset() is None:
        raise errors.InvalidInput(
            "verification time must be a timezone-aware datetime",
            code="tdx_verification_time_invalid")
    secs = int(at.timestamp())
    if secs < 0:
        raise errors.InvalidInput(
            "verification time is before 1970",
            code="tdx_verification_time_invalid")
    return secs


def _cross_check(parsed: TdxQuote, qvl: _QvlResult) -> None:
    report = parsed.report
    ours = {
        "mr_td": report.mr_td,
        "report_data": report.report_data,
        "td_attributes": report.td_attributes,
        "xfam": report.xfam,
        "mr_seam": report.mr_seam,
        "mr_config_id": report.mr_config_id,
        "mr_owner": report.mr_owner,
        "mr_owner_config": report.mr_owner_config,
        "tee_tcb_svn": report.tee_tcb_svn,
        "rt_mr0": report.rtmrs[0],
        "rt_mr1": report.rtmrs[1],
        "rt_mr2": report.rtmrs[2],
        "rt_mr3": report.rtmrs[3],
    }
    if report.mr_service_td is not None:
        ours["mr_service_td"] = report.mr_service_td
    for name, value in ours.items():
        theirs = qvl.report.get(name)
        if theirs is None or theirs.lower() != value.hex():
            raise errors.VerificationFailed(
                f"dcap-qvl verified a report whose {name} differs from "
                "the parsed quote", code="tdx_report_mismatch")


def verify_quote(quote: bytes,
                 collateral: dict[str, Any] | bytes | str,
                 at: datetime.datetime) -> TdxClaims:
    """Verify a TDX quote against QuoteCollateralV3 at time ``at``.

    ``at`` is mandatory and must be timezone-aware: the collateral (TCB
    info, QE identity, CRLs, certificates) is checked for validity at that
    instant, never at the current time implicitly.
    """
    now_secs = _now_secs(at)
    data = _as_bytes(quote)
    parsed = parse_quote(data)
    loaded = _load_collateral(collateral)
    qvl = _qvl_verify(data, loaded.json_text, now_secs)
    _cross_check(parsed, qvl)
    report = parsed.report
    attributes = report.attributes
    return TdxClaims(
        quote_version=parsed.version,
        tee_type=parsed.tee_type,
        mr_td=report.mr_td,
        mr_config_id=report.mr_config_id,
        mr_owner=report.mr_owner,
        mr_owner_config=report.mr_owner_config,
        mr_seam=report.mr_seam,
        mr_signer_seam=report.mr_signer_seam,
        rtmrs=report.rtmrs,
        report_data=report.report_data,
        td_attributes=attributes.raw,
        debug=attributes.debug,
        attributes=attributes,
        xfam=int.from_bytes(report.xfam, "little"),
        tee_tcb_svn=report.tee_tcb_svn,
        mr_service_td=report.mr_service_td,
        tcb_status=qvl.status,
        advisory_ids=qvl.advisory_ids,
        fmspc=loaded.fmspc,
    )
