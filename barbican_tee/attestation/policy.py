"""Owner policies and their evaluation against verified claims.

A :class:`Policy` has the fields of the REST contract
(``POST /v1/tee/policies``). :func:`evaluate` runs only on claims that were
already verified (signature, chain, bindings) and returns *every* failed
check, each with a stable code, so that an audit record and a refusal can
name all of them.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from collections.abc import Mapping
import dataclasses
import functools
import hmac
import json
from typing import Any
from typing import Protocol

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp

TEE_MODELS = ("amd-sev", "amd-sev-es", "amd-sev-snp", "intel-tdx")
SIGNERS = ("vcek", "vlek")
# Strict defaults: a policy relaxes them only by saying so.
DEFAULT_SIGNERS = ("vcek",)
DEFAULT_VMPLS = (0,)
TCB_FIELDS = ("bootloader", "tee", "snp", "microcode", "fmc")
TDX_TCB_STATUSES = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded", "OutOfDate",
    "OutOfDateConfigurationNeeded", "Revoked")

# A lease (``max_age``) is 1 s to 1 year; the operator's
# ``[tee_attestation] lease_max_age`` may bound it lower.
MAX_AGE_LIMIT = 365 * 24 * 3600

_DIGEST_SIZES = {"amd-sev-snp": 48, "intel-tdx": 48, "amd-sev": 32,
                 "amd-sev-es": 32}


@dataclasses.dataclass(frozen=True)
class Failure:
    code: str
    message: str


@dataclasses.dataclass(frozen=True)
class Result:
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.failures]


@dataclasses.dataclass(frozen=True)
class GuestPolicyRequirements:
    """What the guest policy bits must say.

    ``debug`` and ``migrate_ma`` say whether the guest may have the feature
    (False, the default: the bit must be clear; True: either). ``smt``
    False demands the bit clear, None: either. ``single_socket`` True
    demands the bit. ``abi_minimum`` is (major, minor).

    SEV and SEV-ES launch policy: ``debug`` True allows NODBG=0;
    ``sev_key_sharing`` True allows NOKS=0; ``sev_nosend``, ``sev_domain``
    and ``sev_only`` True demand the NOSEND, DOMAIN and SEV bits (False or
    None: either).
    """

    debug: bool = False
    migrate_ma: bool = False
    smt: bool | None = None
    single_socket: bool | None = None
    abi_minimum: tuple[int, int] | None = None
    sev_key_sharing: bool = False
    sev_nosend: bool | None = None
    sev_domain: bool | None = None
    sev_only: bool | None = None


@dataclasses.dataclass(frozen=True)
class Policy:
    tee: str
    name: str = ""
    measurements: tuple[bytes, ...] = ()
    min_tcb: snp.TcbVersion | None = None
    guest_policy: GuestPolicyRequirements = GuestPolicyRequirements()
    host_data: bytes | None = None
    id_key_digests: tuple[bytes, ...] = ()
    author_key_digests: tuple[bytes, ...] = ()
    signers: tuple[str, ...] = DEFAULT_SIGNERS
    vmpl: tuple[int, ...] = DEFAULT_VMPLS
    tcb_statuses: tuple[str, ...] = ("UpToDate",)
    mr_config_id: bytes | None = None
    mr_owner: bytes | None = None
    # TDX pins, None: any. rtmrs[i] pins RTMRi.
    rtmrs: tuple[bytes | None, ...] = ()
    mr_seam: bytes | None = None
    xfam: int | None = None
    td_attributes: int | None = None
    # Seconds the released key may be held before the guest attests again
    # (the release answer's lease); None: no lease.
    max_age: int | None = None

    @classmethod
    def from_stored(cls, document: str) -> Policy:
        """A stored policy document (whose row authenticated), parsed.

        Parsing is deterministic and a Policy immutable: a document of a
        usual size is parsed once per process, not on every release. The
        cache holds at most 256 of them, each at most
        ``STORED_CACHED_MAX`` characters (a few MiB per process at worst,
        whoever creates policies); a longer one is parsed on every use.
        """
        if len(document) <= STORED_CACHED_MAX:
            return _parsed_stored(document)
        return cls.from_dict(json.loads(document))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Validate a policy document (REST body or CLI --policy file)."""
        if not isinstance(data, Mapping):
            raise _bad("policy must be a JSON object", "policy_malformed")
        # What GET adds (id, policy_ref, created) is accepted and ignored,
        # so a policy shown by the API can be sent back as it is.
        known = {f.name for f in dataclasses.fields(cls)} | {
            "id", "policy_ref", "created"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _bad(f"unknown policy fields: {', '.join(unknown)}",
                       "policy_unknown_field")
        tee = data.get("tee")
        if tee not in TEE_MODELS:
            raise _bad(f"tee must be one of {', '.join(TEE_MODELS)}",
                       "policy_tee")
        size = _DIGEST_SIZES[tee]
        name = data.get("name", "")
        if not isinstance(name, str) or len(name) > 255:
            raise _bad("name must be a string of at most 255 characters",
                       "policy_name")
        # An absent, null or empty list is the strict default (VCEK only):
        # a stored policy written before the default existed reads strict.
        raw_signers = data.get("signers")
        if raw_signers is None or raw_signers == []:
            raw_signers = list(DEFAULT_SIGNERS)
        signers = tuple(sorted(set(_str_list(raw_signers, "signers"))))
        for signer in signers:
            if signer not in SIGNERS:
                raise _bad(f"signers must be among {', '.join(SIGNERS)}",
                           "policy_signers")
        vmpl = _vmpls(data.get("vmpl"))
        statuses = tuple(_str_list(data.get("tcb_statuses", ["UpToDate"]),
                                   "tcb_statuses"))
        for status in statuses:
            if status not in TDX_TCB_STATUSES:
                raise _bad(f"unknown TDX TCB status {status!r}",
                           "policy_tcb_statuses")
        return cls(
            tee=tee,
            name=name,
            measurements=tuple(_hex(m, size, "measurements")
                               for m in _str_list(
                                   data.get("measurements", []),
                                   "measurements")),
            min_tcb=_min_tcb(data.get("min_tcb")),
            guest_policy=_guest_policy(data.get("guest_policy") or {}),
            host_data=_opt_hex(data.get("host_data"), 32, "host_data"),
            id_key_digests=tuple(
                _hex(d, 48, "id_key_digests")
                for d in _str_list(data.get("id_key_digests", []),
                                   "id_key_digests")),
            author_key_digests=tuple(
                _hex(d, 48, "author_key_digests")
                for d in _str_list(data.get("author_key_digests", []),
                                   "author_key_digests")),
            signers=signers,
            vmpl=vmpl,
            tcb_statuses=statuses,
            mr_config_id=_opt_hex(data.get("mr_config_id"), 48,
                                  "mr_config_id"),
            mr_owner=_opt_hex(data.get("mr_owner"), 48, "mr_owner"),
            rtmrs=_rtmrs(data.get("rtmrs")),
            mr_seam=_opt_hex(data.get("mr_seam"), 48, "mr_seam"),
            xfam=_opt_u64(data.get("xfam"), "xfam"),
            td_attributes=_opt_u64(data.get("td_attributes"),
                                   "td_attributes"),
            max_age=_max_age(data.get("max_age")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (bytes as lowercase hex).

        ``max_age`` is there only when set, so a policy without a lease
        reads exactly as before leases existed.
        """
        gp = self.guest_policy
        doc: dict[str, Any] = {
            "name": self.name,
            "tee": self.tee,
            "measurements": [m.hex() for m in self.measurements],
            "min_tcb": self.min_tcb.as_dict() if self.min_tcb else {},
            "guest_policy": {
                "debug": gp.debug, "migrate_ma": gp.migrate_ma,
                "smt": gp.smt, "single_socket": gp.single_socket,
                "abi_minimum": (f"{gp.abi_minimum[0]}.{gp.abi_minimum[1]}"
                                if gp.abi_minimum else None),
                "sev_key_sharing": gp.sev_key_sharing,
                "sev_nosend": gp.sev_nosend, "sev_domain": gp.sev_domain,
                "sev_only": gp.sev_only,
            },
            "host_data": self.host_data.hex() if self.host_data else None,
            "id_key_digests": [d.hex() for d in self.id_key_digests],
            "author_key_digests": [d.hex() for d in self.author_key_digests],
            "signers": list(self.signers),
            # One VMPL stays an integer, as before lists were accepted.
            "vmpl": (self.vmpl[0] if len(self.vmpl) == 1
                     else list(self.vmpl)),
            "tcb_statuses": list(self.tcb_statuses),
            "mr_config_id": (self.mr_config_id.hex()
                             if self.mr_config_id else None),
            "mr_owner": self.mr_owner.hex() if self.mr_owner else None,
            "rtmrs": [r.hex() if r is not None else None
                      for r in self.rtmrs],
            "mr_seam": self.mr_seam.hex() if self.mr_seam else None,
            "xfam": f"{self.xfam:#018x}" if self.xfam is not None else None,
            "td_attributes": (f"{self.td_attributes:#018x}"
                              if self.td_attributes is not None else None),
        }
        if self.max_age is not None:
            doc["max_age"] = self.max_age
        return doc


def _bad(message: str, code: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code)


def _str_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) for v in value):
        raise _bad(f"{field} must be a list of strings",
                   f"policy_{field}")
    return value


def _hex(value: str, size: int, field: str) -> bytes:
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        raise _bad(f"{field}: {value[:16]!r}... is not hex",
                   f"policy_{field}") from None
    if len(raw) != size:
        raise _bad(f"{field} entries must be {size} bytes "
                   f"({2 * size} hex digits), got {len(raw)}",
                   f"policy_{field}")
    return raw


def _opt_hex(value: Any, size: int, field: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{field} must be a hex string", f"policy_{field}")
    return _hex(value, size, field)


def _vmpls(value: Any) -> tuple[int, ...]:
    """``vmpl``: one VMPL or a list of them; absent or null is VMPL 0."""
    if value is None:
        return DEFAULT_VMPLS
    values = value if isinstance(value, list) else [value]
    if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3
            for v in values):
        raise _bad("vmpl must be an integer from 0 to 3 or a non-empty "
                   "list of them", "policy_vmpl")
    return tuple(sorted(set(values)))


def _rtmrs(value: Any) -> tuple[bytes | None, ...]:
    """``rtmrs``: up to four entries, RTMR0 first; null pins nothing."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 4:
        raise _bad("rtmrs must be a list of at most 4 entries (RTMR0 to "
                   "RTMR3), each 48 bytes of hex or null", "policy_rtmrs")
    pins = tuple(_opt_hex(v, 48, "rtmrs") for v in value)
    if all(p is None for p in pins):
        return ()
    return pins + (None,) * (4 - len(pins))


def _opt_u64(value: Any, field: str) -> int | None:
    """A 64-bit TDX field as hex text, as the claims show it."""
    if value is None:
        return None
    text = value[2:] if isinstance(value, str) and value[:2] in (
        "0x", "0X") else value
    if not isinstance(text, str) or len(text) != 16 or not all(
            c in "0123456789abcdefABCDEF" for c in text):
        raise _bad(f"{field} must be 16 hex digits (64 bits), e.g. "
                   "0x0000000000000000", f"policy_{field}")
    return int(text, 16)


def _max_age(value: Any) -> int | None:
    """``max_age``: whole seconds, 1 to :data:`MAX_AGE_LIMIT`; null: none."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not (
            1 <= value <= MAX_AGE_LIMIT):
        raise _bad(f"max_age must be a whole number of seconds from 1 to "
                   f"{MAX_AGE_LIMIT} (one year), or null for no lease",
                   "policy_max_age")
    return value


def _min_tcb(value: Any) -> snp.TcbVersion | None:
    if value in (None, {}):
        return None
    if not isinstance(value, Mapping):
        raise _bad("min_tcb must be an object", "policy_min_tcb")
    unknown = set(value) - set(TCB_FIELDS)
    bad = [k for k, v in value.items()
           if not isinstance(v, int) or isinstance(v, bool)
           or not 0 <= v <= 255]
    if unknown or bad:
        raise _bad("min_tcb takes integers 0-255 for "
                   f"{', '.join(TCB_FIELDS)}", "policy_min_tcb")
    return snp.TcbVersion(bootloader=value.get("bootloader", 0),
                          tee=value.get("tee", 0),
                          snp=value.get("snp", 0),
                          microcode=value.get("microcode", 0),
                          fmc=value.get("fmc"))


def _guest_policy(value: Any) -> GuestPolicyRequirements:
    if not isinstance(value, Mapping):
        raise _bad("guest_policy must be an object", "policy_guest_policy")
    allowed = {"debug", "migrate_ma", "smt", "single_socket",
               "abi_minimum", *_SEV_FLAGS}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(f"unknown guest_policy keys: {', '.join(unknown)}",
                   "policy_guest_policy")
    for key in ("debug", "migrate_ma", "smt", "single_socket",
                *_SEV_FLAGS):
        if value.get(key) is not None and not isinstance(value[key], bool):
            raise _bad(f"guest_policy.{key} must be true, false or null",
                       "policy_guest_policy")
    abi = value.get("abi_minimum")
    abi_tuple = None
    if abi is not None:
        try:
            major, minor = (int(p) for p in str(abi).split("."))
        except ValueError:
            raise _bad("guest_policy.abi_minimum must look like '1.51'",
                       "policy_guest_policy") from None
        if not (0 <= major <= 255 and 0 <= minor <= 255):
            raise _bad("guest_policy.abi_minimum parts must be 0-255",
                       "policy_guest_policy")
        abi_tuple = (major, minor)
    # debug, migrate_ma and sev_key_sharing relax a default: only an
    # explicit true does (null, as older stored policies say, is strict).
    return GuestPolicyRequirements(
        debug=bool(value.get("debug", False)),
        migrate_ma=bool(value.get("migrate_ma", False)),
        smt=value.get("smt"),
        single_socket=value.get("single_socket"),
        abi_minimum=abi_tuple,
        sev_key_sharing=bool(value.get("sev_key_sharing", False)),
        sev_nosend=value.get("sev_nosend"),
        sev_domain=value.get("sev_domain"),
        sev_only=value.get("sev_only"))


_SEV_FLAGS = ("sev_key_sharing", "sev_nosend", "sev_domain", "sev_only")


def _in(value: bytes, allowed: Iterable[bytes]) -> bool:
    # Constant time per comparison; the list itself is not secret.
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(value, candidate)
    return found


def evaluate_snp(policy: Policy, verified: snp.VerifiedReport) -> Result:
    """Every failed check of ``policy`` against a verified SNP report."""
    out: list[Failure] = []
    r = verified.report
    if policy.tee != "amd-sev-snp":
        out.append(Failure("policy_tee_mismatch",
                           f"the policy is for {policy.tee}, the evidence "
                           "is an SEV-SNP report"))
        return Result(tuple(out))
    if policy.measurements and not _in(r.measurement, policy.measurements):
        out.append(Failure("policy_measurement",
                           "the launch measurement is not one the policy "
                           "allows"))
    # The effective minimum is the field-wise maximum of the operator's
    # floor for the product and the policy's min_tcb: a policy can only
    # raise the floor. Each shortfall is named by whose minimum it misses.
    below_floor: list[str] = []
    if verified.tcb_floor is not None:
        below_floor = verified.reported_tcb.meets(verified.tcb_floor)
        if below_floor:
            out.append(Failure(
                "snp_tcb_below_floor",
                f"reported TCB is below the operator's floor for "
                f"{verified.product.value} in: {', '.join(below_floor)}"))
    if policy.min_tcb is not None:
        low = [name for name in verified.reported_tcb.meets(policy.min_tcb)
               if name not in below_floor]
        if low:
            out.append(Failure("policy_tcb_below_minimum",
                               "reported TCB is below the policy minimum "
                               f"in: {', '.join(low)}"))
    gp = policy.guest_policy
    if r.policy.debug and not gp.debug:
        out.append(Failure("policy_debug",
                           "the guest was launched with debugging allowed"))
    if r.policy.migrate_ma and not gp.migrate_ma:
        out.append(Failure("policy_migrate_ma",
                           "the guest allows a migration agent"))
    if gp.smt is False and r.policy.smt:
        out.append(Failure("policy_smt", "the guest policy allows SMT"))
    if gp.single_socket and not r.policy.single_socket:
        out.append(Failure("policy_single_socket",
                           "the guest is not restricted to one socket"))
    if gp.abi_minimum is not None and (
            (r.policy.abi_major, r.policy.abi_minor) < gp.abi_minimum):
        out.append(Failure("policy_abi",
                           f"the guest's minimum ABI "
                           f"{r.policy.abi_major}.{r.policy.abi_minor} is "
                           "below the policy's"))
    if policy.host_data is not None and not hmac.compare_digest(
            r.host_data, policy.host_data):
        out.append(Failure("policy_host_data",
                           "host_data does not match the policy"))
    if policy.id_key_digests and not _in(r.id_key_digest,
                                         policy.id_key_digests):
        out.append(Failure("policy_id_key_digest",
                           "the ID key digest is not one the policy "
                           "allows"))
    if policy.author_key_digests and not (
            r.author_key_en and _in(r.author_key_digest,
                                    policy.author_key_digests)):
        out.append(Failure("policy_author_key_digest",
                           "the author key digest is not one the policy "
                           "allows"))
    if verified.signer.value not in policy.signers:
        out.append(Failure("policy_signer",
                           f"the report is signed by a "
                           f"{verified.signer.value.upper()}, the policy "
                           f"allows {', '.join(policy.signers)}"))
    if r.vmpl not in policy.vmpl:
        out.append(Failure("policy_vmpl",
                           f"the report is from VMPL {r.vmpl}, the policy "
                           "allows VMPL "
                           f"{', '.join(str(v) for v in policy.vmpl)}"))
    return Result(tuple(out))


class TdxClaimsLike(Protocol):
    @property
    def mr_td(self) -> bytes: ...

    @property
    def mr_config_id(self) -> bytes: ...

    @property
    def mr_owner(self) -> bytes: ...

    @property
    def debug(self) -> bool: ...

    @property
    def tcb_status(self) -> str: ...

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]: ...

    @property
    def mr_seam(self) -> bytes: ...

    @property
    def xfam(self) -> int: ...

    @property
    def td_attributes(self) -> int: ...


def evaluate_tdx(policy: Policy, claims: TdxClaimsLike) -> Result:
    """Every failed check of ``policy`` against verified TDX claims."""
    out: list[Failure] = []
    if policy.tee != "intel-tdx":
        out.append(Failure("policy_tee_mismatch",
                           f"the policy is for {policy.tee}, the evidence "
                           "is a TDX quote"))
        return Result(tuple(out))
    if policy.measurements and not _in(claims.mr_td, policy.measurements):
        out.append(Failure("policy_measurement",
                           "MRTD is not one the policy allows"))
    if claims.tcb_status not in policy.tcb_statuses:
        out.append(Failure("policy_tcb_status",
                           f"the platform TCB status is "
                           f"{claims.tcb_status}, the policy accepts "
                           f"{', '.join(policy.tcb_statuses)}"))
    if claims.debug and not policy.guest_policy.debug:
        out.append(Failure("policy_debug",
                           "the TD was launched with debugging allowed"))
    if policy.mr_config_id is not None and not hmac.compare_digest(
            claims.mr_config_id, policy.mr_config_id):
        out.append(Failure("policy_mr_config_id",
                           "MRCONFIGID does not match the policy"))
    if policy.mr_owner is not None and not hmac.compare_digest(
            claims.mr_owner, policy.mr_owner):
        out.append(Failure("policy_mr_owner",
                           "MROWNER does not match the policy"))
    # policy.rtmrs is () (nothing pinned) or four entries.
    wrong = [f"RTMR{i}" for i, pin in enumerate(policy.rtmrs)
             if pin is not None
             and not hmac.compare_digest(claims.rtmrs[i], pin)]
    if wrong:
        out.append(Failure("policy_rtmr",
                           f"{', '.join(wrong)} do not match the policy"))
    if policy.mr_seam is not None and not hmac.compare_digest(
            claims.mr_seam, policy.mr_seam):
        out.append(Failure("policy_mr_seam",
                           "MRSEAM (the TDX module) does not match the "
                           "policy"))
    if policy.xfam is not None and claims.xfam != policy.xfam:
        out.append(Failure("policy_xfam",
                           f"XFAM is {claims.xfam:#018x}, the policy "
                           f"requires {policy.xfam:#018x}"))
    if policy.td_attributes is not None and (
            claims.td_attributes != policy.td_attributes):
        out.append(Failure("policy_td_attributes",
                           f"the TD attributes are "
                           f"{claims.td_attributes:#018x}, the policy "
                           f"requires {policy.td_attributes:#018x}"))
    return Result(tuple(out))


# SEV and SEV-ES guest policy (AMD SEV API specification, publication
# 55766, chapter 3 "Guest Policy"): bits 0-5 are flags, bits 16-23 and
# 24-31 the lowest firmware API_MAJOR and API_MINOR a platform must have to
# run the guest (checked by the firmware at LAUNCH_START and at
# RECEIVE_START on a migration target).
SEV_NODBG = 1 << 0
SEV_NOKS = 1 << 1
SEV_ES = 1 << 2
SEV_NOSEND = 1 << 3
SEV_DOMAIN = 1 << 4
SEV_ONLY = 1 << 5


def evaluate_sev_launch(policy: Policy, launch_policy: int,
                        api_major: int | None = None,
                        api_minor: int | None = None) -> Result:
    """Every failed check of an SEV/SEV-ES launch policy.

    ``launch_policy`` is the 32-bit guest policy the host chose for
    LAUNCH_START; it is bound into the session (POLICY_MAC) and into the
    launch measurement, so the firmware enforces what is checked here.
    ``api_major``/``api_minor`` are the firmware version the launch
    measurement reports (authenticated by its HMAC); None before launch.

    The firmware version that matters is the launching platform's, which
    the measurement proves. The policy's own API_MAJOR/API_MINOR fields
    only bind platforms the guest may be sent to; they are checked against
    ``abi_minimum`` only when NOSEND is clear (with NOSEND no other
    platform ever receives the guest).
    """
    out: list[Failure] = []
    if policy.tee not in ("amd-sev", "amd-sev-es"):
        out.append(Failure("policy_tee_mismatch",
                           f"the policy is for {policy.tee}, not SEV "
                           "pre-attestation"))
        return Result(tuple(out))
    gp = policy.guest_policy

    def bit(mask: int) -> bool:
        return bool(launch_policy & mask)

    if not bit(SEV_NODBG) and not gp.debug:
        out.append(Failure("sev_policy_debug",
                           "the launch policy allows debugging (NODBG=0)"))
    if not bit(SEV_NOKS) and not gp.sev_key_sharing:
        out.append(Failure("sev_policy_noks",
                           "the launch policy allows sharing keys with "
                           "other guests (NOKS=0)"))
    if policy.tee == "amd-sev-es" and not bit(SEV_ES):
        out.append(Failure("sev_policy_es",
                           "the policy is for amd-sev-es but the launch "
                           "policy lacks ES"))
    if gp.sev_nosend and not bit(SEV_NOSEND):
        out.append(Failure("sev_policy_nosend",
                           "the policy requires NOSEND, the launch policy "
                           "lacks it"))
    if gp.sev_domain and not bit(SEV_DOMAIN):
        out.append(Failure("sev_policy_domain",
                           "the policy requires DOMAIN, the launch policy "
                           "lacks it"))
    if gp.sev_only and not bit(SEV_ONLY):
        out.append(Failure("sev_policy_sev_only",
                           "the policy requires the SEV bit, the launch "
                           "policy lacks it"))
    if gp.abi_minimum is not None:
        pol_api = (launch_policy >> 16 & 0xFF, launch_policy >> 24 & 0xFF)
        if not bit(SEV_NOSEND) and pol_api < gp.abi_minimum:
            out.append(Failure(
                "sev_policy_api_version",
                f"the launch policy lets the guest be sent to a platform "
                f"with firmware API {pol_api[0]}.{pol_api[1]}, below the "
                f"policy's {gp.abi_minimum[0]}.{gp.abi_minimum[1]} (set "
                f"NOSEND or the policy's API fields)"))
        if api_major is not None and api_minor is not None and (
                (api_major, api_minor) < gp.abi_minimum):
            out.append(Failure(
                "sev_api_version",
                f"the platform's firmware API {api_major}.{api_minor} is "
                f"below the policy's {gp.abi_minimum[0]}."
                f"{gp.abi_minimum[1]}"))
    return Result(tuple(out))


# Stored policy documents up to this long are kept parsed (Policy.
# from_stored).
STORED_CACHED_MAX = 8 * 1024


@functools.lru_cache(maxsize=256)
def _parsed_stored(document: str) -> Policy:
    return Policy.from_dict(json.loads(document))
