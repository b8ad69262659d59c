"""``openstack-tee``: the command-line contract of ARCHITECTURE.md.

Exit codes of ``verify``: 0 verified and policy met; 1 refused (every
failed check printed with its code); 2 unusable input or arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime
import json
import sys
from typing import Any
from typing import NoReturn

from barbican_tee.attestation import errors
from barbican_tee.attestation import measure
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation import tdx
from barbican_tee.cmd import db as db_cmd
from barbican_tee.cmd import rewrap
from barbican_tee.cmd import serve
from barbican_tee import extras

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNUSABLE = 2

FORMAT_SNP = "amd-sev-snp-report"
FORMAT_TDX = "intel-tdx-quote"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message}\n")


class _Unusable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _Unusable("file_unreadable",
                        f"cannot read {what} {path!r}: "
                        f"{exc.strerror}") from None


def _parse_at(value: str | None) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        at = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Unusable("bad_time",
                        f"--at {value!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return at


def _detect_format(data: bytes) -> str:
    if len(data) == snp.REPORT_SIZE or len(data.strip()) == (
            2 * snp.REPORT_SIZE):
        return FORMAT_SNP
    return FORMAT_TDX


def _load_policy(path: str | None) -> policy_mod.Policy | None:
    if path is None:
        return None
    try:
        doc = json.loads(_read(path, "policy"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Unusable("policy_malformed",
                        f"policy {path!r} is not JSON: {exc}") from None
    return policy_mod.Policy.from_dict(doc)


def _verify_snp(args: argparse.Namespace, data: bytes,
                at: datetime.datetime | None,
                policy: policy_mod.Policy | None
                ) -> tuple[dict[str, Any], policy_mod.Result]:
    report = snp.load_report(data)
    if args.vcek and args.vlek:
        raise _Unusable("bad_arguments", "give --vcek or --vlek, not both")
    if not (args.vcek or args.vlek):
        raise _Unusable(
            "endorsement_missing",
            "an SEV-SNP report needs its endorsement key certificate: "
            "--vcek FILE (or --vlek FILE), as served by AMD's KDS or the "
            "host's extended report")
    endorsement, chain = snp_certs.split_endorsement_bundle(
        _read(args.vcek or args.vlek, "endorsement key"))
    if args.cert_chain:
        chain += snp_certs.load_ca_certs(_read(args.cert_chain,
                                               "certificate chain"))
    extra = []
    if args.trust_root:
        extra.append(snp_certs.roots_from_bundle(
            _read(args.trust_root, "trust root")))
    verifier = snp.SnpVerifier(extra_roots=extra)
    expected = snp_certs.SignerKind.VLEK if args.vlek else (
        snp_certs.SignerKind.VCEK)
    if report.signer is not None and report.signer is not expected:
        raise errors.VerificationFailed(
            f"the report is signed by a {report.signer.value.upper()} but "
            f"--{expected.value} was given", code="snp_signer_mismatch")
    verified = verifier.verify(report, endorsement, chain, at)
    result = policy_mod.Result(())
    if policy is not None:
        result = policy_mod.evaluate_snp(policy, verified)
    return verified.claims(), result


def _verify_tdx(args: argparse.Namespace, data: bytes,
                at: datetime.datetime | None,
                policy: policy_mod.Policy | None
                ) -> tuple[dict[str, Any], policy_mod.Result]:
    if not args.collateral:
        raise _Unusable(
            "collateral_missing",
            "a TDX quote needs Intel PCS collateral: --collateral FILE "
            "(QuoteCollateralV3 JSON, as dcap-qvl and PCCS give it)")
    stripped = data.strip()
    if stripped and all(c in b"0123456789abcdefABCDEFx" for c in
                        stripped[:64]):
        data = tdx.quote_from_hex(stripped)
    collateral = _read(args.collateral, "collateral")
    claims = tdx.verify_quote(data, collateral,
                              at or datetime.datetime.now(datetime.UTC))
    result = policy_mod.Result(())
    if policy is not None:
        result = policy_mod.evaluate_tdx(policy, claims)
    return claims.as_dict(), result


def cmd_verify(args: argparse.Namespace) -> int:
    claims: dict[str, Any] = {}
    failures: list[tuple[str, str]] = []
    try:
        data = _read(args.evidence, "evidence")
        fmt = args.format or _detect_format(data)
        at = _parse_at(args.at)
        policy = _load_policy(args.policy)
        if fmt == FORMAT_SNP:
            claims, result = _verify_snp(args, data, at, policy)
        else:
            claims, result = _verify_tdx(args, data, at, policy)
        failures = [(f.code, f.message) for f in result.failures]
        status = EXIT_REFUSED if failures else EXIT_OK
    except errors.VerificationFailed as exc:
        failures = [(exc.code, exc.message)]
        status = EXIT_REFUSED
    except errors.InvalidInput as exc:
        failures = [(exc.code, exc.message)]
        status = EXIT_UNUSABLE
    except _Unusable as exc:
        failures = [(exc.code, str(exc))]
        status = EXIT_UNUSABLE
    if args.json:
        print(json.dumps({"verified": status == EXIT_OK,
                          "codes": [c for c, _ in failures],
                          "messages": [m for _, m in failures],
                          "claims": claims}, indent=2, sort_keys=True))
    else:
        if status == EXIT_OK:
            print("VERIFIED")
        else:
            print("REFUSED" if status == EXIT_REFUSED else "UNUSABLE")
        for code, message in failures:
            print(f"  {code}: {message}")
        for key in ("tee", "product", "signer", "measurement", "mr_td",
                    "tcb_status", "reported_tcb", "report_data"):
            if key in claims:
                print(f"  {key}: {claims[key]}")
    return status


def cmd_measure(args: argparse.Namespace) -> int:
    try:
        counts = measure.parse_vcpu_range(args.vcpus)
        features = measure.DEFAULT_GUEST_FEATURES
        if args.guest_features is not None:
            try:
                features = int(args.guest_features, 16)
            except ValueError:
                raise _Unusable(
                    "measure_bad_guest_features",
                    f"--guest-features {args.guest_features!r} is not "
                    "hex") from None
        calc = measure.ReferenceCalculator(
            args.ovmf, mode=args.mode, vcpu_type=args.vcpu_type,
            kernel=args.kernel, initrd=args.initrd, append=args.append,
            guest_features=features, vmm_type=args.vmm_type,
            ovmf_hash=args.snp_ovmf_hash)
        digests = calc.digests(counts)
    except errors.AttestationError as exc:
        print(f"openstack-tee measure: {exc.code}: {exc.message}",
              file=sys.stderr)
        return EXIT_UNUSABLE
    except _Unusable as exc:
        print(f"openstack-tee measure: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    for count in counts:
        print(digests[count].hex())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="openstack-tee",
                     description="Attestation tools of openstack-tee.")
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=_Parser)
    v = sub.add_parser("verify",
                       help="verify one SEV-SNP report or TDX quote")
    v.add_argument("--evidence", required=True, metavar="FILE")
    v.add_argument("--format", choices=(FORMAT_SNP, FORMAT_TDX))
    v.add_argument("--vcek", metavar="FILE")
    v.add_argument("--vlek", metavar="FILE")
    v.add_argument("--cert-chain", metavar="FILE")
    v.add_argument("--collateral", metavar="FILE")
    v.add_argument("--trust-root", metavar="FILE",
                   help="an extra ARK bundle to trust (tests only)")
    v.add_argument("--policy", metavar="FILE")
    v.add_argument("--at", metavar="ISO8601",
                   help="verification time (default: now)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)
    m = sub.add_parser(
        "measure",
        help="expected launch digests (reference values) from an OVMF")
    m.add_argument("--mode", required=True,
                   choices=[mode.value for mode in measure.Mode
                            if mode is not measure.Mode.SNP_SVSM])
    m.add_argument("--ovmf", required=True, metavar="FILE")
    m.add_argument("--vcpus", required=True, metavar="N[-M]",
                   help="a vCPU count or an inclusive range; one digest "
                        "per count, in order")
    m.add_argument("--vcpu-type", metavar="T",
                   help="QEMU CPU model, e.g. EPYC-v4 or EPYC-Milan")
    m.add_argument("--kernel", metavar="K")
    m.add_argument("--initrd", metavar="I")
    m.add_argument("--append", metavar="A")
    m.add_argument("--guest-features", metavar="HEX",
                   help="SNP SEV_FEATURES of the VMSAs (default 0x1)")
    m.add_argument("--snp-ovmf-hash", metavar="HEX",
                   help="precomputed SNP chain value of the firmware "
                        "pages (as sev-snp-measure's --snp-ovmf-hash)")
    m.add_argument("--vmm-type", default="qemu",
                   choices=[vmm.value for vmm in measure.VmmType])
    m.set_defaults(func=cmd_measure)
    rewrap.add_parser(sub)
    db_cmd.add_parser(sub)
    serve.add_parser(sub)
    d = sub.add_parser(
        "demo", help="the end-to-end demonstration (a real barbican-api, "
                     "Nova in-process, the software secure processor)")
    d.add_argument("--workers", type=int, default=2, metavar="W",
                   help="barbican-api gunicorn workers (default 2)")
    d.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    """``openstack-tee demo``: needs Nova's test harness and the model."""
    if args.workers < 1:
        print("openstack-tee demo: --workers must be at least 1",
              file=sys.stderr)
        return EXIT_UNUSABLE
    problem = extras.check("demo", "openstack-tee demo")
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        from openstack_tee_demo import demo
    except ImportError as exc:
        print("openstack-tee demo: the demonstration needs nova==34.0.0 "
              "with its test harness, openstack-placement and "
              f"wsgi-intercept ({exc})", file=sys.stderr)
        return EXIT_UNUSABLE
    status: int = demo.run(workers=args.workers)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
