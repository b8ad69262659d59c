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
import hmac
from typing import Any
from typing import Protocol

from barbican_tee.attestation import errors
from barbican_tee.attestation import snp

TEE_MODELS = ("amd-sev", "amd-sev-es", "amd-sev-snp", "intel-tdx")
SIGNERS = ("vcek", "vlek")
TCB_FIELDS = ("bootloader", "tee", "snp", "microcode", "fmc")
TDX_TCB_STATUSES = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded", "OutOfDate",
    "OutOfDateConfigurationNeeded", "Revoked")

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

    ``debug``, ``migrate_ma`` and ``smt`` say whether the guest may have the
    feature (False: the bit must be clear; None: either). ``single_socket``
    True demands the bit. ``abi_minimum`` is (major, minor).
    """

    debug: bool = False
    migrate_ma: bool | None = None
    smt: bool | None = None
    single_socket: bool | None = None
    abi_minimum: tuple[int, int] | None = None


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
    signers: tuple[str, ...] = ()
    vmpl: int | None = None
    tcb_statuses: tuple[str, ...] = ("UpToDate",)
    mr_config_id: bytes | None = None
    mr_owner: bytes | None = None

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
        signers = tuple(_str_list(data.get("signers", []), "signers"))
        for signer in signers:
            if signer not in SIGNERS:
                raise _bad(f"signers must be among {', '.join(SIGNERS)}",
                           "policy_signers")
        vmpl = data.get("vmpl")
        if vmpl is not None and (not isinstance(vmpl, int) or isinstance(
                vmpl, bool) or not 0 <= vmpl <= 3):
            raise _bad("vmpl must be an integer from 0 to 3", "policy_vmpl")
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
        )

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (bytes as lowercase hex)."""
        gp = self.guest_policy
        return {
            "name": self.name,
            "tee": self.tee,
            "measurements": [m.hex() for m in self.measurements],
            "min_tcb": self.min_tcb.as_dict() if self.min_tcb else {},
            "guest_policy": {
                "debug": gp.debug, "migrate_ma": gp.migrate_ma,
                "smt": gp.smt, "single_socket": gp.single_socket,
                "abi_minimum": (f"{gp.abi_minimum[0]}.{gp.abi_minimum[1]}"
                                if gp.abi_minimum else None),
            },
            "host_data": self.host_data.hex() if self.host_data else None,
            "id_key_digests": [d.hex() for d in self.id_key_digests],
            "author_key_digests": [d.hex() for d in self.author_key_digests],
            "signers": list(self.signers),
            "vmpl": self.vmpl,
            "tcb_statuses": list(self.tcb_statuses),
            "mr_config_id": (self.mr_config_id.hex()
                             if self.mr_config_id else None),
            "mr_owner": self.mr_owner.hex() if self.mr_owner else None,
        }


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
               "abi_minimum"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(f"unknown guest_policy keys: {', '.join(unknown)}",
                   "policy_guest_policy")
    for key in ("debug", "migrate_ma", "smt", "single_socket"):
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
    return GuestPolicyRequirements(
        debug=bool(value.get("debug", False)),
        migrate_ma=value.get("migrate_ma"),
        smt=value.get("smt"),
        single_socket=value.get("single_socket"),
        abi_minimum=abi_tuple)


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
    if policy.min_tcb is not None:
        low = verified.reported_tcb.meets(policy.min_tcb)
        if low:
            out.append(Failure("policy_tcb_below_minimum",
                               "reported TCB is below the policy minimum "
                               f"in: {', '.join(low)}"))
    gp = policy.guest_policy
    if r.policy.debug and not gp.debug:
        out.append(Failure("policy_debug",
                           "the guest was launched with debugging allowed"))
    if gp.migrate_ma is False and r.policy.migrate_ma:
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
    if policy.signers and verified.signer.value not in policy.signers:
        out.append(Failure("policy_signer",
                           f"the report is signed by a "
                           f"{verified.signer.value.upper()}, the policy "
                           f"allows {', '.join(policy.signers)}"))
    if policy.vmpl is not None and r.vmpl != policy.vmpl:
        out.append(Failure("policy_vmpl",
                           f"the report is from VMPL {r.vmpl}, the policy "
                           f"requires {policy.vmpl}"))
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
    return Result(tuple(out))
