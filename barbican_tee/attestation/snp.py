"""AMD SEV-SNP attestation reports: parsing and verification.

The report is the 1184-byte ATTESTATION_REPORT structure of the SEV-SNP
firmware ABI specification (AMD publication 56860), versions 2 to 5. It is
parsed once, with explicit offsets, into :class:`AttestationReport`;
:class:`SnpVerifier` then runs a pipeline of named checks (signature,
certificate chain, TCB binding, chip binding, product, revocation), each
with its own error code. Policy evaluation lives in
:mod:`barbican_tee.attestation.policy` and never runs here.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
import dataclasses
import datetime
import hashlib
import hmac
import struct
import threading
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives import hashes
from cryptography import x509
from oslo_config import cfg

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation.snp_certs import Product
from barbican_tee.attestation.snp_certs import SignerKind
from barbican_tee.conf import attestation as attestation_conf

REPORT_SIZE = 0x4A0  # 1184
SIGNED_SIZE = 0x2A0  # the signature covers bytes [0, 0x2A0)
MIN_VERSION = 2
MAX_VERSION = 5
SIG_ALGO_ECDSA_P384_SHA384 = 1


class GuestPolicy:
    """Bit positions of the SNP guest policy (ABI spec, GUEST_POLICY)."""

    SMT = 16
    RESERVED_MBO = 17
    MIGRATE_MA = 18
    DEBUG = 19
    SINGLE_SOCKET = 20
    CXL_ALLOW = 21
    MEM_AES_256_XTS = 22
    RAPL_DIS = 23
    CIPHERTEXT_HIDING = 24
    PAGE_SWAP_DISABLE = 25


@dataclasses.dataclass(frozen=True)
class DecodedGuestPolicy:
    raw: int
    abi_major: int
    abi_minor: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allow: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding: bool
    page_swap_disable: bool

    @classmethod
    def decode(cls, raw: int) -> DecodedGuestPolicy:
        def bit(n: int) -> bool:
            return bool(raw >> n & 1)

        return cls(
            raw=raw,
            abi_minor=raw & 0xFF,
            abi_major=raw >> 8 & 0xFF,
            smt=bit(GuestPolicy.SMT),
            migrate_ma=bit(GuestPolicy.MIGRATE_MA),
            debug=bit(GuestPolicy.DEBUG),
            single_socket=bit(GuestPolicy.SINGLE_SOCKET),
            cxl_allow=bit(GuestPolicy.CXL_ALLOW),
            mem_aes_256_xts=bit(GuestPolicy.MEM_AES_256_XTS),
            rapl_dis=bit(GuestPolicy.RAPL_DIS),
            ciphertext_hiding=bit(GuestPolicy.CIPHERTEXT_HIDING),
            page_swap_disable=bit(GuestPolicy.PAGE_SWAP_DISABLE),
        )


@dataclasses.dataclass(frozen=True)
class PlatformInfo:
    raw: int
    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_enabled: bool
    alias_check_complete: bool

    @classmethod
    def decode(cls, raw: int) -> PlatformInfo:
        return cls(raw=raw,
                   smt_enabled=bool(raw & 1),
                   tsme_enabled=bool(raw >> 1 & 1),
                   ecc_enabled=bool(raw >> 2 & 1),
                   rapl_disabled=bool(raw >> 3 & 1),
                   ciphertext_hiding_enabled=bool(raw >> 4 & 1),
                   alias_check_complete=bool(raw >> 5 & 1))


@dataclasses.dataclass(frozen=True, order=True)
class TcbVersion:
    """Security patch levels of one TCB_VERSION value.

    Milan and Genoa lay the 64-bit value out as bootloader, tee, 4 reserved
    bytes, snp, microcode; Turin as fmc, bootloader, tee, snp, 3 reserved
    bytes, microcode. ``fmc`` is None on products without it.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: int, product: Product | None) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if product is Product.TURIN:
            return cls(fmc=b[0], bootloader=b[1], tee=b[2], snp=b[3],
                       microcode=b[7])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def encode(self, product: Product | None) -> int:
        """The 64-bit TCB_VERSION value; the inverse of :meth:`decode`."""
        if product is Product.TURIN:
            b = bytes([self.fmc or 0, self.bootloader, self.tee, self.snp,
                       0, 0, 0, self.microcode])
        else:
            b = bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp,
                       self.microcode])
        return int.from_bytes(b, "little")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TcbVersion:
        """The inverse of :meth:`as_dict` (``fmc`` optional).

        Raises KeyError, TypeError or ValueError for a mapping that lacks
        a field or holds a value that is no integer.
        """
        fmc = doc.get("fmc")
        return cls(bootloader=int(doc["bootloader"]), tee=int(doc["tee"]),
                   snp=int(doc["snp"]), microcode=int(doc["microcode"]),
                   fmc=None if fmc is None else int(fmc))

    def as_dict(self) -> dict[str, int]:
        out = {"bootloader": self.bootloader, "tee": self.tee,
               "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def meets(self, minimum: TcbVersion) -> list[str]:
        """Names of the components that are below ``minimum``."""
        low = [name for name, value in self.as_dict().items()
               if name != "fmc" and value < getattr(minimum, name)]
        if minimum.fmc is not None and (self.fmc or 0) < minimum.fmc:
            low.append("fmc")
        return low


def product_from_cpuid(family: int, model: int) -> Product | None:
    """The EPYC generation of a CPUID family/model pair, if SNP-capable."""
    if family == 0x19 and model <= 0x0F:
        return Product.MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return Product.GENOA
    if family == 0x1A and model <= 0x11:
        return Product.TURIN
    return None


@dataclasses.dataclass(frozen=True)
class AttestationReport:
    """Every field of an SEV-SNP ATTESTATION_REPORT (versions 2 to 5)."""

    raw: bytes = dataclasses.field(repr=False)
    version: int
    guest_svn: int
    policy: DecodedGuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: PlatformInfo
    author_key_en: bool
    mask_chip_key: bool
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb_raw: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb_raw: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signer(self) -> SignerKind | None:
        if self.signing_key == 0:
            return SignerKind.VCEK
        if self.signing_key == 1:
            return SignerKind.VLEK
        return None

    @property
    def product_from_cpuid(self) -> Product | None:
        """The product named by the CPUID fields (report version 3 on)."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def tcb(self, which: str, product: Product | None) -> TcbVersion:
        raw = {"reported": self.reported_tcb_raw,
               "current": self.current_tcb_raw,
               "committed": self.committed_tcb_raw,
               "launch": self.launch_tcb_raw}[which]
        return TcbVersion.decode(raw, product)


def product_hint(data: bytes) -> Product | None:
    """The product a raw report's CPUID fields name, unverified.

    Version 3 reports on carry CPUID_FAM_ID and CPUID_MOD_ID (offsets
    0x188, 0x189); None for anything else. Only a hint (to read ahead what
    the report's verification will need): nothing is checked here.
    """
    if len(data) != REPORT_SIZE:
        return None
    version = int.from_bytes(data[:4], "little")
    if not max(3, MIN_VERSION) <= version <= MAX_VERSION:
        return None
    return product_from_cpuid(data[0x188], data[0x189])


_LAYOUT = struct.Struct(
    "<IIQ16s16sIIQQII64s48s32s48s48s32s32sQBBB21s64sQBBBxBBBxQQQ152x72s72s")
# Offsets follow the ABI table; the signature (r, s) starts at 0x2A0.
assert _LAYOUT.size == SIGNED_SIZE + 2 * 72


def parse_report(data: bytes) -> AttestationReport:
    """Parse a raw 1184-byte SNP report; refuse anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.InvalidInput("report must be bytes",
                                  code="snp_report_type")
    data = bytes(data)
    if len(data) < REPORT_SIZE:
        raise errors.InvalidInput(
            f"SNP report is {len(data)} bytes, expected {REPORT_SIZE}",
            code="snp_report_truncated")
    if len(data) > REPORT_SIZE:
        raise errors.InvalidInput(
            f"SNP report is {len(data)} bytes, expected {REPORT_SIZE}",
            code="snp_report_oversized")
    f = _LAYOUT.unpack_from(data, 0)
    version = f[0]
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise errors.InvalidInput(
            f"SNP report version {version} is not supported "
            f"(supported: {MIN_VERSION} to {MAX_VERSION})",
            code="snp_report_version")
    signature_algo = f[6]
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise errors.InvalidInput(
            f"SNP report signature algorithm {signature_algo} is not "
            "ECDSA P-384 with SHA-384",
            code="snp_report_sig_algo")
    signer_info = f[9]
    has_cpuid = version >= 3
    has_mit = version >= 5
    return AttestationReport(
        raw=data,
        version=version,
        guest_svn=f[1],
        policy=DecodedGuestPolicy.decode(f[2]),
        family_id=f[3],
        image_id=f[4],
        vmpl=f[5],
        signature_algo=signature_algo,
        current_tcb_raw=f[7],
        platform_info=PlatformInfo.decode(f[8]),
        author_key_en=bool(signer_info & 1),
        mask_chip_key=bool(signer_info >> 1 & 1),
        signing_key=signer_info >> 2 & 0x7,
        report_data=f[11],
        measurement=f[12],
        host_data=f[13],
        id_key_digest=f[14],
        author_key_digest=f[15],
        report_id=f[16],
        report_id_ma=f[17],
        reported_tcb_raw=f[18],
        cpuid_fam_id=f[19] if has_cpuid else None,
        cpuid_mod_id=f[20] if has_cpuid else None,
        cpuid_step=f[21] if has_cpuid else None,
        chip_id=f[23],
        committed_tcb_raw=f[24],
        current_build=f[25],
        current_minor=f[26],
        current_major=f[27],
        committed_build=f[28],
        committed_minor=f[29],
        committed_major=f[30],
        launch_tcb_raw=f[31],
        launch_mit_vector=f[32] if has_mit else None,
        current_mit_vector=f[33] if has_mit else None,
        signature_r=f[34],
        signature_s=f[35],
    )


def _tcb_from_json(doc: Any, product: Product | None) -> int:
    return TcbVersion.from_dict(doc).encode(product)


def report_from_json(doc: Any) -> AttestationReport:
    """Rebuild the raw report from virtee/Trustee's JSON form.

    Trustee (and virtee/sev's serde) exchange reports as JSON objects with
    one member per field and byte arrays as lists of integers. Reserved
    bytes are not carried and are zero, as the firmware writes them; the
    rebuilt bytes are then parsed and verified like any raw report, so a
    wrong field shows up as a signature failure, never as a pass.
    """
    try:
        def blob(name: str, size: int) -> bytes:
            value = bytes(doc[name])
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes")
            return value

        version = int(doc["version"])
        fam = int(doc.get("cpuid_fam_id") or 0)
        mod = int(doc.get("cpuid_mod_id") or 0)
        product = product_from_cpuid(fam, mod)
        sig = doc["signature"]
        body = _LAYOUT.pack(
            version, int(doc["guest_svn"]), int(doc["policy"]),
            blob("family_id", 16), blob("image_id", 16), int(doc["vmpl"]),
            int(doc["sig_algo"]),
            _tcb_from_json(doc["current_tcb"], product),
            int(doc["plat_info"]), int(doc["key_info"]), 0,
            blob("report_data", 64), blob("measurement", 48),
            blob("host_data", 32), blob("id_key_digest", 48),
            blob("author_key_digest", 48), blob("report_id", 32),
            blob("report_id_ma", 32),
            _tcb_from_json(doc["reported_tcb"], product),
            fam, mod, int(doc.get("cpuid_step") or 0), b"\x00" * 21,
            blob("chip_id", 64),
            _tcb_from_json(doc["committed_tcb"], product),
            int(doc["current"]["build"]), int(doc["current"]["minor"]),
            int(doc["current"]["major"]), int(doc["committed"]["build"]),
            int(doc["committed"]["minor"]), int(doc["committed"]["major"]),
            _tcb_from_json(doc["launch_tcb"], product),
            int(doc.get("launch_mit_vector") or 0),
            int(doc.get("current_mit_vector") or 0),
            bytes(sig["r"]), bytes(sig["s"]))
    except (KeyError, TypeError, ValueError, OverflowError,
            struct.error) as exc:
        raise errors.InvalidInput(
            f"the JSON report is not usable: {exc}",
            code="snp_report_json") from None
    return parse_report(body + b"\x00" * (REPORT_SIZE - len(body)))


def load_report(data: bytes) -> AttestationReport:
    """Parse a report given raw or as hex text (as virtee ships it)."""
    if len(data) != REPORT_SIZE:
        text = data.strip()
        if len(text) == 2 * REPORT_SIZE:
            try:
                data = binascii.unhexlify(text)
            except (binascii.Error, ValueError):
                pass
    return parse_report(data)


@dataclasses.dataclass(frozen=True)
class VerifiedReport:
    """A report whose signature, chain and bindings all verified."""

    report: AttestationReport
    product: Product
    signer: SignerKind
    reported_tcb: TcbVersion
    endorsement: snp_certs.EndorsementCert = dataclasses.field(repr=False)
    # The operator's TCB floor for this product (``[tee_attestation]
    # tcb_floor_*``), which a policy can only raise; None: no floor.
    tcb_floor: TcbVersion | None = None
    # The ASK/ASVK whose signature on the endorsement key verified and
    # the pinned roots above it (kept with a cached endorsement key, so a
    # revocation check can name exactly the certificate that signed it).
    intermediate: x509.Certificate | None = dataclasses.field(
        default=None, repr=False, compare=False)
    roots: snp_certs.ProductRoots | None = dataclasses.field(
        default=None, repr=False, compare=False)

    def claims(self) -> dict[str, object]:
        """Claims as plain data, bytes as lowercase hex."""
        r = self.report
        return {
            "tee": "amd-sev-snp",
            "version": r.version,
            "product": self.product.value,
            "signer": self.signer.value,
            "measurement": r.measurement.hex(),
            "host_data": r.host_data.hex(),
            "report_data": r.report_data.hex(),
            "chip_id": r.chip_id.hex(),
            "id_key_digest": r.id_key_digest.hex(),
            "author_key_digest": r.author_key_digest.hex(),
            "family_id": r.family_id.hex(),
            "image_id": r.image_id.hex(),
            "report_id": r.report_id.hex(),
            "guest_svn": r.guest_svn,
            "vmpl": r.vmpl,
            "policy": {
                "raw": f"{r.policy.raw:#x}",
                "abi_major": r.policy.abi_major,
                "abi_minor": r.policy.abi_minor,
                "smt": r.policy.smt,
                "migrate_ma": r.policy.migrate_ma,
                "debug": r.policy.debug,
                "single_socket": r.policy.single_socket,
            },
            "reported_tcb": self.reported_tcb.as_dict(),
            "committed_tcb": r.tcb("committed", self.product).as_dict(),
            "launch_tcb": r.tcb("launch", self.product).as_dict(),
            "current_tcb": r.tcb("current", self.product).as_dict(),
            "firmware": f"{r.current_major}.{r.current_minor}."
                        f"{r.current_build}",
            "platform_info": f"{r.platform_info.raw:#x}",
        }


def _signature_der(report: AttestationReport) -> bytes:
    # r and s are little-endian, zero-extended to 72 bytes.
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    return asym_utils.encode_dss_signature(r, s)


def verify_report_signature(report: AttestationReport,
                            key: ec.EllipticCurvePublicKey) -> None:
    try:
        key.verify(_signature_der(report), report.signed_bytes,
                   ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise errors.VerificationFailed(
            "the report signature does not verify with the endorsement key",
            code="snp_signature_invalid") from None


@dataclasses.dataclass(frozen=True)
class _VerifiedKey:
    cert: snp_certs.EndorsementCert
    product: Product
    roots: snp_certs.ProductRoots
    intermediate: x509.Certificate


class SnpVerifier:
    """Verify SNP reports against AMD's roots (and configured extra ones).

    Verified endorsement-key chains are cached (keyed by the DER's SHA-256
    and the verification day), so verifying many reports from one host costs
    one ECDSA verification each.
    """

    def __init__(self,
                 extra_roots: list[snp_certs.ProductRoots] | None = None,
                 use_builtin_roots: bool = True,
                 crls: list[x509.CertificateRevocationList] | None = None,
                 cache_size: int = 256,
                 tcb_floors: dict[Product, TcbVersion | None] | None = None,
                 allow_stale_crls: bool = False) -> None:
        self._roots: list[snp_certs.ProductRoots] = []
        if use_builtin_roots:
            self._roots.extend(snp_certs.builtin_roots().values())
        self._roots.extend(extra_roots or [])
        self._crls = list(crls or [])
        self._allow_stale_crls = allow_stale_crls
        self.tcb_floors = dict(tcb_floors or {})
        self._cache: dict[tuple[bytes, str, datetime.date],
                          _VerifiedKey] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> SnpVerifier:
        """A verifier built from the ``[tee_attestation]`` options."""
        attestation_conf.register_opts(conf)
        group = conf.tee_attestation
        extra = []
        for path in group.extra_snp_trust_roots:
            extra.append(snp_certs.roots_from_bundle(_read_file(path)))
        crls = [snp_certs.load_crl(_read_file(path))
                for path in group.snp_crl_files]
        floors = {
            product: tcb_floor_from_conf(
                getattr(group, f"tcb_floor_{product.name.lower()}"),
                product)
            for product in Product}
        return cls(extra_roots=extra,
                   use_builtin_roots=group.use_builtin_amd_roots,
                   crls=crls, tcb_floors=floors,
                   allow_stale_crls=group.snp_crl_allow_stale)

    # -- chain -----------------------------------------------------------
    def _trusted(self, product: Product | None) -> list[
            snp_certs.ProductRoots]:
        return [r for r in self._roots
                if product is None or r.product is product]

    def trusted_roots(self, product: Product | None = None
                      ) -> list[snp_certs.ProductRoots]:
        """The pinned roots (of ``product``; None: all)."""
        return self._trusted(product)

    def _intermediate_from_chain(
            self, roots: snp_certs.ProductRoots, kind: SignerKind,
            chain: list[x509.Certificate]) -> x509.Certificate | None:
        """An ASK/ASVK from the caller's chain, if our ARK signed it."""
        prefix = "SEV-VLEK-" if kind is SignerKind.VLEK else "SEV-"
        for cert in chain:
            name = snp_certs.common_name(cert)
            if not name.startswith(prefix):
                continue
            if kind is SignerKind.VCEK and name.startswith("SEV-VLEK-"):
                continue
            if snp_certs.ca_signed_by(cert, roots.ark):
                return cert
        return None

    def _check_crl_fresh(self, product: Product,
                         at: datetime.datetime) -> None:
        """Refuse on a configured CRL for ``product`` past next_update.

        Checked on every report (verified endorsement keys are cached, the
        clock is not): a stale CRL may miss a revocation.
        """
        if self._allow_stale_crls:
            return
        for roots in self._trusted(product):
            for crl in self._crls:
                if crl.issuer != roots.ark.subject:
                    continue
                next_update = crl.next_update_utc
                if next_update is not None and at > next_update:
                    raise errors.VerificationFailed(
                        f"the {product.value} CRL expired at "
                        f"{next_update.isoformat()}: fetch a fresh one "
                        "from AMD's KDS", code="snp_crl_expired")

    def _check_revocation(self, roots: snp_certs.ProductRoots,
                          cert: x509.Certificate) -> None:
        for crl in self._crls:
            if crl.issuer != roots.ark.subject:
                continue
            if not snp_certs.rsa_pss_verify(
                    roots.ark, crl.signature, crl.tbs_certlist_bytes):
                raise errors.VerificationFailed(
                    "the CRL is not signed by the product's ARK",
                    code="snp_crl_signature")
            if crl.get_revoked_certificate_by_serial_number(
                    cert.serial_number) is not None:
                raise errors.VerificationFailed(
                    f"{snp_certs.common_name(cert)} is revoked by the "
                    "ARK's CRL", code="snp_cert_revoked")

    @staticmethod
    def _check_validity(name: str, not_before: datetime.datetime,
                        not_after: datetime.datetime,
                        at: datetime.datetime) -> None:
        if not not_before <= at <= not_after:
            raise errors.VerificationFailed(
                f"{name} is not valid at {at.isoformat()} (valid "
                f"{not_before.isoformat()} to {not_after.isoformat()})",
                code="snp_cert_expired")

    def verify_endorsement(self, cert_data: bytes,
                           chain: list[x509.Certificate] | None = None,
                           at: datetime.datetime | None = None,
                           expected_kind: SignerKind | None = None,
                           ) -> tuple[snp_certs.EndorsementCert, Product]:
        """Verify a VCEK/VLEK up to a trusted ARK; return it and product."""
        hit = self._verify_endorsement_path(cert_data, chain, at,
                                            expected_kind)
        return hit.cert, hit.product

    def _verify_endorsement_path(
            self, cert_data: bytes,
            chain: list[x509.Certificate] | None,
            at: datetime.datetime | None,
            expected_kind: SignerKind | None) -> _VerifiedKey:
        """Verify a VCEK/VLEK; return it with the ASK/ASVK that signed it."""
        at = _utc(at)
        digest = hashlib.sha256(cert_data).digest()
        key = (digest, expected_kind.value if expected_kind else "",
               at.date())
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and (hit.cert.not_before <= at
                                <= hit.cert.not_after):
            return hit
        cert = snp_certs.parse_endorsement_cert(cert_data)
        if expected_kind is not None and cert.kind is not expected_kind:
            raise errors.VerificationFailed(
                f"the report is signed by a {expected_kind.value.upper()} "
                f"but a {cert.kind.value.upper()} certificate was given",
                code="snp_signer_mismatch")
        self._check_validity(cert.subject_cn or "endorsement key",
                             cert.not_before, cert.not_after, at)
        candidates = self._trusted(cert.product)
        if not candidates:
            raise errors.VerificationFailed(
                "no trusted AMD root for the endorsement key's product",
                code="snp_untrusted_root")
        for roots in candidates:
            inter = None
            if chain:
                inter = self._intermediate_from_chain(roots, cert.kind,
                                                      chain)
            if inter is None:
                inter = roots.intermediate(cert.kind)
            if inter is None:
                continue
            if snp_certs.rsa_pss_verify(inter, cert.signature, cert.tbs):
                self._check_validity(snp_certs.common_name(roots.ark),
                                     roots.ark.not_valid_before_utc,
                                     roots.ark.not_valid_after_utc, at)
                self._check_validity(snp_certs.common_name(inter),
                                     inter.not_valid_before_utc,
                                     inter.not_valid_after_utc, at)
                self._check_revocation(roots, inter)
                verified = _VerifiedKey(cert, roots.product, roots, inter)
                with self._lock:
                    if len(self._cache) >= self._cache_size:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[key] = verified
                return verified
        raise errors.VerificationFailed(
            "the endorsement key does not chain to a trusted AMD root "
            f"({cert.issuer_cn or 'unknown issuer'})",
            code="snp_untrusted_root")

    # -- report ----------------------------------------------------------
    def verify(self, report: AttestationReport | bytes,
               endorsement: bytes,
               chain: list[x509.Certificate] | None = None,
               at: datetime.datetime | None = None) -> VerifiedReport:
        """Run every check; raise the first failure with its code."""
        if not isinstance(report, AttestationReport):
            report = parse_report(report)
        kind = report.signer
        if kind is None:
            raise errors.VerificationFailed(
                f"the report names signing key {report.signing_key}, "
                "which is neither VCEK nor VLEK",
                code="snp_signer_unknown")
        path = self._verify_endorsement_path(endorsement, chain, at, kind)
        cert, product = path.cert, path.product
        verify_report_signature(report, cert.public_key)
        self._check_crl_fresh(product, _utc(at))
        cpuid_product = report.product_from_cpuid
        if cpuid_product is not None and cpuid_product is not product:
            raise errors.VerificationFailed(
                f"the report's CPUID names {cpuid_product.value} but the "
                f"endorsement key is for {product.value}",
                code="snp_product_mismatch")
        reported = report.tcb("reported", product)
        self._check_tcb_binding(cert, reported)
        if kind is SignerKind.VCEK:
            self._check_chip_binding(cert, report, product)
        return VerifiedReport(report=report, product=product, signer=kind,
                              reported_tcb=reported, endorsement=cert,
                              tcb_floor=self.tcb_floors.get(product),
                              intermediate=path.intermediate,
                              roots=path.roots)

    @staticmethod
    def _check_tcb_binding(cert: snp_certs.EndorsementCert,
                           reported: TcbVersion) -> None:
        pairs = [("bootloader", cert.bl_spl, reported.bootloader),
                 ("tee", cert.tee_spl, reported.tee),
                 ("snp", cert.snp_spl, reported.snp),
                 ("microcode", cert.ucode_spl, reported.microcode)]
        if reported.fmc is not None:
            pairs.append(("fmc", cert.fmc_spl, reported.fmc))
        wrong = [name for name, in_cert, in_report in pairs
                 if in_cert is None or in_cert != in_report]
        if wrong:
            raise errors.VerificationFailed(
                "the endorsement key's TCB differs from the report's "
                f"reported_tcb in: {', '.join(wrong)}",
                code="snp_tcb_mismatch")

    @staticmethod
    def _check_chip_binding(cert: snp_certs.EndorsementCert,
                            report: AttestationReport,
                            product: Product) -> None:
        if cert.hwid is None:
            raise errors.VerificationFailed(
                "the VCEK has no hwID extension", code="snp_chip_mismatch")
        expected = report.chip_id[:8] if product is Product.TURIN else (
            report.chip_id)
        if report.mask_chip_key or not hmac.compare_digest(cert.hwid,
                                                           expected):
            raise errors.VerificationFailed(
                "the VCEK's hwID does not match the report's chip_id",
                code="snp_chip_mismatch")


def tcb_floor_from_conf(value: dict[str, str],
                        product: Product) -> TcbVersion | None:
    """A ``tcb_floor_<product>`` option as a TcbVersion (None if empty)."""
    if not value:
        return None
    allowed = {"bootloader", "tee", "snp", "microcode"}
    if product is Product.TURIN:
        allowed.add("fmc")
    try:
        parts = {k: int(v) for k, v in value.items()}
    except (TypeError, ValueError):
        parts = {"": -1}
    # Every SPL named: a field left out would silently mean 0, below the
    # default floor's.
    required = {"bootloader", "tee", "snp", "microcode"}
    if set(parts) - allowed or required - set(parts) or not all(
            0 <= v <= 255 for v in parts.values()):
        raise errors.InvalidInput(
            f"tcb_floor_{product.name.lower()} takes "
            f"{', '.join(sorted(required))}"
            + (" (and optionally fmc)" if "fmc" in allowed else "")
            + " as integers 0-255, all of them (empty: no floor)",
            code="config_tcb_floor")
    return TcbVersion(bootloader=parts.get("bootloader", 0),
                      tee=parts.get("tee", 0), snp=parts.get("snp", 0),
                      microcode=parts.get("microcode", 0),
                      fmc=parts.get("fmc"))


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.InvalidInput(
            f"cannot read {path!r}: {exc.strerror}",
            code="config_file_unreadable") from None


def _utc(at: datetime.datetime | None) -> datetime.datetime:
    if at is None:
        return datetime.datetime.now(datetime.UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=datetime.UTC)
    return at.astimezone(datetime.UTC)
