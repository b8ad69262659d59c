"""``nova-tee-status``: what this compute host's TEE supports, and why not.

Run on a compute host. It reads the CPU flags, the kvm_amd/kvm_intel module
parameters, the AMD secure processor's firmware status (``/dev/sev``),
libvirt's domain capabilities and the OVMF builds installed, and says for
each model (amd-sev, amd-sev-es, amd-sev-snp, intel-tdx) whether the host
can run it and what to change if not.

Exit status: 0 every TEE model the CPU offers is usable; 1 the CPU offers a
TEE model that is not usable (each blocker printed with what to change);
2 the CPU offers no TEE model; 3 the host could not be inspected (bad
arguments or an unreadable domain capabilities file).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import glob
import hashlib
import json
import os
import sys
from typing import Any
import uuid

from nova_tee.virt.libvirt import capabilities

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_NO_TEE = 2
EXIT_UNUSABLE = 3

OVMF_GLOBS = ("usr/share/OVMF/*.fd", "usr/share/edk2/ovmf/*.fd",
              "usr/share/qemu/OVMF*.fd")


@dataclasses.dataclass
class ModelReport:
    model: str
    cpu: bool
    blockers: list[str] = dataclasses.field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.cpu and not self.blockers


def _path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def cpu_flags(root: str) -> tuple[str, set[str]]:
    """(vendor_id, flags) of the first CPU in /proc/cpuinfo."""
    vendor, flags = "", set[str]()
    try:
        with open(_path(root, "/proc/cpuinfo")) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return vendor, flags


def _param(root: str, module: str, name: str) -> bool:
    try:
        with open(_path(root, f"/sys/module/{module}/parameters/{name}")) as f:
            return f.read().strip() in ("Y", "y", "1")
    except OSError:
        return False


def ovmf_builds(root: str) -> list[dict[str, Any]]:
    out = []
    for pattern in OVMF_GLOBS:
        for path in sorted(glob.glob(_path(root, pattern))):
            with open(path, "rb") as f:
                data = f.read()
            out.append({"path": "/" + os.path.relpath(path, root),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "sev_metadata": _has_sev_metadata(data)})
    return out


def _has_sev_metadata(data: bytes) -> bool:
    # OVMF's GUIDed footer table ends 32 bytes before the end of the image
    # with this GUID; SEV builds list their SEV metadata in it.
    footer = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    sev_metadata = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc"
                             ).bytes_le
    tail = data[-4096:]
    return footer in tail and sev_metadata in tail


def inspect(root: str, domcaps_xml: bytes | None) -> dict[str, Any]:
    vendor, flags = cpu_flags(root)
    amd = vendor == "AuthenticAMD"
    intel = vendor == "GenuineIntel"
    kvm = {name: _param(root, "kvm_amd", name)
           for name in ("sev", "sev_es", "sev_snp")}
    tdx_param = _param(root, "kvm_intel", "tdx")
    firmware = capabilities.read_firmware_status(_path(root, "/dev/sev"))
    caps = (capabilities.parse_domain_caps(domcaps_xml)
            if domcaps_xml is not None else None)
    ovmf = ovmf_builds(root)

    reports = [
        ModelReport("amd-sev", amd and "sev" in flags),
        ModelReport("amd-sev-es", amd and "sev_es" in flags),
        ModelReport("amd-sev-snp", amd and "sev_snp" in flags),
        ModelReport("intel-tdx", intel and "tdx_host_platform" in flags),
    ]
    for r in reports:
        if not r.cpu:
            continue
        if r.model.startswith("amd"):
            param = {"amd-sev": "sev", "amd-sev-es": "sev_es",
                     "amd-sev-snp": "sev_snp"}[r.model]
            if not kvm[param]:
                r.blockers.append(
                    f"kvm_amd {param} is off: add kvm_amd.{param}=1 to the "
                    "kernel command line (and mem_encrypt=on), then reboot")
            if firmware is None:
                r.blockers.append(
                    "/dev/sev does not answer PLATFORM_STATUS: load the "
                    "ccp driver and check that SEV is enabled in the BIOS")
            if caps is not None:
                sectype = "sev-snp" if r.model == "amd-sev-snp" else "sev"
                if not caps.sev_supported or sectype not in (
                        caps.sectypes or ("sev",)):
                    r.blockers.append(
                        f"libvirt/QEMU do not offer launchSecurity "
                        f"{sectype}: upgrade QEMU (SNP needs 9.1+) and "
                        "libvirt (SNP needs 10.5+)")
            if not any(b["sev_metadata"] for b in ovmf):
                r.blockers.append(
                    "no OVMF build with SEV metadata is installed: install "
                    "an AmdSev OVMF (e.g. Debian ovmf)")
        else:
            if not tdx_param:
                r.blockers.append(
                    "kvm_intel tdx is off: add kvm_intel.tdx=1 to the "
                    "kernel command line, then reboot")
            if caps is not None and not caps.tdx_supported:
                r.blockers.append("libvirt/QEMU do not offer TDX: upgrade "
                                  "QEMU (10.1+) and libvirt (11.9+)")
    return {
        "cpu": {"vendor": vendor,
                "tee_flags": sorted(flags & {"sev", "sev_es", "sev_snp",
                                             "tdx_host_platform"})},
        "kvm_amd": kvm, "kvm_intel_tdx": tdx_param,
        "firmware": None if firmware is None else {
            "api": firmware.api, "build": firmware.build,
            "snp_tcb": (capabilities.snp_tcb_string(
                firmware.snp_current_tcb, capabilities.read_cpu_product(
                    _path(root, capabilities.CPUINFO)))
                if firmware.snp_current_tcb is not None else None)},
        "libvirt": None if caps is None else {
            "sev": caps.sev_supported, "sectypes": list(caps.sectypes),
            "max_guests": caps.max_guests,
            "max_es_guests": caps.max_es_guests, "tdx": caps.tdx_supported},
        "ovmf": ovmf,
        "models": [{"model": r.model, "cpu": r.cpu, "usable": r.usable,
                    "blockers": r.blockers} for r in reports],
    }


def _domcaps_from_libvirt(uri: str) -> bytes | None:
    try:
        import libvirt
    except ImportError:
        return None
    # libvirt prints its errors to stderr by default; the report says
    # what is missing instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError:
        return None
    try:
        xml: str = conn.getDomainCapabilities(None, "x86_64", None, "kvm",
                                              0)
        return xml.encode()
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nova-tee-status",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/",
                        help="inspect a host tree mounted here (tests)")
    parser.add_argument("--domcaps", metavar="FILE",
                        help="libvirt domain capabilities XML (default: "
                             "ask libvirt at --libvirt-uri)")
    parser.add_argument("--libvirt-uri", default="qemu:///system")
    parser.add_argument("--json", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_UNUSABLE if exc.code else EXIT_OK
    if args.domcaps:
        try:
            with open(args.domcaps, "rb") as f:
                domcaps: bytes | None = f.read()
        except OSError as exc:
            print(f"nova-tee-status: cannot read {args.domcaps!r}: "
                  f"{exc.strerror}", file=sys.stderr)
            return EXIT_UNUSABLE
    else:
        domcaps = _domcaps_from_libvirt(args.libvirt_uri)
    try:
        report = inspect(args.root, domcaps)
    except ValueError as exc:
        print(f"nova-tee-status: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    models = report["models"]
    offered = [m for m in models if m["cpu"]]
    status = (EXIT_NO_TEE if not offered else
              EXIT_OK if all(m["usable"] for m in offered) else
              EXIT_BLOCKED)
    if args.json:
        print(json.dumps(dict(report, exit_status=status), indent=2))
        return status
    print(f"CPU: {report['cpu']['vendor'] or 'unknown'}; TEE flags: "
          f"{', '.join(report['cpu']['tee_flags']) or 'none'}")
    fw = report["firmware"]
    print("AMD secure processor: " + (
        f"API {fw['api']} build {fw['build']}"
        + (f", SNP TCB {fw['snp_tcb']}" if fw["snp_tcb"] else "")
        if fw else "not answering"))
    for build in report["ovmf"]:
        print(f"OVMF {build['path']}: sha256 {build['sha256']}"
              f"{'' if build['sev_metadata'] else ' (no SEV metadata)'}")
    for m in models:
        state = ("usable" if m["usable"] else
                 "not offered by the CPU" if not m["cpu"] else "blocked")
        print(f"{m['model']}: {state}")
        for blocker in m["blockers"]:
            print(f"  - {blocker}")
    return status


if __name__ == "__main__":
    sys.exit(main())
