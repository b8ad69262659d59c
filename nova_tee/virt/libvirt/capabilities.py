"""What a compute host's TEE can do: domain capabilities, kvm_amd, firmware.

Upstream Nova already decides *which* models a host supports and how many
slots it has (``nova.virt.libvirt.host.Host``); this module reads what
attestation needs on top of that:

* the ``<sev>``/``<tdx>`` details of libvirt's domain capabilities
  (cbitpos, reducedPhysBits, maxGuests, maxESGuests, launchSecurity types),
* the kvm_amd module parameters (``sev``, ``sev_es``, ``sev_snp``; the
  kernel prints ``Y`` or ``1`` for enabled),
* libvirt's node SEV info (PDH, certificate chain, cbitpos),
* the secure processor's firmware API version, build and SNP TCB, read with
  the Linux ``SEV_ISSUE_CMD`` ioctl on ``/dev/sev`` (PLATFORM_STATUS and
  SNP_PLATFORM_STATUS, ``include/uapi/linux/psp-sev.h``).

Each reader fails soft (``None``): a host that cannot show a value simply
does not advertise it, and the scheduler treats unknown as not good enough.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import ctypes
import dataclasses
import fcntl
import os
import struct
from typing import Any

from lxml import etree

from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation import tcb_trait

CPUINFO = "/proc/cpuinfo"
KVM_AMD_PARAMS = "/sys/module/kvm_amd/parameters"
SEV_DEVICE = "/dev/sev"
TDX_QGS_SOCKET = "/var/run/tdx-qgs/qgs.socket"
TDX_MODULE_SYSFS = "/sys/firmware/tdx/tdx_module"

# include/uapi/linux/psp-sev.h
SEV_PLATFORM_STATUS = 1
SNP_PLATFORM_STATUS = 9
_SEV_ISSUE_CMD = struct.Struct("<IQI")  # cmd, data (user pointer), error
_SEV_STATUS = struct.Struct("<BBBIBI")  # sev_user_data_status, packed
_SNP_STATUS = struct.Struct("<BBBBIIIQQ")  # sev_user_data_snp_status
# _IOWR('S', 0x0, struct sev_issue_cmd)
SEV_ISSUE_CMD_IOCTL = (3 << 30) | (_SEV_ISSUE_CMD.size << 16) | (
    ord("S") << 8)

CUSTOM_TRAITS = {
    "attestation": "CUSTOM_TEE_ATTESTATION",
    "sev_launch_secret": "CUSTOM_TEE_SEV_LAUNCH_SECRET",
    "snp_tcb": "CUSTOM_TEE_SNP_TCB_REPORTED",
    "tdx_quote": "CUSTOM_TEE_TDX_QUOTE_SERVICE",
}


@dataclasses.dataclass(frozen=True)
class DomainCapsTEE:
    sev_supported: bool = False
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None
    max_guests: int | None = None
    max_es_guests: int | None = None
    cpu0_id: str | None = None
    sectypes: tuple[str, ...] = ()
    tdx_supported: bool = False


def parse_domain_caps(xml: str | bytes) -> DomainCapsTEE:
    """The TEE part of ``virConnectGetDomainCapabilities`` XML."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    sev = root.find("./features/sev")
    ls = root.find("./features/launchSecurity")
    tdx = root.find("./features/tdx")

    def num(tag: str) -> int | None:
        if sev is None:
            return None
        text = sev.findtext(tag)
        return int(text) if text and text.strip().isdigit() else None

    sectypes: tuple[str, ...] = ()
    if ls is not None and ls.get("supported") == "yes":
        sectypes = tuple(v.text or "" for v in ls.findall(
            "./enum[@name='sectype']/value"))
    return DomainCapsTEE(
        sev_supported=sev is not None and sev.get("supported") == "yes",
        cbitpos=num("cbitpos"),
        reduced_phys_bits=num("reducedPhysBits"),
        max_guests=num("maxGuests"),
        max_es_guests=num("maxESGuests"),
        cpu0_id=sev.findtext("cpu0Id") if sev is not None else None,
        sectypes=sectypes,
        tdx_supported=(tdx is not None and tdx.get("supported") == "yes")
        or "tdx" in sectypes,
    )


def _enabled(text: str) -> bool:
    return text.strip() in ("Y", "y", "1")


def read_kvm_amd_params(base: str = KVM_AMD_PARAMS) -> dict[str, bool]:
    """kvm_amd's sev, sev_es and sev_snp parameters (absent: False)."""
    out = {}
    for name in ("sev", "sev_es", "sev_snp"):
        try:
            with open(os.path.join(base, name)) as f:
                out[name] = _enabled(f.read())
        except OSError:
            out[name] = False
    return out


@dataclasses.dataclass(frozen=True)
class FirmwareStatus:
    api_major: int
    api_minor: int
    build: int
    state: int
    guest_count: int
    snp_current_tcb: int | None = None
    snp_reported_tcb: int | None = None
    snp_mask_chip_id: bool | None = None
    snp_vlek: bool | None = None

    @property
    def api(self) -> str:
        return f"{self.api_major}.{self.api_minor}"


def parse_sev_status(raw: bytes) -> FirmwareStatus:
    major, minor, state, _flags, build, guests = _SEV_STATUS.unpack_from(
        raw)
    return FirmwareStatus(api_major=major, api_minor=minor, build=build,
                          state=state, guest_count=guests)


def parse_snp_status(raw: bytes) -> FirmwareStatus:
    (major, minor, state, _rmp, build, flags, guests, current,
     reported) = _SNP_STATUS.unpack_from(raw)
    return FirmwareStatus(api_major=major, api_minor=minor, build=build,
                          state=state, guest_count=guests,
                          snp_current_tcb=current,
                          snp_reported_tcb=reported,
                          snp_mask_chip_id=bool(flags & 1),
                          snp_vlek=bool(flags >> 2 & 1))


def _issue(fd: int, command: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(max(size, 4096))
    cmd = bytearray(_SEV_ISSUE_CMD.pack(command, ctypes.addressof(buf), 0))
    fcntl.ioctl(fd, SEV_ISSUE_CMD_IOCTL, cmd, True)
    return buf.raw[:size]


def read_firmware_status(device: str = SEV_DEVICE) -> FirmwareStatus | None:
    """PLATFORM_STATUS (and SNP_PLATFORM_STATUS when SNP is up) or None."""
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            snp = parse_snp_status(_issue(fd, SNP_PLATFORM_STATUS,
                                          _SNP_STATUS.size))
        except OSError:
            snp = None
        if snp is not None:
            return snp
        try:
            return parse_sev_status(_issue(fd, SEV_PLATFORM_STATUS,
                                           _SEV_STATUS.size))
        except OSError:
            return None
    finally:
        os.close(fd)


def read_tdx_module_version(base: str = TDX_MODULE_SYSFS) -> str | None:
    """``MAJOR.MINOR.BUILD`` of the TDX module, where sysfs shows it."""
    parts = []
    for name in ("major_version", "minor_version", "build_num"):
        path = os.path.join(base, name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            return None
        if not value.isdigit():
            return None
        parts.append(str(int(value)))
    return ".".join(parts)


def read_cpu_product(path: str = CPUINFO) -> snp_certs.Product | None:
    """The SNP product (Milan, Genoa, Turin) of this host's CPU, or None.

    From the first CPU's family and model in /proc/cpuinfo, with the same
    table the attestation verifier applies to a report's CPUID fields.
    """
    family = model = None
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "cpu family" and family is None:
                    family = int(value.strip())
                elif key == "model" and model is None:
                    model = int(value.strip())
                if family is not None and model is not None:
                    break
    except (OSError, ValueError):
        return None
    if family is None or model is None:
        return None
    return snp.product_from_cpuid(family, model)


def snp_tcb_string(raw: int,
                   product: snp_certs.Product | None = None) -> str:
    """A TCB_VERSION as the ``tee.snp_tcb`` stat: ``BL.TEE.SNP.UCODE``.

    Turin lays the value out differently and adds the FMC level, written
    last (``BL.TEE.SNP.UCODE.FMC``); without a product the Milan/Genoa
    layout is used.
    """
    tcb = snp.TcbVersion.decode(raw, product)
    out = f"{tcb.bootloader}.{tcb.tee}.{tcb.snp}.{tcb.microcode}"
    if tcb.fmc is not None:
        out += f".{tcb.fmc}"
    return out


@dataclasses.dataclass(frozen=True)
class HostTEECapabilities:
    """Everything the driver reports about the host's TEE support."""

    models: tuple[str, ...]
    slots: Mapping[str, int]
    domain_caps: DomainCapsTEE
    kvm_params: Mapping[str, bool]
    firmware: FirmwareStatus | None
    sev_pdh: str | None
    tdx_quote_service: bool
    product: snp_certs.Product | None = None
    tdx_module: str | None = None

    def stats(self, used: Mapping[str, int]) -> dict[str, str]:
        """ComputeNode stats in the ``tee.*`` scheme of nova_tee.stats."""
        from nova_tee import stats as tee_stats

        out = {tee_stats.VERSION_KEY: tee_stats.VERSION,
               tee_stats.MODELS_KEY: ",".join(self.models)}
        for model in self.models:
            out[tee_stats.slots_key(model)] = str(self.slots.get(model, 0))
            out[tee_stats.used_key(model)] = str(used.get(model, 0))
        if self.firmware is not None:
            out[tee_stats.FW_KEY] = self.firmware.api
            out[tee_stats.FW_BUILD_KEY] = str(self.firmware.build)
            if self.firmware.snp_current_tcb is not None:
                out[tee_stats.SNP_TCB_KEY] = snp_tcb_string(
                    self.firmware.snp_current_tcb, self.product)
                if self.product is not None:
                    out[tee_stats.SNP_PRODUCT_KEY] = (
                        self.product.name.lower())
        if self.tdx_module:
            out[tee_stats.TDX_MODULE_KEY] = self.tdx_module
        return out

    def snp_tcb_trait(self) -> str | None:
        """The host's SNP product and TCB as one trait (see tcb_trait)."""
        if (self.firmware is None or self.product is None
                or self.firmware.snp_current_tcb is None):
            return None
        return tcb_trait.encode(self.product, snp.TcbVersion.decode(
            self.firmware.snp_current_tcb, self.product))

    def trait_states(self) -> dict[str, bool]:
        """Every ``CUSTOM_TEE_*`` trait: True to set, False to remove."""
        have = self.traits()
        return {t: t in have for t in CUSTOM_TRAITS.values()}

    def traits(self) -> set[str]:
        out = {CUSTOM_TRAITS["attestation"]} if self.models else set()
        if self.sev_pdh and ({"amd-sev", "amd-sev-es"} & set(self.models)):
            out.add(CUSTOM_TRAITS["sev_launch_secret"])
        if self.firmware is not None and (
                self.firmware.snp_current_tcb is not None):
            out.add(CUSTOM_TRAITS["snp_tcb"])
        if self.tdx_quote_service and "intel-tdx" in self.models:
            out.add(CUSTOM_TRAITS["tdx_quote"])
        return out


def node_sev_pdh(get_sev_info: Callable[[], Any]) -> str | None:
    """The platform PDH from libvirt's node SEV info, if it answers."""
    try:
        info = get_sev_info()
    except Exception:  # noqa: BLE001 - libvirt raises many kinds here
        return None
    if not isinstance(info, Mapping):
        return None
    pdh = info.get("pdh")
    return str(pdh) if pdh else None
