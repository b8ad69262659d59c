"""``openstack tee flavor set``: validated hw: and tee: extra specs."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from nova_tee import specs

# Nova validates flavor extra specs (with every registered namespace,
# openstack-tee's tee: included) from this microversion on.
VALIDATING_MICROVERSION = "2.86"

MODEL_MEANING = {
    specs.SEV: "AMD SEV: memory encrypted with a per-guest key",
    specs.SEV_ES: "AMD SEV-ES: SEV plus encrypted register state",
    specs.SEV_SNP: "AMD SEV-SNP: SEV-ES plus memory integrity and signed "
                   "attestation reports",
    specs.TDX: "Intel TDX: a trust domain with signed quotes",
}
TCB_OPTIONS = {f"tee:min_tcb_{c}": c for c in specs.TCB_KEYS}


def meaning(key: str, value: str) -> str:
    """What one extra spec asks Nova for, in a sentence."""
    if key == "hw:mem_encryption":
        return "upstream Nova: launch the guest memory-encrypted"
    if key == "hw:mem_encryption_model":
        return "upstream Nova: " + MODEL_MEANING.get(value, value)
    if key in specs.KEYS:
        return specs.KEYS[key][2]
    return "kept as it was"


def _spec_pairs(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise exceptions.CommandError(
                f"--spec takes KEY=VALUE, not {pair!r}")
        if not key.startswith(specs.PREFIX):
            key = specs.PREFIX + key
        out[key] = value
    return out


class SetFlavor(command.Lister):
    """Make a flavor confidential: hw:mem_encryption* and tee: specs.

    The resulting extra specs are checked as Nova's API and scheduler will
    read them (known keys, valid values, keys that apply to the model, no
    contradictions) before anything is written, and each is explained.
    Existing tee: keys are replaced; other extra specs are kept.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("flavor", metavar="<flavor>",
                            help="flavor name or ID")
        parser.add_argument("--model", required=True, choices=specs.MODELS,
                            help="the confidential-computing model")
        parser.add_argument("--attestation", choices=("required", "none"),
                            help="required: the guest is attested at launch "
                                 "(SEV, SEV-ES) or its key is bound to the "
                                 "instance (SEV-SNP, TDX)")
        parser.add_argument("--min-firmware", metavar="<major.minor>",
                            help="lowest AMD firmware API version")
        parser.add_argument("--min-tcb", action="append", metavar="<c=n>",
                            help="lowest SNP TCB component SPL, c one of "
                                 f"{', '.join(specs.TCB_KEYS)}; repeat")
        parser.add_argument("--spec", action="append", metavar="<key=value>",
                            help="any other tee: extra spec (the tee: "
                                 "prefix may be left out); repeat")
        parser.add_argument("--dry-run", action="store_true",
                            help="check and explain, write nothing")
        return parser

    def wanted(self, args: argparse.Namespace) -> dict[str, str]:
        """The hw: and tee: extra specs the options ask for."""
        out = {"hw:mem_encryption": "true",
               "hw:mem_encryption_model": args.model}
        if args.attestation:
            out["tee:attestation"] = args.attestation
        if args.min_firmware:
            out["tee:min_firmware"] = args.min_firmware
        for pair in args.min_tcb or []:
            comp, sep, value = pair.partition("=")
            if not sep or comp not in specs.TCB_KEYS:
                raise exceptions.CommandError(
                    "--min-tcb takes COMPONENT=N with COMPONENT one of "
                    f"{', '.join(specs.TCB_KEYS)}, not {pair!r}")
            out[f"tee:min_tcb_{comp}"] = value
        out.update(_spec_pairs(args.spec))
        return out

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        wanted = self.wanted(parsed_args)
        compute = self.app.client_manager.compute
        flavor = compute.find_flavor(parsed_args.flavor,
                                     ignore_missing=False)
        current = dict(compute.fetch_flavor_extra_specs(flavor)
                       .extra_specs or {})
        stale = [k for k in current
                 if k.startswith(specs.PREFIX) and k not in wanted]
        merged = {k: v for k, v in current.items() if k not in stale}
        merged.update(wanted)
        problems = specs.conflicts(merged)
        if problems:
            raise exceptions.CommandError(
                f"flavor {flavor.name} not changed: " + "; ".join(problems))
        if not parsed_args.dry_run:
            for key in stale:
                resp = compute.delete(
                    f"/flavors/{flavor.id}/os-extra_specs/{key}",
                    microversion=VALIDATING_MICROVERSION)
                _check(resp, f"removing {key}")
            resp = compute.post(
                f"/flavors/{flavor.id}/os-extra_specs",
                json={"extra_specs": wanted},
                microversion=VALIDATING_MICROVERSION)
            _check(resp, "setting the extra specs")
        rows = [(k, wanted[k], meaning(k, wanted[k]))
                for k in sorted(wanted)]
        rows += [(k, "(removed)", "not asked for any more") for k in stale]
        return ("Extra spec", "Value", "Meaning"), rows


def _check(resp: Any, what: str) -> None:
    if resp.status_code >= 300:
        try:
            body = resp.json()
            detail = next(iter(body.values())).get("message", resp.text)
        except (ValueError, AttributeError, StopIteration):
            detail = resp.text
        raise exceptions.CommandError(
            f"Nova refused {what} (HTTP {resp.status_code}): {detail}")
