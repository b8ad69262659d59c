"""Reference values: expected SEV, SEV-ES and SEV-SNP launch digests.

The launch digest of an AMD confidential guest depends on the firmware
(OVMF), the measured direct-boot inputs (kernel, initrd, command line, via
QEMU's SEV hashes table), the initial vCPU state (one VMSA page per vCPU,
built from the vCPU signature, the SNP guest features and the VMM) and, for
SNP, the layout of the firmware's SEV metadata. The engine is
virtee/sev-snp-measure (package ``sevsnpmeasure``): this module composes its
own objects (``OVMF``/``SVSM`` parsers, ``SevHashes``, ``VMSA``, ``GCTX`` and
``guest.snp_update_metadata_pages``) in the same order as its
``guest.calc_launch_digest`` and never re-implements its formulas.

What it adds is a cache. Everything before the VMSA pages does not depend on
the vCPU count, so :class:`ReferenceCalculator` computes it once:

* SNP (and SNP with an SVSM): the digest is a chain over pages, and the
  VMSA pages come last. The chain value after the firmware, kernel-hashes
  and metadata pages is kept; ``digest(n)`` extends a fresh ``GCTX`` seeded
  with it by ``n`` VMSA pages, and ``digests(range)`` walks one chain, so
  the digests for 1..64 vCPUs cost 64 VMSA page updates in total.
* SEV-ES: SHA-256 over firmware || hashes table || VMSAs. The hash object
  after the firmware part is kept and ``.copy()``-ed.
* SEV: one SHA-256 over firmware || hashes table; the vCPU count does not
  enter.

Every failure is an :class:`~barbican_tee.attestation.errors.InvalidInput`
with a stable ``measure_*`` code; nothing from the engine escapes.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import hashlib
import os
import tempfile
from typing import Any
from typing import Final

from sevsnpmeasure import gctx as snp_gctx
from sevsnpmeasure import guest as snp_guest
from sevsnpmeasure import ovmf as snp_ovmf
from sevsnpmeasure import sev_hashes
from sevsnpmeasure import sev_mode
from sevsnpmeasure import vcpu_types
from sevsnpmeasure import vmm_types
from sevsnpmeasure import vmsa as snp_vmsa

from barbican_tee.attestation import errors

PAGE_SIZE: Final = 4096
MAX_VCPUS: Final = 4096
SNP_DIGEST_SIZE: Final = 48
SEV_DIGEST_SIZE: Final = 32
DEFAULT_GUEST_FEATURES: Final = 0x1

FirmwareSource = str | os.PathLike[str] | bytes
FilePath = str | os.PathLike[str]


class Mode(str, enum.Enum):
    """Launch mode; the values are sev-snp-measure's ``--mode`` names."""

    SNP = "snp"
    SEV_ES = "seves"
    SEV = "sev"
    SNP_SVSM = "snp:svsm"


class VmmType(str, enum.Enum):
    """VMM whose initial register state the VMSA pages reproduce."""

    QEMU = "qemu"
    EC2 = "ec2"
    GCE = "gce"


_ENGINE_MODE: Final = {
    Mode.SNP: sev_mode.SevMode.SEV_SNP,
    Mode.SEV_ES: sev_mode.SevMode.SEV_ES,
    Mode.SEV: sev_mode.SevMode.SEV,
    Mode.SNP_SVSM: sev_mode.SevMode.SEV_SNP_SVSM,
}
_MODE_BY_ENGINE: Final = {v: k for k, v in _ENGINE_MODE.items()}
_ENGINE_VMM: Final = {
    VmmType.QEMU: vmm_types.VMMType.QEMU,
    VmmType.EC2: vmm_types.VMMType.ec2,
    VmmType.GCE: vmm_types.VMMType.gce,
}


def vcpu_type_names() -> tuple[str, ...]:
    """The vCPU model names sev-snp-measure knows a signature for."""
    return tuple(sorted(vcpu_types.CPU_SIGS))


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Normalised launch inputs (everything except firmware and count)."""

    mode: Mode
    vmm_type: VmmType
    vcpu_sig: int | None
    guest_features: int
    kernel: str | None
    initrd: str | None
    append: str | None
    ovmf_hash: bytes | None
    svsm: str | None
    ovmf_vars_size: int


@dataclasses.dataclass(frozen=True)
class _SnpBase:
    """SNP chain value before the VMSA pages, and the VMSA pages."""

    ld: bytes
    vmsa: Any  # sevsnpmeasure VMSA or VMSA_SVSM


@dataclasses.dataclass(frozen=True)
class _ShaBase:
    """SEV/SEV-ES hash state before the VMSA pages."""

    hash: Any  # hashlib sha256 object; copied, never updated in place
    vmsa: Any  # sevsnpmeasure VMSA, None for SEV


def _fail(code: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code)


@contextlib.contextmanager
def _engine(code: str, what: str) -> collections.abc.Iterator[None]:
    """Turn any sevsnpmeasure failure into InvalidInput(code)."""
    try:
        yield
    except errors.AttestationError:
        raise
    except FileNotFoundError as exc:
        raise _fail(code, f"{what}: file not found: {exc.filename}") from exc
    except OSError as exc:
        raise _fail(code, f"{what}: cannot read: {exc}") from exc
    except Exception as exc:  # the engine raises bare Runtime/Value errors
        raise _fail(code, f"{what}: {exc}") from exc


def _parse_mode(mode: Mode | str) -> Mode:
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, str):
        try:
            return _MODE_BY_ENGINE[sev_mode.SevMode.from_str(mode)]
        except ValueError:
            pass
    raise _fail("measure_bad_mode",
                f"unknown mode {mode!r}; expected one of "
                f"{', '.join(m.value for m in Mode)}")


def _parse_vmm(vmm_type: VmmType | str) -> VmmType:
    if isinstance(vmm_type, VmmType):
        return vmm_type
    if isinstance(vmm_type, str):
        try:
            return VmmType(vmm_type.lower())
        except ValueError:
            pass
    raise _fail("measure_bad_vmm_type",
                f"unknown VMM type {vmm_type!r}; expected one of "
                f"{', '.join(v.value for v in VmmType)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _vcpu_sig(vcpu_type: str | None, vcpu_sig: int | None) -> int | None:
    if vcpu_type is not None and vcpu_sig is not None:
        raise _fail("measure_bad_vcpu_type",
                    "give either a vCPU type or a vCPU signature, not both")
    if vcpu_sig is not None:
        if not _is_int(vcpu_sig) or not 0 <= vcpu_sig < 1 << 32:
            raise _fail("measure_bad_vcpu_type",
                        f"vCPU signature {vcpu_sig!r} is not a 32-bit "
                        "unsigned integer")
        return vcpu_sig
    if vcpu_type is None:
        return None
    if not isinstance(vcpu_type, str) or vcpu_type not in vcpu_types.CPU_SIGS:
        raise _fail("measure_bad_vcpu_type",
                    f"unknown vCPU type {vcpu_type!r}; expected one of "
                    f"{', '.join(vcpu_type_names())}")
    sig = vcpu_types.CPU_SIGS[vcpu_type]
    assert isinstance(sig, int)  # noqa: S101
    return sig


def _opt_path(value: FilePath | None, what: str) -> str | None:
    """None/'' mean absent, as in sev-snp-measure."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise _fail("measure_bad_path", f"{what} must be a file path")
    path = os.fspath(value)
    return path or None


def _ovmf_hash(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            value = b""
    if not isinstance(value, bytes) or len(value) != SNP_DIGEST_SIZE:
        raise _fail("measure_bad_ovmf_hash",
                    f"the OVMF hash must be {SNP_DIGEST_SIZE} bytes "
                    "(SHA-384)")
    return value


def _check_vcpus(vcpus: object) -> int:
    if isinstance(vcpus, int) and not isinstance(vcpus, bool) and (
            1 <= vcpus <= MAX_VCPUS):
        return vcpus
    raise _fail("measure_bad_vcpu_count",
                f"vCPU count {vcpus!r} is not in 1..{MAX_VCPUS}")


def _check_range(vcpu_range: collections.abc.Iterable[int]) -> list[int]:
    if isinstance(vcpu_range, (str, bytes)):
        raise _fail("measure_bad_range", "vCPU range is not a range")
    try:
        counts = sorted(set(vcpu_range))
    except TypeError as exc:
        raise _fail("measure_bad_range",
                    "vCPU range must be an iterable of integers") from exc
    if not counts:
        raise _fail("measure_bad_range", "vCPU range is empty")
    for n in counts:
        if not _is_int(n) or not 1 <= n <= MAX_VCPUS:
            raise _fail("measure_bad_range",
                        f"vCPU count {n!r} in range is not in "
                        f"1..{MAX_VCPUS}")
    return counts


def parse_vcpu_range(value: str) -> range:
    """``N`` or ``N-M`` (inclusive), as command lines take vCPU counts."""
    lo, sep, hi = str(value).partition("-")
    try:
        first = int(lo)
        last = int(hi) if sep else first
    except ValueError:
        raise _fail("measure_bad_range",
                    f"vCPUs {value!r} is not N or N-M") from None
    if not 1 <= first <= last:
        raise _fail("measure_bad_range",
                    f"vCPUs {value!r} is not an increasing range starting "
                    "at 1 or more")
    return range(first, last + 1)


def _load(cls: Any, source: FirmwareSource, what: str,
          **kwargs: Any) -> Any:
    """Parse a firmware image with sevsnpmeasure's parser class ``cls``.

    The parser reads a file; bytes are written to a private temporary file
    first (it is removed before this returns).
    """
    code = f"measure_{what}_invalid"
    if isinstance(source, bytes):
        if not source:
            raise _fail(code, f"{what} image is empty")
        with tempfile.NamedTemporaryFile(prefix="measure-") as tmp:
            tmp.write(source)
            tmp.flush()
            with _engine(code, f"{what} image"):
                return cls(tmp.name, **kwargs)
    if not isinstance(source, (str, os.PathLike)):
        raise _fail("measure_bad_path",
                    f"{what} must be a file path or bytes")
    path = os.fspath(source)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise _fail(f"measure_{what}_not_found",
                    f"{what} image not found: {path}") from exc
    except OSError as exc:
        raise _fail(f"measure_{what}_unreadable",
                    f"cannot read {what} image {path}: "
                    f"{exc.strerror}") from exc
    if size == 0:
        raise _fail(code, f"{what} image {path} is empty")
    try:
        return cls(path, **kwargs)
    except OSError as exc:
        raise _fail(f"measure_{what}_unreadable",
                    f"cannot read {what} image {path}: "
                    f"{exc.strerror}") from exc
    except Exception as exc:  # the engine raises bare Runtime/Value errors
        raise _fail(code, f"{what} image {path}: {exc}") from exc


def _reset_eip(fw: Any, what: str) -> int:
    with _engine("measure_firmware_no_sev_metadata",
                 f"{what} has no SEV-ES reset block"):
        eip = fw.sev_es_reset_eip()
    assert isinstance(eip, int)  # noqa: S101
    return eip


def _check_pages(fw: Any, what: str) -> None:
    if fw.size() % PAGE_SIZE:
        raise _fail("measure_firmware_invalid",
                    f"{what} size {fw.size()} is not a multiple of "
                    f"{PAGE_SIZE}")


def _sev_hashes(cfg: LaunchConfig) -> Any:
    with _engine("measure_kernel_unreadable", "kernel/initrd"):
        return sev_hashes.SevHashes(cfg.kernel, cfg.initrd, cfg.append)


class ReferenceCalculator:
    """Expected launch digests of one firmware and launch configuration.

    The firmware part is computed when the object is built (so bad input
    fails here); afterwards the object is immutable and thread-safe, and
    :meth:`digest`/:meth:`digests` only add the per-vCPU VMSA pages.

    ``firmware`` is the OVMF image (a path or its bytes). ``vcpu_type`` is a
    QEMU model name (``EPYC-v4``, ``EPYC-Milan``...; see
    :func:`vcpu_type_names`) or give the CPUID signature as ``vcpu_sig``;
    one is needed for SNP and SEV-ES under QEMU (EC2 and GCE use a fixed
    value). A kernel enables measured direct boot; initrd and append need
    one. ``guest_features`` is the SNP SEV_FEATURES word of the VMSAs
    (sev-snp-measure's ``--guest-features``; SEV-ES always uses 0, SVSM
    mode 1). ``ovmf_hash`` (SNP only) replaces the firmware pages by a
    precomputed chain value (see :func:`snp_ovmf_hash`). ``svsm`` and
    ``ovmf_vars_size`` are for ``snp:svsm`` mode.
    """

    __slots__ = ("_config", "_base")

    def __init__(self, firmware: FirmwareSource, *,
                 mode: Mode | str = Mode.SNP,
                 vcpu_type: str | None = None,
                 vcpu_sig: int | None = None,
                 kernel: FilePath | None = None,
                 initrd: FilePath | None = None,
                 append: str | None = None,
                 guest_features: int = DEFAULT_GUEST_FEATURES,
                 vmm_type: VmmType | str = VmmType.QEMU,
                 ovmf_hash: bytes | str | None = None,
                 svsm: FirmwareSource | None = None,
                 ovmf_vars_size: int = 0) -> None:
        m = _parse_mode(mode)
        vmm = _parse_vmm(vmm_type)
        sig = _vcpu_sig(vcpu_type, vcpu_sig)
        if not _is_int(guest_features) or not (
                0 <= guest_features < 1 << 64):
            raise _fail("measure_bad_guest_features",
                        f"guest features {guest_features!r} is not a "
                        "64-bit unsigned integer")
        if append is not None and not isinstance(append, str):
            raise _fail("measure_bad_cmdline",
                        "the kernel command line must be a string")
        k = _opt_path(kernel, "kernel")
        i = _opt_path(initrd, "initrd")
        if k is None and (i is not None or append):
            raise _fail("measure_kernel_required",
                        "an initrd or command line is measured only with "
                        "a kernel")
        oh = _ovmf_hash(ovmf_hash)
        if oh is not None and m is not Mode.SNP:
            raise _fail("measure_bad_ovmf_hash",
                        "a precomputed OVMF hash only works in snp mode")
        if m is Mode.SNP_SVSM:
            if svsm is None:
                raise _fail("measure_svsm_required",
                            "snp:svsm mode needs the SVSM image")
            if vmm is not VmmType.QEMU:
                raise _fail("measure_bad_vmm_type",
                            "snp:svsm mode is only defined for QEMU")
            if k is not None:
                raise _fail("measure_kernel_hashes_unsupported",
                            "snp:svsm mode does not measure a kernel")
            if not _is_int(ovmf_vars_size) or not 0 <= ovmf_vars_size < (
                    1 << 32) or ovmf_vars_size % PAGE_SIZE:
                raise _fail("measure_bad_ovmf_vars_size",
                            f"OVMF vars size {ovmf_vars_size!r} is not a "
                            "page multiple below 4 GiB")
        elif svsm is not None or ovmf_vars_size:
            raise _fail("measure_svsm_unexpected",
                        "an SVSM image is only used in snp:svsm mode")
        if (sig is None and vmm is VmmType.QEMU
                and m in (Mode.SNP, Mode.SEV_ES, Mode.SNP_SVSM)):
            raise _fail("measure_bad_vcpu_type",
                        f"{m.value} mode under QEMU needs a vCPU type")
        self._config = LaunchConfig(
            mode=m, vmm_type=vmm, vcpu_sig=sig,
            guest_features=guest_features, kernel=k, initrd=i,
            append=append, ovmf_hash=oh, svsm=None, ovmf_vars_size=(
                ovmf_vars_size if m is Mode.SNP_SVSM else 0))
        self._base: _SnpBase | _ShaBase
        if m is Mode.SNP:
            self._base = self._snp_base(firmware)
        elif m is Mode.SNP_SVSM:
            assert svsm is not None  # noqa: S101
            self._base = self._svsm_base(firmware, svsm)
            if not isinstance(svsm, bytes):
                self._config = dataclasses.replace(
                    self._config, svsm=os.fspath(svsm))
        else:
            self._base = self._sha_base(firmware)

    # -- the firmware part, computed once ---------------------------------

    def _snp_base(self, firmware: FirmwareSource) -> _SnpBase:
        cfg = self._config
        fw = _load(snp_ovmf.OVMF, firmware, "firmware")
        _check_pages(fw, "firmware")
        if not fw.metadata_items():
            raise _fail("measure_firmware_no_sev_metadata",
                        "firmware has no SEV metadata (not an SNP OVMF)")
        eip = _reset_eip(fw, "firmware")
        hashes = None
        if cfg.kernel is not None:
            if not fw.has_metadata_section(
                    snp_ovmf.SectionType.SNP_KERNEL_HASHES):
                raise _fail("measure_kernel_hashes_unsupported",
                            "a kernel was given but the firmware's SEV "
                            "metadata has no SNP_KERNEL_HASHES section")
            hashes = _sev_hashes(cfg)
        vmm = _ENGINE_VMM[cfg.vmm_type]
        with _engine("measure_firmware_invalid", "firmware"):
            if cfg.ovmf_hash is not None:
                ctx = snp_gctx.GCTX(seed=cfg.ovmf_hash)
            else:
                ctx = snp_gctx.GCTX()
                ctx.update_normal_pages(fw.gpa(), fw.data())
            snp_guest.snp_update_metadata_pages(ctx, fw, hashes, vmm)
        with _engine("measure_bad_vcpu_type", "VMSA"):
            vmsa = snp_vmsa.VMSA(sev_mode.SevMode.SEV_SNP, eip,
                                 cfg.vcpu_sig, cfg.guest_features, vmm)
        return _SnpBase(ld=bytes(ctx.ld()), vmsa=vmsa)

    def _svsm_base(self, firmware: FirmwareSource,
                   svsm: FirmwareSource) -> _SnpBase:
        cfg = self._config
        fw = _load(snp_ovmf.OVMF, firmware, "firmware")
        _check_pages(fw, "firmware")
        sv = _load(snp_ovmf.SVSM, svsm, "svsm",
                   end_at=fw.gpa() - cfg.ovmf_vars_size)
        _check_pages(sv, "SVSM image")
        if not sv.metadata_items():
            raise _fail("measure_firmware_no_sev_metadata",
                        "SVSM image has no SEV metadata")
        eip = _reset_eip(sv, "SVSM image")
        with _engine("measure_firmware_invalid", "firmware"):
            ctx = snp_gctx.GCTX()
            ctx.update_normal_pages(fw.gpa(), fw.data())
            ctx.update_normal_pages(sv.gpa(), sv.data())
            snp_guest.snp_update_metadata_pages(
                ctx, sv, None, vmm_types.VMMType.QEMU)
        with _engine("measure_bad_vcpu_type", "VMSA"):
            vmsa = snp_vmsa.VMSA_SVSM(eip, cfg.vcpu_sig)
        return _SnpBase(ld=bytes(ctx.ld()), vmsa=vmsa)

    def _sha_base(self, firmware: FirmwareSource) -> _ShaBase:
        cfg = self._config
        fw = _load(snp_ovmf.OVMF, firmware, "firmware")
        vmsa = None
        if cfg.mode is Mode.SEV_ES:
            eip = _reset_eip(fw, "firmware")
            with _engine("measure_bad_vcpu_type", "VMSA"):
                vmsa = snp_vmsa.VMSA(sev_mode.SevMode.SEV_ES, eip,
                                     cfg.vcpu_sig, 0x0,
                                     _ENGINE_VMM[cfg.vmm_type])
        h = hashlib.sha256(fw.data())
        if cfg.kernel is not None:
            if not fw.is_sev_hashes_table_supported():
                raise _fail("measure_kernel_hashes_unsupported",
                            "a kernel was given but the firmware has no "
                            "SEV hashes table")
            h.update(_sev_hashes(cfg).construct_table())
        return _ShaBase(hash=h, vmsa=vmsa)

    # -- public API --------------------------------------------------------

    @property
    def config(self) -> LaunchConfig:
        return self._config

    @property
    def mode(self) -> Mode:
        return self._config.mode

    def digest(self, vcpus: int) -> bytes:
        """Expected launch digest for ``vcpus`` vCPUs."""
        n = _check_vcpus(vcpus)
        return self._walk([n])[n]

    def digests(self, vcpu_range: collections.abc.Iterable[int]
                ) -> dict[int, bytes]:
        """Expected digests for each vCPU count, in one incremental pass.

        ``vcpu_range`` is any iterable of counts (``range(1, 65)``...);
        the cost is the VMSA pages up to its largest count, once.
        """
        counts = _check_range(vcpu_range)
        return self._walk(counts)

    def _walk(self, counts: list[int]) -> dict[int, bytes]:
        """Digests for the sorted, validated ``counts``."""
        base = self._base
        if isinstance(base, _SnpBase):
            ctx = snp_gctx.GCTX(seed=base.ld)

            def update(page: bytes) -> None:
                ctx.update_vmsa_page(page)

            def value() -> bytes:
                return bytes(ctx.ld())
        else:
            if base.vmsa is None:  # SEV: no VMSA pages
                d = base.hash.digest()
                return {n: d for n in counts}
            h = base.hash.copy()

            def update(page: bytes) -> None:
                h.update(page)

            def value() -> bytes:
                return bytes(h.digest())
        out: dict[int, bytes] = {}
        wanted = iter(counts)
        nxt = next(wanted)
        with _engine("measure_bad_vcpu_type", "VMSA"):
            for done, page in enumerate(base.vmsa.pages(counts[-1]), 1):
                update(page)
                if done == nxt:
                    out[done] = value()
                    nxt = next(wanted, 0)
        return out


def snp_ovmf_hash(firmware: FirmwareSource) -> bytes:
    """SNP chain value over the firmware pages alone (48 bytes).

    The value sev-snp-measure's ``--snp-ovmf-hash`` takes; pass it as
    ``ovmf_hash`` to skip hashing a large firmware again.
    """
    fw = _load(snp_ovmf.OVMF, firmware, "firmware")
    _check_pages(fw, "firmware")
    with _engine("measure_firmware_invalid", "firmware"):
        ctx = snp_gctx.GCTX()
        ctx.update_normal_pages(fw.gpa(), fw.data())
        return bytes(ctx.ld())


def calc_launch_digest(mode: Mode | str, ovmf: FirmwareSource, vcpus: int,
                       vcpu_type: str | None,
                       kernel: FilePath | None = None,
                       initrd: FilePath | None = None,
                       append: str | None = None,
                       guest_features: int = DEFAULT_GUEST_FEATURES,
                       vmm_type: VmmType | str = VmmType.QEMU, *,
                       vcpu_sig: int | None = None,
                       ovmf_hash: bytes | str | None = None,
                       svsm: FirmwareSource | None = None,
                       ovmf_vars_size: int = 0) -> bytes:
    """One expected launch digest (convenience; nothing is cached).

    The arguments are those of :class:`ReferenceCalculator`.
    """
    n = _check_vcpus(vcpus)
    calc = ReferenceCalculator(
        ovmf, mode=mode, vcpu_type=vcpu_type, vcpu_sig=vcpu_sig,
        kernel=kernel, initrd=initrd, append=append,
        guest_features=guest_features, vmm_type=vmm_type,
        ovmf_hash=ovmf_hash, svsm=svsm, ovmf_vars_size=ovmf_vars_size)
    return calc.digest(n)
