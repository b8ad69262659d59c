"""The ``amd-sev-snp-report`` evidence format (an evidence plugin).

Evidence: ``report`` (the 1184-byte attestation report, base64), ``vcek``
or ``vlek`` (the endorsement key's certificate, PEM, optionally followed
by its ASK/ARK, as in the extended report's certificate table) and,
optionally, ``cert_chain`` (PEM ASK/ASVK/ARK). A report without its
endorsement key is looked up in the enabled endorsement sources; whatever
they give is verified against the configured AMD roots all the same.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
import datetime
from typing import Any

from oslo_config import cfg

from barbican_tee.attestation import cert_cache
from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs


class EndorsementNotFound(evidence_mod.MalformedEvidence):
    """No VCEK in the evidence, and none in the endorsement sources."""

    code = "endorsement_not_found"


class SnpReportVerifier(evidence_mod.EvidenceVerifier):
    """SEV-SNP attestation reports, verified up to AMD's roots."""

    format = "amd-sev-snp-report"

    def __init__(self, conf: cfg.ConfigOpts,
                 sources: tuple[evidence_mod.EndorsementSource, ...] = ()
                 ) -> None:
        super().__init__(conf, sources)
        self.verifier = snp.SnpVerifier.from_conf(conf)

    def _endorsement(self, evidence: Mapping[str, Any],
                     raw: bytes) -> bytes:
        cert = evidence.get("vcek") or evidence.get("vlek")
        if isinstance(cert, str):
            return cert.encode()
        if self.sources:
            try:
                report = snp.parse_report(raw)
            except errors.AttestationError:
                report = None  # verify() below says what is wrong
            if report is not None and report.signer is not None:
                for source in self.sources:
                    found = source.snp_endorsement(
                        report.chip_id, report.reported_tcb_raw,
                        report.signer.value)
                    if found:
                        return found
            raise EndorsementNotFound(
                "SNP evidence needs the vcek or vlek PEM (from the extended "
                "report's certificate table); no endorsement source holds "
                "one for this chip and TCB (import it: openstack tee "
                "endorsement import)")
        raise evidence_mod.MalformedEvidence(
            "SNP evidence needs the vcek or vlek PEM (from the extended "
            "report's certificate table)")

    def _check_source_crls(self, verified: snp.VerifiedReport,
                           now: datetime.datetime) -> None:
        """Refuse a report whose ASK/ASVK a source's CRL revokes.

        The certificate checked is the one whose signature on the
        endorsement key verified (kept with the key in the verifier's
        cache), whatever chain this request carried; if it is unknown
        while CRLs for the product exist, refuse.
        """
        product = verified.product
        ders: list[bytes] = []
        for source in self.sources:
            ders.extend(source.snp_crls(product.name.lower()))
        if not ders:
            return
        inter, roots = verified.intermediate, verified.roots
        if inter is None or roots is None:
            raise errors.VerificationFailed(
                "cannot tell which ASK/ASVK signed the endorsement key, "
                f"and {product.value} CRLs are cached",
                code="endorsement_signer_unknown")
        stale_ok = self.conf.tee_attestation.snp_crl_allow_stale
        for der in ders:
            crl = snp_certs.load_crl(der)
            signers = [r for r in self.verifier.trusted_roots(
                product) if r.ark.subject == crl.issuer
                and snp_certs.rsa_pss_verify(r.ark, crl.signature,
                                             crl.tbs_certlist_bytes)]
            if not signers:
                raise errors.VerificationFailed(
                    f"a cached {product.value} CRL is not signed by a "
                    "pinned ARK", code="snp_crl_signature")
            if roots not in signers:
                continue  # another root's CRL: not about this chain
            next_update = crl.next_update_utc
            if not stale_ok and (next_update is None
                                 or next_update < now):
                raise errors.VerificationFailed(
                    f"the cached {product.value} CRL expired at "
                    f"{next_update.isoformat() if next_update else '?'}"
                    ": import a fresh one from AMD's KDS",
                    code="endorsement_expired")
            if crl.get_revoked_certificate_by_serial_number(
                    inter.serial_number) is not None:
                raise errors.VerificationFailed(
                    f"{snp_certs.common_name(inter)} is revoked by the "
                    "ARK's CRL", code="certificate_revoked")

    def verify(self, evidence: Mapping[str, Any],
               now: datetime.datetime) -> evidence_mod.VerifiedEvidence:
        try:
            raw = base64.b64decode(str(evidence.get("report", "")),
                                   validate=True)
        except (binascii.Error, ValueError):
            raise evidence_mod.MalformedEvidence(
                "evidence.report is not base64") from None
        endorsement, chain = snp_certs.split_endorsement_bundle(
            self._endorsement(evidence, raw))
        if isinstance(evidence.get("cert_chain"), str):
            chain += cert_cache.load_ca_certs(
                evidence["cert_chain"].encode())
        verified = self.verifier.verify(raw, endorsement, chain, now)
        if self.sources:
            self._check_source_crls(verified, now)
        report = verified.report
        return evidence_mod.VerifiedEvidence(
            format=self.format, tee="amd-sev-snp",
            report_data=report.report_data,
            measurement=report.measurement,
            instance_data=report.host_data,
            tcb=verified.reported_tcb.as_dict(),
            product=verified.product.name.lower(),
            chip_id=report.chip_id,
            policy_bits=report.policy.raw,
            details=verified)

    def evaluate(self, policy: policy_mod.Policy,
                 verified: evidence_mod.VerifiedEvidence,
                 instance_uuid: str | None) -> policy_mod.Result:
        # Nova launched the bound instance with this hostData.
        mismatch = self.check_instance_binding(
            verified, instance_uuid, "sha256",
            "the guest is not the instance the secret is bound to "
            "(host_data)")
        if mismatch is not None:
            return mismatch
        details: snp.VerifiedReport = verified.details
        return policy_mod.evaluate_snp(policy, details)
