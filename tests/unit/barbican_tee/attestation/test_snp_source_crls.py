"""Source CRLs apply to the ASK/ASVK that signed the endorsement key.

The verifier caches verified endorsement keys; the ASK that signed one is
kept with it, so a request without the chain (a cache hit) is checked
against the CRLs all the same.
"""

from __future__ import annotations

import base64
import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from oslo_config import cfg

from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_evidence
from barbican_tee.conf import attestation as conf_att
from openstack_tee_demo.sp_model import snp as spm
from tests import base

NOW = datetime.datetime.now(datetime.UTC)


class _Crls(evidence_mod.EndorsementSource):
    name = "crls"

    def __init__(self, conf: cfg.ConfigOpts, ders: list[bytes]) -> None:
        super().__init__(conf)
        self.ders = ders

    def snp_crls(self, product: str) -> list[bytes]:
        return list(self.ders)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class SourceCrlTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.conf = cfg.ConfigOpts()
        conf_att.register_opts(self.conf)
        self.conf([])
        sp = spm.SecureProcessor()
        # A second ASK under the pinned ARK (not the pinned one) signs
        # the VCEK.
        key = spm._rsa_key("old-ask")  # noqa: SLF001
        self.old_ask = sp._ca("SEV-Milan", key, sp.ark_key,  # noqa: SLF001
                              "ARK-Milan", 0x777)
        vcek = sp.endorsement_cert(sp.vcek_key, "SEV-VCEK", key,
                                   "SEV-Milan", sp.tcb,
                                   hwid=sp._hwid())  # noqa: SLF001
        self.vcek_pem = ("-----BEGIN CERTIFICATE-----\n"
                         + base64.encodebytes(vcek).decode()
                         + "-----END CERTIFICATE-----\n")
        self.report = base64.b64encode(sp.report()).decode()
        self.sp = sp

    def _crl(self, serial: int) -> bytes:
        sp = self.sp
        return (x509.CertificateRevocationListBuilder()
                .issuer_name(sp.ark.subject)
                .last_update(NOW - datetime.timedelta(hours=1))
                .next_update(NOW + datetime.timedelta(days=7))
                .add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(serial)
                    .revocation_date(NOW).build())
                .sign(sp.ark_key, hashes.SHA384(),
                      rsa_padding=spm._PSS)  # noqa: SLF001
                ).public_bytes(serialization.Encoding.DER)

    def _verifier(self, crl: bytes) -> snp_evidence.SnpReportVerifier:
        v = snp_evidence.SnpReportVerifier(self.conf,
                                           (_Crls(self.conf, [crl]),))
        v.verifier = snp.SnpVerifier(extra_roots=[self.sp.roots()])
        return v

    def test_a_cached_endorsement_key_still_meets_the_crl(self) -> None:
        with_chain = {"report": self.report, "vcek": self.vcek_pem,
                      "cert_chain": _pem(self.old_ask)}
        no_chain = {"report": self.report, "vcek": self.vcek_pem}
        # Positive control: a CRL revoking another serial lets the same
        # requests through, the second one from the verifier's cache.
        v = self._verifier(self._crl(0x778))
        v.verify(with_chain, NOW)
        v.verify(no_chain, NOW)
        v = self._verifier(self._crl(0x777))
        for evidence in (with_chain, no_chain):
            with self.assertRaises(errors.VerificationFailed) as ctx:
                v.verify(evidence, NOW)
            self.assertEqual("certificate_revoked", ctx.exception.code)
        # The cache hit carries the ASK that signed the key.
        v.sources = ()
        verified = v.verify(no_chain, NOW).details
        self.assertEqual(0x777, verified.intermediate.serial_number)

    def test_an_unknown_signer_is_refused_when_crls_exist(self) -> None:
        v = self._verifier(self._crl(0x778))
        verified = v.verify({"report": self.report, "vcek": self.vcek_pem,
                             "cert_chain": _pem(self.old_ask)}, NOW)
        bare = snp.VerifiedReport(
            report=verified.details.report, product=verified.details.product,
            signer=verified.details.signer,
            reported_tcb=verified.details.reported_tcb,
            endorsement=verified.details.endorsement)
        with self.assertRaises(errors.VerificationFailed) as ctx:
            v._check_source_crls(bare, NOW)  # noqa: SLF001
        self.assertEqual("endorsement_signer_unknown", ctx.exception.code)
