"""The ``intel-tdx-quote`` evidence format (an evidence plugin).

Evidence: ``quote`` (a TDX DCAP quote, base64) and ``collateral`` (Intel
PCS QuoteCollateralV3, as an object or JSON text). A quote without its
collateral is looked up in the enabled endorsement sources; what they give
is verified against Intel's root all the same.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
import datetime
import json
from typing import Any

from cryptography import x509

from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import snp_certs
from barbican_tee.attestation import tdx


class TdxQuoteVerifier(evidence_mod.EvidenceVerifier):
    """TDX quotes, verified with their collateral (dcap-qvl)."""

    format = "intel-tdx-quote"

    def verify(self, evidence: Mapping[str, Any],
               now: datetime.datetime) -> evidence_mod.VerifiedEvidence:
        try:
            quote = base64.b64decode(str(evidence.get("quote", "")),
                                     validate=True)
        except (binascii.Error, ValueError):
            raise evidence_mod.MalformedEvidence(
                "evidence.quote is not base64") from None
        collateral = evidence.get("collateral")
        sent = isinstance(collateral, (dict, str))
        if not sent:
            collateral = None
            for source in self.sources:
                collateral = source.tdx_collateral(quote)
                if collateral:
                    break
        if (not isinstance(collateral, (dict, str)) or not collateral
                ) and self.sources:
            raise evidence_mod.MalformedEvidence(
                "TDX evidence needs its Intel PCS collateral "
                "(QuoteCollateralV3) in evidence.collateral; no endorsement "
                "source holds it for this platform (import it: openstack "
                "tee endorsement import)", code="endorsement_not_found")
        if not isinstance(collateral, (dict, str)) or not collateral:
            raise evidence_mod.MalformedEvidence(
                "TDX evidence needs its Intel PCS collateral "
                "(QuoteCollateralV3) in evidence.collateral")
        claims = tdx.verify_quote(quote, collateral, now)
        if self.sources:
            text = tdx.load_collateral(collateral).json_text
            if sent:
                self._check_not_outdated(quote, text)
            for source in self.sources:
                source.tdx_collateral_verified(quote, text)
        return evidence_mod.VerifiedEvidence(
            format=self.format, tee="intel-tdx",
            report_data=claims.report_data,
            measurement=claims.mr_td,
            instance_data=claims.mr_config_id,
            tcb={f"tee_tcb_svn_{i}": b
                 for i, b in enumerate(claims.tee_tcb_svn)},
            product="tdx",
            policy_bits=claims.td_attributes,
            details=claims)

    def _check_not_outdated(self, quote: bytes, text: str) -> None:
        """Refuse sent collateral older than verified collateral held.

        Its TCB info (tcbEvaluationDataNumber: a TCB recovery) and each of
        its CRLs (the PCK CA's and the root CA's, against a held CRL of
        the same issuer: a revoked platform) must be no older.
        """
        number = _evaluation_number(text)
        sent = _crl_orders(text)
        for source in self.sources:
            held = source.tdx_collateral_number(quote)
            if held is not None and (number is None or number < held):
                raise errors.VerificationFailed(
                    "the TDX collateral sent has tcbEvaluationDataNumber "
                    f"{number}, older than the verified collateral held "
                    f"for this platform ({held}): send current collateral "
                    "from Intel PCS (or none)",
                    code="tdx_collateral_outdated")
            for der in source.tdx_collateral_crls(quote):
                try:
                    crl = x509.load_der_x509_crl(der)
                except ValueError:
                    continue
                issuer = crl.issuer.public_bytes()
                if issuer not in sent:
                    continue
                mine, theirs = sent[issuer], snp_certs.crl_order(crl)
                if mine < theirs:
                    raise errors.VerificationFailed(
                        "the TDX collateral sent has a CRL of "
                        f"{crl.issuer.rfc4514_string()} issued "
                        f"{mine[1].isoformat()}, older than the one in the "
                        "verified collateral held for this platform "
                        f"({theirs[1].isoformat()}): send current "
                        "collateral from Intel PCS (or none)",
                        code="tdx_collateral_outdated")

    def evaluate(self, policy: policy_mod.Policy,
                 verified: evidence_mod.VerifiedEvidence,
                 instance_uuid: str | None) -> policy_mod.Result:
        # Nova launched the bound instance with this MRCONFIGID.
        mismatch = self.check_instance_binding(
            verified, instance_uuid, "sha384",
            "the TD is not the instance the secret is bound to "
            "(MRCONFIGID)")
        if mismatch is not None:
            return mismatch
        details: tdx.TdxClaims = verified.details
        return policy_mod.evaluate_tdx(policy, details)


def _crl_orders(text: str) -> dict[bytes, tuple[int, datetime.datetime]]:
    """The (verified) collateral's CRLs: issuer (DER) -> crl_order."""
    try:
        crls = tdx.collateral_crls(json.loads(text))
    except (ValueError, TypeError, KeyError):
        # dcap-qvl verified this collateral, CRLs included.
        raise errors.VerificationFailed(
            "the TDX collateral's CRLs could not be read",
            code="tdx_collateral_invalid") from None
    return {crl.issuer.public_bytes(): snp_certs.crl_order(crl)
            for crl in crls.values()}


def _evaluation_number(text: str) -> int | None:
    """The (verified) collateral's TCB info tcbEvaluationDataNumber."""
    try:
        number = json.loads(json.loads(text)["tcb_info"]).get(
            "tcbEvaluationDataNumber")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return number if isinstance(number, int) else None
