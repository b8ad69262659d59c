"""The ``tee:`` flavor extra-spec namespace, read once into a typed request.

Upstream Nova owns *whether* a guest is memory-encrypted and with which
model (``hw:mem_encryption``, ``hw:mem_encryption_model`` and the image
properties ``hw_mem_encryption``/``hw_mem_encryption_model``). The ``tee:``
keys only refine that request: attestation, guest policy bits, minimum
firmware and TCB. This module has no Nova imports, so the API validators,
the API conflict check, the scheduler filter and the driver share one
reading of the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import re
from typing import Any

PREFIX = "tee:"

SEV = "amd-sev"
SEV_ES = "amd-sev-es"
SEV_SNP = "amd-sev-snp"
TDX = "intel-tdx"
MODELS = (SEV, SEV_ES, SEV_SNP, TDX)

_TRUE = {"1", "t", "true", "on", "y", "yes"}
_FALSE = {"0", "f", "false", "off", "n", "no"}
# 0-255 in decimal (leading zeros allowed), ASCII digits only: the same
# text Nova's validator (nova_tee.api.extra_specs) accepts at the API.
BYTE_PATTERN = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
VERSION_PATTERN = rf"{BYTE_PATTERN}\.{BYTE_PATTERN}"
_VERSION = re.compile(rf"({BYTE_PATTERN})\.({BYTE_PATTERN})")

# key -> (kind, models it applies to, description). ``kind`` is one of
# "bool", "byte", "version" or an enum tuple.
KEYS: dict[str, tuple[Any, tuple[str, ...], str]] = {
    "tee:attestation": (
        ("none", "required"), MODELS,
        "required: the guest must pass attestation before it gets its "
        "keys (SEV/SEV-ES: secret injection before the guest runs; "
        "SEV-SNP/TDX: runtime attestation against Barbican)."),
    "tee:snp_debug": (
        "bool", (SEV_SNP,),
        "Allow the hypervisor to debug the guest (SNP policy DEBUG). "
        "Default false; never set it for production guests."),
    "tee:snp_smt": (
        "bool", (SEV_SNP,),
        "Allow the guest on hosts with SMT enabled (SNP policy SMT). "
        "Default true, as upstream Nova."),
    "tee:snp_migrate_ma": (
        "bool", (SEV_SNP,),
        "Allow association with a migration agent (SNP policy "
        "MIGRATE_MA). Default false."),
    "tee:snp_single_socket": (
        "bool", (SEV_SNP,),
        "Restrict the guest to a single socket (SNP policy "
        "SINGLE_SOCKET). Default false."),
    "tee:snp_abi_minimum": (
        "version", (SEV_SNP,),
        "Lowest SNP firmware ABI the guest accepts, as MAJOR.MINOR "
        "(SNP policy ABI_MAJOR/ABI_MINOR)."),
    "tee:sev_nodbg": (
        "bool", (SEV, SEV_ES),
        "Forbid debugging of the guest (SEV policy NODBG). Default true."),
    "tee:sev_noks": (
        "bool", (SEV, SEV_ES),
        "Forbid sharing keys with other guests (SEV policy NOKS). "
        "Default true."),
    "tee:sev_nosend": (
        "bool", (SEV, SEV_ES),
        "Forbid sending the guest to another platform (SEV policy "
        "NOSEND). Default false."),
    "tee:sev_domain": (
        "bool", (SEV, SEV_ES),
        "Keep the guest within the platform's domain (SEV policy DOMAIN). "
        "Default true."),
    "tee:min_firmware": (
        "version", (SEV, SEV_ES, SEV_SNP),
        "Lowest AMD secure-processor firmware API version, as "
        "MAJOR.MINOR, of a host that may run the guest."),
    "tee:min_tcb_bootloader": (
        "byte", (SEV_SNP,), "Lowest boot loader SPL of the host's TCB."),
    "tee:min_tcb_tee": (
        "byte", (SEV_SNP,), "Lowest PSP OS (TEE) SPL of the host's TCB."),
    "tee:min_tcb_snp": (
        "byte", (SEV_SNP,), "Lowest SNP firmware SPL of the host's TCB."),
    "tee:min_tcb_microcode": (
        "byte", (SEV_SNP,), "Lowest microcode SPL of the host's TCB."),
    "tee:tdx_debug": (
        "bool", (TDX,),
        "Launch the trust domain debuggable (TD attribute DEBUG). "
        "Default false; never for production."),
}

TCB_KEYS = ("bootloader", "tee", "snp", "microcode")

# SEV policy bits (AMD SEV API, "Guest policy").
SEV_POLICY_NODBG = 0x01
SEV_POLICY_NOKS = 0x02
SEV_POLICY_ES = 0x04
SEV_POLICY_NOSEND = 0x08
SEV_POLICY_DOMAIN = 0x10
SEV_POLICY_SEV = 0x20
# SNP guest policy bits (SEV-SNP ABI, GUEST_POLICY).
SNP_POLICY_SMT = 1 << 16
SNP_POLICY_RESERVED = 1 << 17
SNP_POLICY_MIGRATE_MA = 1 << 18
SNP_POLICY_DEBUG = 1 << 19
SNP_POLICY_SINGLE_SOCKET = 1 << 20


class SpecError(ValueError):
    """A bad or contradictory ``tee:`` request; the message names keys."""


def parse_bool(value: str) -> bool | None:
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def parse_version(value: str) -> tuple[int, int] | None:
    match = _VERSION.fullmatch(str(value))
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def mentions_tee(key: str) -> bool:
    """Whether ``key`` is meant for this suite: ``tee:...`` or a near miss.

    ``TEE:attestation``, `` tee:attestation`` or ``tee :attestation`` are
    not ``tee:`` keys, and nothing of Nova reads them: such a flavor
    would boot unattested without a word. They count as ``tee:`` keys
    here, so that :func:`conflicts` names them and the API filter and the
    scheduler refuse the flavor (the driver, which only sees flavors that
    passed both, reads exact ``tee:`` keys).
    """
    key = str(key)
    if key.startswith(PREFIX):
        return True
    namespace, colon, _ = key.partition(":")
    return bool(colon) and namespace.strip().lower() == PREFIX[:-1]


def check_value(key: str, value: str) -> str | None:
    """Why ``value`` is wrong for ``key`` (None if it is right)."""
    if key not in KEYS:
        if not key.startswith(PREFIX):
            return (f"'{key}' is not a tee: extra spec: keys are spelled "
                    "exactly tee:<name>, in lower case, without spaces")
        return f"'{key}' is not a known tee: extra spec"
    kind = KEYS[key][0]
    if kind == "bool":
        if parse_bool(value) is None:
            return f"{key} must be true or false, not '{value}'"
    elif kind == "byte":
        if not re.fullmatch(BYTE_PATTERN, str(value)):
            return f"{key} must be an integer from 0 to 255, not '{value}'"
    elif kind == "version":
        if parse_version(value) is None:
            return f"{key} must look like MAJOR.MINOR (e.g. 1.55)"
    elif str(value) not in kind:
        return f"{key} must be one of {', '.join(kind)}, not '{value}'"
    return None


@dataclasses.dataclass(frozen=True)
class TEERequest:
    """What one flavor (plus image) asks of a confidential host."""

    model: str
    attestation: bool
    policy: int
    min_firmware: tuple[int, int] | None
    min_tcb: tuple[int, int, int, int] | None
    tdx_debug: bool = False

    @property
    def is_snp(self) -> bool:
        return self.model == SEV_SNP


def _encryption(extra_specs: Mapping[str, str],
                image_props: Mapping[str, Any]) -> tuple[bool, str | None]:
    flavor_on = parse_bool(extra_specs.get("hw:mem_encryption", "false"))
    image_on = image_props.get("hw_mem_encryption")
    if isinstance(image_on, str):
        image_on = parse_bool(image_on)
    enabled = bool(flavor_on) or bool(image_on)
    model = (extra_specs.get("hw:mem_encryption_model")
             or image_props.get("hw_mem_encryption_model"))
    return enabled, (str(model) if model else None)


def conflicts(extra_specs: Mapping[str, str],
              image_props: Mapping[str, Any] | None = None) -> list[str]:
    """Every contradiction between ``tee:`` keys and ``hw:mem_encryption*``.

    Each message names the keys that conflict, so an API user can fix the
    flavor in one go.
    """
    image_props = image_props or {}
    tee_keys = sorted(k for k in extra_specs if mentions_tee(k))
    if not tee_keys:
        return []
    out = []
    for key in tee_keys:
        problem = check_value(key, extra_specs[key])
        if problem:
            out.append(problem)
    enabled, model = _encryption(extra_specs, image_props)
    if not enabled:
        out.append(
            f"{', '.join(tee_keys)} need memory encryption, but "
            "hw:mem_encryption is not true (set hw:mem_encryption=true "
            "and hw:mem_encryption_model)")
        return out
    model = model or SEV
    for key in tee_keys:
        if key in KEYS and model not in KEYS[key][1]:
            allowed = ", ".join(KEYS[key][1])
            out.append(f"{key} applies to {allowed}, but "
                       f"hw:mem_encryption_model is {model}")
    if (model == SEV_SNP and parse_bool(
            extra_specs.get("tee:snp_debug", "false"))
            and extra_specs.get("tee:attestation") == "required"):
        out.append("tee:snp_debug=true conflicts with "
                   "tee:attestation=required: a debuggable guest's memory "
                   "is readable by the host, so its attestation proves "
                   "nothing")
    if model in (SEV, SEV_ES) and parse_bool(
            extra_specs.get("tee:sev_nodbg", "true")) is False and (
            extra_specs.get("tee:attestation") == "required"):
        out.append("tee:sev_nodbg=false conflicts with "
                   "tee:attestation=required")
    return out


def _flag(specs: Mapping[str, str], key: str, default: bool) -> bool:
    value = parse_bool(specs.get(key, "")) if key in specs else None
    return default if value is None else value


def request_from(extra_specs: Mapping[str, str],
                 image_props: Mapping[str, Any] | None = None
                 ) -> TEERequest | None:
    """The TEE request of a flavor/image, or None for ordinary guests.

    :raises SpecError: when the ``tee:`` keys contradict each other or
        ``hw:mem_encryption*``.
    """
    image_props = image_props or {}
    enabled, model = _encryption(extra_specs, image_props)
    if not enabled:
        if any(mentions_tee(k) for k in extra_specs):
            raise SpecError("; ".join(conflicts(extra_specs, image_props)))
        return None
    problems = conflicts(extra_specs, image_props)
    if problems:
        raise SpecError("; ".join(problems))
    model = model or SEV
    s = extra_specs
    if model == SEV_SNP:
        policy = SNP_POLICY_RESERVED
        if _flag(s, "tee:snp_smt", True):
            policy |= SNP_POLICY_SMT
        if _flag(s, "tee:snp_migrate_ma", False):
            policy |= SNP_POLICY_MIGRATE_MA
        if _flag(s, "tee:snp_debug", False):
            policy |= SNP_POLICY_DEBUG
        if _flag(s, "tee:snp_single_socket", False):
            policy |= SNP_POLICY_SINGLE_SOCKET
        abi = parse_version(s.get("tee:snp_abi_minimum", ""))
        if abi:
            policy |= abi[0] << 8 | abi[1]
    elif model in (SEV, SEV_ES):
        policy = SEV_POLICY_SEV
        if _flag(s, "tee:sev_nodbg", True):
            policy |= SEV_POLICY_NODBG
        if _flag(s, "tee:sev_noks", True):
            policy |= SEV_POLICY_NOKS
        if _flag(s, "tee:sev_nosend", False):
            policy |= SEV_POLICY_NOSEND
        if _flag(s, "tee:sev_domain", True):
            policy |= SEV_POLICY_DOMAIN
        if model == SEV_ES:
            policy |= SEV_POLICY_ES
    else:
        policy = 0
    tcb = None
    if any(f"tee:min_tcb_{k}" in s for k in TCB_KEYS):
        bl, tee, snp, ucode = (int(s.get(f"tee:min_tcb_{k}", "0"))
                               for k in TCB_KEYS)
        tcb = (bl, tee, snp, ucode)
    return TEERequest(
        model=model,
        attestation=s.get("tee:attestation", "none") == "required",
        policy=policy,
        min_firmware=parse_version(s.get("tee:min_firmware", "")),
        min_tcb=tcb,
        tdx_debug=_flag(s, "tee:tdx_debug", False),
    )
