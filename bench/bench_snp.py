"""SNP verification with a cached chain against a bare P-384 verify.

Both sides verify the same real report (virtee's Milan report) in the same
process: the baseline is one ``cryptography`` ECDSA P-384/SHA-384
verification of the signed region with the VCEK's public key, already
loaded; ours is ``SnpVerifier.verify`` on the raw bytes (parse, cached VCEK
chain lookup, signature, TCB and chip binding). The ratio is baseline time
over our time: 1.0 means no overhead beyond the signature itself.
"""

from __future__ import annotations

import os
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from barbican_tee.attestation import snp  # noqa: E402
from barbican_tee.attestation import snp_certs  # noqa: E402
from bench import common  # noqa: E402

FIX = os.path.join(ROOT, "tests", "fixtures", "virtee-sev", "tests",
                   "certs_data")


def run() -> list[str]:
    with open(os.path.join(FIX, "report_milan.hex"), "rb") as f:
        raw = snp.load_report(f.read()).raw
    with open(os.path.join(FIX, "vcek_milan.der"), "rb") as f:
        vcek = f.read()
    verifier = snp.SnpVerifier()
    verifier.verify(raw, vcek)  # fills the chain cache
    key = snp_certs.parse_endorsement_cert(vcek).public_key
    report = snp.parse_report(raw)
    der_sig = snp._signature_der(report)
    signed = raw[:snp.SIGNED_SIZE]

    def bare() -> None:
        key.verify(der_sig, signed, ec.ECDSA(hashes.SHA384()))

    def ours() -> None:
        verifier.verify(raw, vcek)

    inner = 200
    base = common.median_seconds(bare, rounds=9, inner=inner)
    mine = common.median_seconds(ours, rounds=9, inner=inner)
    return [
        common.ratio_line("snp_verify_vs_bare_p384", base / mine, ">=", 0.8),
        f"  medians: bare P-384 verify={base * 1e6:.1f}us "
        f"SnpVerifier.verify (cached chain)={mine * 1e6:.1f}us "
        f"rounds=9 x {inner}",
    ]


if __name__ == "__main__":
    print("\n".join(run()))
