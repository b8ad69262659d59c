"""The real fixtures run through ``openstack-tee verify``, with expectations.

Shared by the functional tests and ``tools/fixture_verdicts.py`` (the main
job), so that the verdict table the README promises is the one CI checks.
Expected results come from tests/fixtures/SOURCES.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SNP = "trustee/deps/verifier/test_data/snp/"
MILAN_MEASUREMENT = (
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
    "3e1a0dc39b2c60bd95b9c480cd81841f")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    evidence: str
    args: tuple[str, ...]
    expected_exit: int
    expected_codes: tuple[str, ...] = ()
    policy: dict[str, Any] | None = None


def _milan_policy(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tee": "amd-sev-snp",
        "measurements": [MILAN_MEASUREMENT],
        "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
        "guest_policy": {"debug": False, "migrate_ma": False},
        "signers": ["vcek"],
    }
    doc.update(extra)
    return doc


CASES: tuple[Case, ...] = (
    Case("snp virtee Milan (v2, VCEK)",
         "virtee-sev/tests/certs_data/report_milan.hex",
         ("--vcek", "virtee-sev/tests/certs_data/vcek_milan.der"),
         0, policy=_milan_policy()),
    Case("snp go-sev-guest Milan (v2, VCEK)",
         "go-sev-guest/verify/testdata/attestation.bin",
         ("--vcek", "go-sev-guest/verify/testdata/vcek.testcer",
          "--cert-chain", "go-sev-guest/verify/testdata/milan.testcer"),
         0, policy={"tee": "amd-sev-snp",
                    "guest_policy": {"debug": True},
                    "min_tcb": {"bootloader": 2, "snp": 5,
                                "microcode": 68}}),
    Case("snp go-sev-guest Milan is a debug guest (policy 0xb0000)",
         "go-sev-guest/verify/testdata/attestation.bin",
         ("--vcek", "go-sev-guest/verify/testdata/vcek.testcer"),
         1, ("policy_debug",), policy={"tee": "amd-sev-snp"}),
    Case("snp trustee Milan with ID block",
         SNP + "test-report.bin",
         ("--vcek", SNP + "test-vcek.der"),
         0, policy={"tee": "amd-sev-snp", "guest_policy": {"smt": True}}),
    Case("snp trustee VLEK (ASVK chain, inside validity)",
         SNP + "test-vlek-report.bin",
         ("--vlek", SNP + "test-vlek.der", "--cert-chain",
          "trustee/deps/verifier/src/snp/milan_ask_ark_asvk.pem",
          "--at", "2025-06-01T00:00:00Z"),
         0, policy={"tee": "amd-sev-snp", "signers": ["vlek"], "vmpl": 1}),
    Case("snp Genoa (v3, from Azure evidence)",
         "trustee/derived_genoa_snp_report_from_evidence-genoa.bin",
         ("--vcek", "trustee/derived_genoa_vcek_from_evidence-genoa.pem"),
         0, policy={"tee": "amd-sev-snp",
                    "min_tcb": {"bootloader": 10, "snp": 23,
                                "microcode": 84}}),
    Case("snp Milan, policy demands a newer SNP firmware",
         "virtee-sev/tests/certs_data/report_milan.hex",
         ("--vcek", "virtee-sev/tests/certs_data/vcek_milan.der"),
         1, ("policy_tcb_below_minimum",),
         policy=_milan_policy(min_tcb={"snp": 9})),
    Case("snp Milan, another measurement expected",
         "virtee-sev/tests/certs_data/report_milan.hex",
         ("--vcek", "virtee-sev/tests/certs_data/vcek_milan.der"),
         1, ("policy_measurement",),
         policy=_milan_policy(measurements=["00" * 48])),
    Case("snp VLEK report, policy requires a VCEK",
         SNP + "test-vlek-report.bin",
         ("--vlek", SNP + "test-vlek.der", "--at", "2025-06-01T00:00:00Z"),
         1, ("policy_signer", "policy_vmpl"),
         policy={"tee": "amd-sev-snp", "signers": ["vcek"], "vmpl": 0}),
    Case("snp VLEK report checked against a VCEK",
         SNP + "test-vlek-report.bin",
         ("--vcek", SNP + "test-vcek.der"),
         1, ("snp_signer_mismatch",)),
    Case("snp VLEK report after the VLEK expired",
         SNP + "test-vlek-report.bin",
         ("--vlek", SNP + "test-vlek.der", "--at", "2026-01-01T00:00:00Z"),
         1, ("snp_cert_expired",)),
    Case("snp Milan report with another chip's VCEK",
         "virtee-sev/tests/certs_data/report_milan.hex",
         ("--vcek", "go-sev-guest/verify/testdata/vcek.testcer"),
         1, ("snp_signature_invalid",)),
    Case("tdx dcap-qvl quote v4, inside its collateral's window",
         "dcap-qvl/sample/tdx_quote",
         ("--collateral", "dcap-qvl/sample/tdx_quote_collateral.json",
          "--at", "2025-07-01T00:00:00Z"),
         0, policy={"tee": "intel-tdx", "tcb_statuses": ["UpToDate"]}),
    Case("tdx quote v5 (TD 1.5 extended body), inside the window",
         "dcap-qvl-sdist-0.7.0/sample/tdx_quote_td15ex",
         ("--collateral",
          "dcap-qvl-sdist-0.7.0/sample/tdx_quote_td15ex_collateral.json",
          "--at", "2026-10-20T00:00:00Z"),
         0, policy={"tee": "intel-tdx"}),
    Case("tdx quote whose TCB matches no level of its collateral",
         "dcap-qvl/sample/tdx_quote_outdated",
         ("--collateral",
          "dcap-qvl/sample/tdx_quote_outdated_collateral.json",
          "--at", "2026-03-01T00:00:00Z"),
         1, ("tdx_tcb_no_match",)),
    Case("tdx quote after its collateral expired",
         "dcap-qvl/sample/tdx_quote",
         ("--collateral", "dcap-qvl/sample/tdx_quote_collateral.json",
          "--at", "2025-08-01T00:00:00Z"),
         1, ("tdx_collateral_expired",)),
    Case("tdx quote, policy expects another MRTD",
         "dcap-qvl/sample/tdx_quote",
         ("--collateral", "dcap-qvl/sample/tdx_quote_collateral.json",
          "--at", "2025-07-01T00:00:00Z"),
         1, ("policy_measurement",),
         policy={"tee": "intel-tdx", "measurements": ["00" * 48]}),
    Case("sgx quote given as TDX evidence",
         "dcap-qvl/sample/sgx_quote",
         ("--format", "intel-tdx-quote", "--collateral",
          "dcap-qvl/sample/sgx_quote_collateral.json",
          "--at", "2025-07-01T00:00:00Z"),
         2, ("tdx_quote_is_sgx",)),
    Case("tdx quote without collateral",
         "trustee/deps/verifier/test_data/tdx_quote_5.dat", (),
         2, ("collateral_missing",)),
    Case("snp report truncated to a TDX-looking blob",
         "go-tdx-guest/testing/testdata/report.dat",
         ("--format", "amd-sev-snp-report", "--vcek",
          "virtee-sev/tests/certs_data/vcek_milan.der"),
         2, ("snp_report_truncated",)),
)
