"""AMD SEV-SNP certificates: ARK, ASK, ASVK, VCEK and VLEK.

AMD's key distribution service (KDS) issues a chain per product:
ARK (self-signed root) -> ASK -> VCEK, and ARK -> ASVK -> VLEK. Every
signature in it is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt.

VCEKs and VLEKs carry serial number 0, which RFC 5280 forbids; recent
``cryptography`` releases warn when loading such a certificate and announce
that a future release will refuse it. So endorsement-key certificates are
never given to ``x509.load_der_x509_certificate``: their DER is walked
here to find the exact signed bytes (``tbsCertificate``), and the TBS is
decoded with pyasn1's RFC 5280 module. All signature checks still go through
``cryptography``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import functools
import importlib.resources

from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char as asn1_char
from pyasn1.type import univ
from pyasn1_modules import rfc4055
from pyasn1_modules import rfc5280

from barbican_tee.attestation import errors

RSASSA_PSS_OID = "1.2.840.113549.1.1.10"
SHA384_OID = "2.16.840.1.101.3.4.2.2"
MGF1_OID = "1.2.840.113549.1.1.8"

# AMD's VCEK/VLEK extension OIDs (KDS specification, "VCEK certificate").
_AMD = "1.3.6.1.4.1.3704.1."
OID_STRUCT_VERSION = _AMD + "1"
OID_PRODUCT_NAME = _AMD + "2"
OID_BL_SPL = _AMD + "3.1"
OID_TEE_SPL = _AMD + "3.2"
OID_SNP_SPL = _AMD + "3.3"
OID_UCODE_SPL = _AMD + "3.8"
OID_FMC_SPL = _AMD + "3.9"
OID_HWID = _AMD + "4"
OID_CSP_ID = _AMD + "5"

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


class Product(enum.Enum):
    """SNP-capable AMD EPYC generations."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def from_name(cls, name: str) -> Product:
        """Map a KDS product name ("Milan-B0", "Genoa") to a product."""
        base = name.split("-", 1)[0].strip().lower()
        for product in cls:
            if product.value.lower() == base:
                return product
        raise errors.InvalidInput(
            f"unknown AMD product name {name!r}", code="snp_unknown_product")


class SignerKind(enum.Enum):
    """Which endorsement key signs a report (SNP ABI SIGNING_KEY field)."""

    VCEK = "vcek"
    VLEK = "vlek"


def _ensure_der(data: bytes) -> bytes:
    """Accept DER or a single PEM certificate and return DER."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            ders = _pem_blocks(stripped)
        except (ValueError, TypeError) as exc:
            raise errors.InvalidInput(
                f"certificate PEM is not decodable: {exc}",
                code="snp_cert_malformed") from None
        if len(ders) != 1:
            raise errors.InvalidInput(
                f"expected one PEM certificate, found {len(ders)}",
                code="snp_cert_malformed")
        return ders[0]
    return data


def _pem_blocks(data: bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block of a PEM bundle, in order."""
    out: list[bytes] = []
    begin = b"-----BEGIN CERTIFICATE-----"
    end = b"-----END CERTIFICATE-----"
    pos = 0
    while True:
        start = data.find(begin, pos)
        if start < 0:
            break
        stop = data.find(end, start)
        if stop < 0:
            raise ValueError("unterminated PEM block")
        body = data[start + len(begin):stop]
        out.append(base64.b64decode(b"".join(body.split()), validate=True))
        pos = stop + len(end)
    return out


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, start of value, end of value) of the TLV at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("DER value runs past the end")
    return tag, pos, pos + length


@dataclasses.dataclass(frozen=True)
class EndorsementCert:
    """A parsed VCEK or VLEK certificate (signature not yet checked)."""

    der: bytes
    tbs: bytes
    signature: bytes
    issuer_cn: str
    subject_cn: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    public_key: ec.EllipticCurvePublicKey = dataclasses.field(repr=False)
    product_name: str | None
    bl_spl: int | None
    tee_spl: int | None
    snp_spl: int | None
    ucode_spl: int | None
    fmc_spl: int | None
    hwid: bytes | None
    csp_id: str | None

    @property
    def kind(self) -> SignerKind:
        if self.subject_cn == "SEV-VLEK" or self.issuer_cn.startswith(
                "SEV-VLEK-"):
            return SignerKind.VLEK
        return SignerKind.VCEK

    @property
    def product(self) -> Product | None:
        """The product this key belongs to, from the issuer's name."""
        name = self.issuer_cn.rsplit("-", 1)[-1]
        try:
            return Product.from_name(name)
        except errors.InvalidInput:
            if self.product_name:
                try:
                    return Product.from_name(self.product_name)
                except errors.InvalidInput:
                    return None
            return None


def _cn(name: rfc5280.Name) -> str:
    for rdn in name[0]:
        for atv in rdn:
            if str(atv["type"]) == "2.5.4.3":
                value, _ = der_decoder.decode(
                    bytes(atv["value"]), asn1Spec=rfc5280.DirectoryString())
                chosen = value.getComponent()
                return str(chosen)
    return ""


def _time(t: rfc5280.Time) -> datetime.datetime:
    chosen = t.getComponent()
    dt: datetime.datetime = chosen.asDateTime
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.astimezone(datetime.UTC)


def _ext_int(raw: bytes) -> int:
    value, rest = der_decoder.decode(raw, asn1Spec=univ.Integer())
    if rest:
        raise ValueError("trailing bytes in integer extension")
    number = int(value)
    if not 0 <= number <= 255:
        raise ValueError("security patch level out of range")
    return number


def _ext_ia5(raw: bytes) -> str:
    value, rest = der_decoder.decode(raw, asn1Spec=asn1_char.IA5String())
    if rest:
        raise ValueError("trailing bytes in string extension")
    return str(value)


def _ext_hwid(raw: bytes) -> bytes:
    # KDS has shipped hwID both as the raw 64 (Turin: 8) bytes and wrapped
    # in a DER OCTET STRING; accept both, nothing else.
    if len(raw) in (8, 64):
        return raw
    if len(raw) >= 2 and raw[0] == 0x04:
        value, rest = der_decoder.decode(raw, asn1Spec=univ.OctetString())
        inner = bytes(value)
        if not rest and len(inner) in (8, 64):
            return inner
    raise ValueError("hwID extension has an unexpected size")


def _check_pss_params(alg: rfc5280.AlgorithmIdentifier) -> None:
    """Insist on AMD's parameters: SHA-384, MGF1-SHA-384, salt 48."""
    if str(alg["algorithm"]) != RSASSA_PSS_OID:
        raise ValueError("certificate is not signed with RSASSA-PSS")
    params, rest = der_decoder.decode(
        bytes(alg["parameters"]), asn1Spec=rfc4055.RSASSA_PSS_params())
    mgf_hash, _ = der_decoder.decode(
        bytes(params["maskGenAlgorithm"]["parameters"]),
        asn1Spec=rfc5280.AlgorithmIdentifier())
    if (rest or str(params["hashAlgorithm"]["algorithm"]) != SHA384_OID
            or str(params["maskGenAlgorithm"]["algorithm"]) != MGF1_OID
            or str(mgf_hash["algorithm"]) != SHA384_OID
            or int(params["saltLength"]) != 48):
        raise ValueError("RSASSA-PSS parameters are not SHA-384/salt 48")


# A VCEK or VLEK from AMD's KDS is 1.3-1.4 KB of DER. The certificate
# comes from the request, unauthenticated until its signature is checked
# after the parse, and pyasn1's decoding costs about 2.5 us per byte (a
# 230 KB certificate of 9,000 extensions: 0.6 s of an API worker's CPU):
# anything larger than this is refused before it is decoded.
MAX_ENDORSEMENT_DER = 4096


def parse_endorsement_cert(data: bytes) -> EndorsementCert:
    """Parse a VCEK/VLEK from DER or PEM without cryptography's x509."""
    der = _ensure_der(data)
    if len(der) > MAX_ENDORSEMENT_DER:
        raise errors.InvalidInput(
            f"endorsement key certificate is {len(der)} bytes; an AMD "
            f"VCEK or VLEK is under {MAX_ENDORSEMENT_DER}",
            code="snp_cert_malformed")
    try:
        tag, start, end = _der_tlv(der, 0)
        if tag != 0x30 or end != len(der):
            raise ValueError("not a DER certificate")
        tbs_tag, tbs_start, tbs_end = _der_tlv(der, start)
        if tbs_tag != 0x30:
            raise ValueError("tbsCertificate is not a SEQUENCE")
        tbs_raw = der[start:tbs_end]
        alg_tag, alg_start, alg_end = _der_tlv(der, tbs_end)
        sig_tag, sig_start, sig_end = _der_tlv(der, alg_end)
        if alg_tag != 0x30 or sig_tag != 0x03 or sig_end != end:
            raise ValueError("bad certificate structure")
        if der[sig_start] != 0:
            raise ValueError("signature BIT STRING has unused bits")
        signature = der[sig_start + 1:sig_end]
        alg, _ = der_decoder.decode(
            der[tbs_end:alg_end], asn1Spec=rfc5280.AlgorithmIdentifier())
        _check_pss_params(alg)
        tbs, rest = der_decoder.decode(
            tbs_raw, asn1Spec=rfc5280.TBSCertificate())
        if rest:
            raise ValueError("trailing bytes after tbsCertificate")
        if der_encoder.encode(tbs["signature"]) != der[tbs_end:alg_end]:
            raise ValueError("the signature algorithm inside and outside "
                             "the signed part differ")
        spki_der = der_encoder.encode(tbs["subjectPublicKeyInfo"])
        public_key = serialization.load_der_public_key(spki_der)
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not (
                isinstance(public_key.curve, ec.SECP384R1)):
            raise ValueError("endorsement key is not an EC P-384 key")
        fields: dict[str, object] = {}
        for ext in tbs["extensions"] if tbs["extensions"].isValue else []:
            oid = str(ext["extnID"])
            raw = bytes(ext["extnValue"])
            if oid == OID_PRODUCT_NAME:
                fields["product_name"] = _ext_ia5(raw)
            elif oid == OID_BL_SPL:
                fields["bl_spl"] = _ext_int(raw)
            elif oid == OID_TEE_SPL:
                fields["tee_spl"] = _ext_int(raw)
            elif oid == OID_SNP_SPL:
                fields["snp_spl"] = _ext_int(raw)
            elif oid == OID_UCODE_SPL:
                fields["ucode_spl"] = _ext_int(raw)
            elif oid == OID_FMC_SPL:
                fields["fmc_spl"] = _ext_int(raw)
            elif oid == OID_HWID:
                fields["hwid"] = _ext_hwid(raw)
            elif oid == OID_CSP_ID:
                fields["csp_id"] = _ext_ia5(raw)
        validity = tbs["validity"]
        return EndorsementCert(
            der=der,
            tbs=tbs_raw,
            signature=signature,
            issuer_cn=_cn(tbs["issuer"]),
            subject_cn=_cn(tbs["subject"]),
            not_before=_time(validity["notBefore"]),
            not_after=_time(validity["notAfter"]),
            public_key=public_key,
            product_name=fields.get("product_name"),  # type: ignore[arg-type]
            bl_spl=fields.get("bl_spl"),  # type: ignore[arg-type]
            tee_spl=fields.get("tee_spl"),  # type: ignore[arg-type]
            snp_spl=fields.get("snp_spl"),  # type: ignore[arg-type]
            ucode_spl=fields.get("ucode_spl"),  # type: ignore[arg-type]
            fmc_spl=fields.get("fmc_spl"),  # type: ignore[arg-type]
            hwid=fields.get("hwid"),  # type: ignore[arg-type]
            csp_id=fields.get("csp_id"),  # type: ignore[arg-type]
        )
    except (ValueError, TypeError, IndexError, PyAsn1Error,
            UnsupportedAlgorithm) as exc:
        raise errors.InvalidInput(
            f"endorsement key certificate is not usable: {exc}",
            code="snp_cert_malformed") from None


def split_endorsement_bundle(
        data: bytes) -> tuple[bytes, list[x509.Certificate]]:
    """Split a PEM bundle (VCEK/VLEK first, then ASK/ARK) into parts.

    Cloud providers hand out the endorsement key together with its chain
    in one file; a single DER or PEM certificate comes back unchanged.
    """
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data, []
    try:
        blocks = _pem_blocks(data)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidInput(
            f"certificate PEM is not decodable: {exc}",
            code="snp_cert_malformed") from None
    if not blocks:
        raise errors.InvalidInput("no certificate in the PEM file",
                                  code="snp_cert_malformed")
    chain = []
    for der in blocks[1:]:
        chain.extend(load_ca_certs(der))
    return blocks[0], chain


def load_ca_certs(data: bytes) -> list[x509.Certificate]:
    """Load AMD CA certificates (ARK/ASK/ASVK) from PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        for cert in certs:
            # cryptography parses fields lazily: touch every field used
            # later so that a malformed one fails here, as bad input.
            _ = (cert.subject, cert.issuer, cert.serial_number,
                 cert.not_valid_before_utc, cert.not_valid_after_utc,
                 cert.signature_algorithm_oid, cert.public_key(),
                 cert.tbs_certificate_bytes, cert.signature,
                 cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        return certs
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise errors.InvalidInput(
            f"CA certificate bundle is not usable: {exc}",
            code="snp_cert_malformed") from None


def crl_order(crl: x509.CertificateRevocationList
              ) -> tuple[int, datetime.datetime]:
    """How recent a CRL is among its issuer's: (CRL number, thisUpdate).

    AMD's CRLs count up; Intel's PCS CRLs keep the number 1 from one issue
    to the next, so their thisUpdate decides. A CRL without a number ranks
    -1.
    """
    try:
        number = crl.extensions.get_extension_for_class(
            x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = -1
    return number, crl.last_update_utc


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Load a CRL from AMD's KDS (DER or PEM)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.signature, crl.tbs_certlist_bytes,
             [r.serial_number for r in crl])
        return crl
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise errors.InvalidInput(f"CRL is not usable: {exc}",
                                  code="snp_crl_malformed") from None


def rsa_pss_verify(issuer: x509.Certificate, signature: bytes,
                   tbs: bytes) -> bool:
    """Check an AMD RSASSA-PSS (SHA-384, salt 48) signature."""
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, tbs, _PSS, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


def ca_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` with AMD's PSS parameters."""
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        return False
    if cert.issuer != issuer.subject:
        return False
    return rsa_pss_verify(issuer, cert.signature, cert.tbs_certificate_bytes)


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


@dataclasses.dataclass(frozen=True)
class ProductRoots:
    """Trusted ARK and its intermediates (ASK, ASVK) for one product."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate | None
    asvk: x509.Certificate | None

    def intermediate(self, kind: SignerKind) -> x509.Certificate | None:
        return self.ask if kind is SignerKind.VCEK else self.asvk


def roots_from_bundle(data: bytes,
                      product: Product | None = None) -> ProductRoots:
    """Build :class:`ProductRoots` from a PEM bundle (ARK, ASK, ASVK).

    The ARK is the self-signed certificate; the ASK and ASVK are recognised
    by their common names (SEV-<product>, SEV-VLEK-<product>) and must be
    signed by that ARK.
    """
    certs = load_ca_certs(data)
    arks = [c for c in certs if c.subject == c.issuer and ca_signed_by(c, c)]
    if len(arks) != 1:
        raise errors.InvalidInput(
            "a trust bundle needs exactly one self-signed ARK",
            code="snp_trust_bundle")
    ark = arks[0]
    if product is None:
        product = Product.from_name(common_name(ark).split("-", 1)[-1])
    ask = asvk = None
    for cert in certs:
        if cert is ark or not ca_signed_by(cert, ark):
            continue
        if common_name(cert).startswith("SEV-VLEK-"):
            asvk = cert
        elif common_name(cert).startswith("SEV-"):
            ask = cert
    return ProductRoots(product=product, ark=ark, ask=ask, asvk=asvk)


@functools.cache
def builtin_roots() -> dict[Product, ProductRoots]:
    """AMD's own ARK/ASK/ASVK for Milan, Genoa and Turin (package data)."""
    out: dict[Product, ProductRoots] = {}
    base = importlib.resources.files("barbican_tee.attestation") / "data"
    for product in Product:
        data = (base / "snp" / f"{product.value.lower()}.pem").read_bytes()
        out[product] = roots_from_bundle(data, product)
    return out
