"""``openstack tee policy create|list|show|delete``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.attestation import errors
from barbican_tee.attestation import measure
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.client import rest

LOG = logging.getLogger(__name__)

# The order ``show``/``create`` print a policy's fields in.
COLUMNS = ("id", "name", "tee", "measurements", "min_tcb", "guest_policy",
           "host_data", "id_key_digests", "author_key_digests", "signers",
           "vmpl", "tcb_statuses", "mr_config_id", "mr_owner", "rtmrs",
           "mr_seam", "xfam", "td_attributes", "max_age", "policy_ref")
MEASURE_MODES = {"amd-sev-snp": measure.Mode.SNP,
                 "amd-sev-es": measure.Mode.SEV_ES,
                 "amd-sev": measure.Mode.SEV}
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
GUEST_POLICY_FLAGS = ("debug", "migrate_ma", "smt", "single_socket",
                      "sev_key_sharing", "sev_nosend", "sev_domain",
                      "sev_only")


def _format(value: Any) -> Any:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())
                         if v is not None)
    return value


def _show(doc: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    columns = tuple(c for c in COLUMNS if c in doc)
    return columns, tuple(_format(doc[c]) for c in columns)


def _fail(exc: rest.TEEClientError | errors.AttestationError,
          what: str) -> exceptions.CommandError:
    code = getattr(exc, "code", "error")
    message = getattr(exc, "message", str(exc))
    return exceptions.CommandError(f"{what}: {code}: {message}")


def _key_values(pairs: list[str] | None, option: str,
                allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            raise exceptions.CommandError(
                f"{option} takes KEY=VALUE with KEY one of "
                f"{', '.join(allowed)}, not {pair!r}")
        out[key] = value
    return out


def _int(value: str, option: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise exceptions.CommandError(
            f"{option}: {value!r} is not an integer") from None


def _bool(value: str, option: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise exceptions.CommandError(f"{option}: {value!r} is not true or "
                                  "false")


def reference_values(args: argparse.Namespace) -> list[str]:
    """``--from-firmware``: expected launch digests, lowercase hex."""
    mode = MEASURE_MODES.get(args.tee)
    if mode is None:
        raise exceptions.CommandError(
            f"--from-firmware computes AMD launch digests; for {args.tee} "
            "give --measurement (MRTD) instead")
    if not args.vcpus:
        raise exceptions.CommandError("--from-firmware needs --vcpus")
    features = measure.DEFAULT_GUEST_FEATURES
    if args.guest_features is not None:
        features = _int(args.guest_features, "--guest-features")
    try:
        counts = measure.parse_vcpu_range(args.vcpus)
        calc = measure.ReferenceCalculator(
            args.from_firmware, mode=mode, vcpu_type=args.vcpu_type,
            kernel=args.kernel, initrd=args.initrd, append=args.append,
            guest_features=features)
        digests = calc.digests(counts)
    except errors.AttestationError as exc:
        raise _fail(exc, "cannot compute reference values") from None
    return [digests[n].hex() for n in counts]


class CreatePolicy(command.ShowOne):
    """Create an attestation policy (the conditions for a key release).

    Reference measurements are given with --measurement, or computed from
    the guest's firmware with --from-firmware (and --vcpus, --vcpu-type,
    and for measured direct boot --kernel, --initrd, --append).
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>",
                            help="name of the policy")
        parser.add_argument("--tee", required=True,
                            choices=policy_mod.TEE_MODELS,
                            help="the guest's TEE (upstream's model names)")
        parser.add_argument("--measurement", action="append",
                            metavar="<hex>", default=[],
                            help="an allowed launch measurement (SNP: 48 "
                                 "bytes, SEV/SEV-ES: 32, TDX MRTD: 48); "
                                 "repeat for several")
        ref = parser.add_argument_group(
            "reference values from the firmware")
        ref.add_argument("--from-firmware", metavar="<OVMF>",
                         help="the OVMF image the guest boots; its launch "
                              "digests are added to the measurements")
        ref.add_argument("--vcpus", metavar="<N[-M]>",
                         help="vCPU count, or an inclusive range (one "
                              "digest per count)")
        ref.add_argument("--vcpu-type", metavar="<type>",
                         help="QEMU CPU model, e.g. EPYC-v4 or EPYC-Milan "
                              "(SNP and SEV-ES)")
        ref.add_argument("--kernel", metavar="<file>")
        ref.add_argument("--initrd", metavar="<file>")
        ref.add_argument("--append", metavar="<cmdline>")
        ref.add_argument("--guest-features", metavar="<hex>",
                         help="SNP SEV_FEATURES of the VMSAs (default 0x1)")
        parser.add_argument("--min-tcb", action="append", metavar="<k=v>",
                            help="lowest TCB component SPL, k one of "
                                 f"{', '.join(TCB_COMPONENTS)}; repeat")
        parser.add_argument("--guest-policy", action="append",
                            metavar="<k=v>",
                            help="guest policy requirement: "
                                 f"{', '.join(GUEST_POLICY_FLAGS)}=true|"
                                 "false, abi_minimum=MAJOR.MINOR; repeat. "
                                 "debug, migrate_ma and sev_key_sharing "
                                 "are refused unless set true here")
        parser.add_argument("--host-data", metavar="<hex>",
                            help="required SNP HOST_DATA (32 bytes)")
        parser.add_argument("--id-key-digest", action="append",
                            metavar="<hex>",
                            help="allowed SNP ID key digest (48 bytes)")
        parser.add_argument("--author-key-digest", action="append",
                            metavar="<hex>",
                            help="allowed SNP author key digest (48 bytes)")
        parser.add_argument("--signer", action="append",
                            choices=policy_mod.SIGNERS,
                            help="accepted SNP report signer; repeat "
                                 "(default: vcek only; add --signer vlek "
                                 "to accept VLEK-signed reports)")
        parser.add_argument("--vmpl", type=int, action="append",
                            metavar="<0-3>",
                            help="accepted SNP VMPL; repeat (default: 0 "
                                 "only)")
        parser.add_argument("--tcb-status", action="append",
                            choices=policy_mod.TDX_TCB_STATUSES,
                            help="accepted TDX TCB status (default "
                                 "UpToDate); repeat")
        parser.add_argument("--mr-config-id", metavar="<hex>",
                            help="required TDX MRCONFIGID (48 bytes)")
        parser.add_argument("--mr-owner", metavar="<hex>",
                            help="required TDX MROWNER (48 bytes)")
        parser.add_argument("--rtmr", action="append", metavar="<i=hex>",
                            help="required TDX RTMR<i> (i 0-3, 48 bytes); "
                                 "repeat")
        parser.add_argument("--mr-seam", metavar="<hex>",
                            help="required TDX MRSEAM (48 bytes)")
        parser.add_argument("--xfam", metavar="<hex>",
                            help="required TDX XFAM (64 bits)")
        parser.add_argument("--td-attributes", metavar="<hex>",
                            help="required TDX TD attributes (64 bits)")
        parser.add_argument("--max-age", type=int, metavar="<seconds>",
                            help="lease: a released key may be held this "
                                 "long before the guest attests again "
                                 "(tee-guest renew); default: no lease")
        return parser

    def document(self, args: argparse.Namespace) -> dict[str, Any]:
        """The REST body; validated here as the service will."""
        measurements = list(args.measurement)
        if args.from_firmware:
            measurements += reference_values(args)
        elif any((args.vcpus, args.vcpu_type, args.kernel, args.initrd,
                  args.append, args.guest_features)):
            raise exceptions.CommandError(
                "--vcpus, --vcpu-type, --kernel, --initrd, --append and "
                "--guest-features go with --from-firmware")
        doc: dict[str, Any] = {"name": args.name, "tee": args.tee,
                               "measurements": measurements}
        min_tcb = _key_values(args.min_tcb, "--min-tcb", TCB_COMPONENTS)
        if min_tcb:
            doc["min_tcb"] = {k: _int(v, "--min-tcb")
                              for k, v in min_tcb.items()}
        guest = _key_values(args.guest_policy, "--guest-policy",
                            (*GUEST_POLICY_FLAGS, "abi_minimum"))
        if guest:
            doc["guest_policy"] = {
                k: (v if k == "abi_minimum" else _bool(v, "--guest-policy"))
                for k, v in guest.items()}
        for key, value in (("host_data", args.host_data),
                           ("id_key_digests", args.id_key_digest),
                           ("author_key_digests", args.author_key_digest),
                           ("signers", args.signer), ("vmpl", args.vmpl),
                           ("tcb_statuses", args.tcb_status),
                           ("mr_config_id", args.mr_config_id),
                           ("mr_owner", args.mr_owner),
                           ("mr_seam", args.mr_seam), ("xfam", args.xfam),
                           ("td_attributes", args.td_attributes),
                           ("max_age", args.max_age)):
            if value is not None:
                doc[key] = value
        rtmrs = _key_values(args.rtmr, "--rtmr", ("0", "1", "2", "3"))
        if rtmrs:
            doc["rtmrs"] = [rtmrs.get(str(i)) for i in range(4)]
        try:
            policy_mod.Policy.from_dict(doc)
        except errors.AttestationError as exc:
            raise _fail(exc, "invalid policy") from None
        return doc

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        doc = self.document(parsed_args)
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            created = client.create_policy(doc)
            shown = client.get_policy(created["id"])
        except rest.TEEClientError as exc:
            raise _fail(exc, "cannot create the policy") from None
        return _show(shown)


class ListPolicy(command.Lister):
    """List the project's attestation policies."""

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            policies = client.list_policies()
        except rest.TEEClientError as exc:
            raise _fail(exc, "cannot list policies") from None
        columns = ("ID", "Name", "TEE", "Measurements")
        return columns, [(p.get("id"), p.get("name"), p.get("tee"),
                          len(p.get("measurements") or []))
                         for p in policies]


class ShowPolicy(command.ShowOne):
    """Show one attestation policy."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>",
                            help="policy ID")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            return _show(client.get_policy(parsed_args.policy))
        except rest.TEEClientError as exc:
            raise _fail(exc, f"cannot show policy {parsed_args.policy}"
                        ) from None


class DeletePolicy(command.Command):
    """Delete attestation policies."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("policies", metavar="<policy>", nargs="+",
                            help="policy ID(s)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        client: rest.TEEClient = self.app.client_manager.tee
        failed = 0
        for policy_id in parsed_args.policies:
            try:
                client.delete_policy(policy_id)
            except rest.TEEClientError as exc:
                failed += 1
                LOG.error("cannot delete policy %s: %s: %s", policy_id,
                          exc.code, exc.message)
        if failed:
            raise exceptions.CommandError(
                f"{failed} of {len(parsed_args.policies)} policies could "
                "not be deleted")
