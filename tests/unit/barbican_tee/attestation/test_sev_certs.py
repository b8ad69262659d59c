"""Legacy SEV certificate parsing and chain verification."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from barbican_tee.attestation import errors
from barbican_tee.attestation import sev_certs
from openstack_tee_demo.sp_model import sev as sp_model
from tests import base

NAMES = ("cek", "oca", "pek", "pdh")


def platform(gen: str) -> dict[str, bytes]:
    return {n: base.read_fixture("virtee-sev", "tests", gen, f"{n}.cert")
            for n in NAMES}


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


class TestRealChains(base.TestCase):

    def _verify(self, gen: str, roots: str | None = None,
                **override: bytes) -> None:
        ark, ask = sev_certs.builtin_roots(roots or gen)
        certs = platform(gen)
        certs.update(override)
        sev_certs.verify_platform_chain(ark, ask, certs["cek"], certs["pek"],
                                        certs["pdh"], oca=certs["oca"])

    def test_naples_chain_verifies(self) -> None:
        self._verify("naples")

    def test_rome_chain_verifies(self) -> None:
        self._verify("rome")

    def test_parsed_fields(self) -> None:
        pdh = sev_certs.parse_sev_cert(platform("rome")["pdh"])
        self.assertEqual(sev_certs.Usage.PDH, pdh.usage)
        self.assertEqual(sev_certs.Algorithm.ECDH_SHA256, pdh.algorithm)
        self.assertEqual(sev_certs.Curve.P384, pdh.curve)
        self.assertEqual((0, 22), (pdh.api_major, pdh.api_minor))
        self.assertEqual(platform("rome")["pdh"], pdh.to_bytes())
        key = sev_certs.pdh_public_key(pdh)
        self.assertIsInstance(key.curve, ec.SECP384R1)

    def test_builtin_roots_all_generations(self) -> None:
        for gen, bits in (("naples", 2048), ("rome", 4096),
                          ("milan", 4096), ("genoa", 4096)):
            ark, ask = sev_certs.builtin_roots(gen)
            self.assertEqual(sev_certs.Usage.ARK, ark.usage)
            self.assertEqual(sev_certs.Usage.ASK, ask.usage)
            self.assertEqual(bits, ark.modulus_bits)
            self.assertEqual(ark.key_id, ask.certifying_id)
            self.assertNotIn("modulus=", repr(ark))

    def test_unknown_generation(self) -> None:
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.builtin_roots, "turin")
        self.assertEqual("sev_unknown_generation", exc.code)

    def test_naples_cek_refused_under_rome_ask(self) -> None:
        exc = self.assertRaises(errors.VerificationFailed, self._verify,
                                "naples", roots="rome")
        self.assertEqual("sev_cert_signature", exc.code)

    def test_rome_platform_refused_under_milan_roots(self) -> None:
        exc = self.assertRaises(errors.VerificationFailed, self._verify,
                                "rome", roots="milan")
        self.assertEqual("sev_cert_signature", exc.code)

    def test_rome_ask_under_milan_ark_refused(self) -> None:
        ark, _ = sev_certs.builtin_roots("milan")
        _, ask = sev_certs.builtin_roots("rome")
        c = platform("rome")
        exc = self.assertRaises(errors.VerificationFailed,
                                sev_certs.verify_platform_chain, ark, ask,
                                c["cek"], c["pek"], c["pdh"])
        self.assertEqual("sev_cert_issuer", exc.code)

    def test_naples_bad_ark(self) -> None:
        bad = base.read_fixture("virtee-sev", "tests", "naples",
                                "ark.cert.bad")
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.parse_amd_root_cert, bad)
        self.assertEqual("sev_cert_size", exc.code)

    def test_tampered_signatures_refused(self) -> None:
        c = platform("rome")
        # Signature byte of the CEK's RSA slot, the PEK's two ECDSA slots,
        # the PDH's slot and the OCA's self-signature.
        cases = {"cek": 0x414 + 8 + 5, "pek": 0x414 + 8 + 3,
                 "pdh": 0x414 + 8 + 1, "oca": 0x414 + 8 + 7}
        for name, index in cases.items():
            exc = self.assertRaises(errors.VerificationFailed, self._verify,
                                    "rome", **{name: flip(c[name], index)})
            self.assertEqual("sev_cert_signature", exc.code, name)
        exc = self.assertRaises(
            errors.VerificationFailed, self._verify, "rome",
            pek=flip(c["pek"], 0x414 + 520 + 8 + 3))
        self.assertEqual("sev_cert_signature", exc.code)

    def test_tampered_body_refused(self) -> None:
        c = platform("naples")
        # api_minor byte of the body is covered by the signature.
        exc = self.assertRaises(errors.VerificationFailed, self._verify,
                                "naples", pdh=flip(c["pdh"], 5))
        self.assertEqual("sev_cert_signature", exc.code)

    def test_tampered_root_signature_refused(self) -> None:
        ark, ask = sev_certs.builtin_roots("rome")
        c = platform("rome")
        bad_ask = flip(ask.to_bytes(), len(ask.to_bytes()) - 3)
        exc = self.assertRaises(errors.VerificationFailed,
                                sev_certs.verify_platform_chain, ark,
                                bad_ask, c["cek"], c["pek"], c["pdh"])
        self.assertEqual("sev_cert_signature", exc.code)
        bad_ark = flip(ark.to_bytes(), len(ark.to_bytes()) - 3)
        exc = self.assertRaises(errors.VerificationFailed,
                                sev_certs.verify_platform_chain, bad_ark,
                                ask, c["cek"], c["pek"], c["pdh"])
        self.assertEqual("sev_cert_signature", exc.code)

    def test_certificates_in_wrong_roles(self) -> None:
        ark, ask = sev_certs.builtin_roots("rome")
        c = platform("rome")
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.verify_platform_chain, ark, ask,
                                c["cek"], c["pdh"], c["pek"])
        self.assertEqual("sev_cert_role", exc.code)
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.verify_platform_chain, ask, ark,
                                c["cek"], c["pek"], c["pdh"])
        self.assertEqual("sev_cert_role", exc.code)
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.pdh_public_key, c["pek"])
        self.assertEqual("sev_cert_role", exc.code)


class TestParserErrors(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.pdh = platform("rome")["pdh"]

    def _code(self, data: bytes) -> str:
        exc = self.assertRaises(errors.InvalidInput,
                                sev_certs.parse_sev_cert, data)
        return exc.code

    def test_sev_cert_errors(self) -> None:
        p = self.pdh
        self.assertEqual("sev_cert_size", self._code(p[:-1]))
        self.assertEqual("sev_cert_size", self._code(p + b"\0"))
        self.assertEqual("sev_cert_version",
                         self._code(struct.pack("<I", 2) + p[4:]))
        self.assertEqual("sev_cert_usage",
                         self._code(p[:8] + struct.pack("<I", 0x13) + p[12:]))
        self.assertEqual("sev_cert_algorithm",
                         self._code(p[:12] + struct.pack("<I", 1) + p[16:]))
        # A PDH must be an ECDH key.
        self.assertEqual("sev_cert_algorithm",
                         self._code(p[:12] + struct.pack("<I", 2) + p[16:]))
        self.assertEqual("sev_cert_curve",
                         self._code(p[:16] + struct.pack("<I", 3) + p[20:]))
        self.assertEqual("sev_cert_public_key", self._code(flip(p, 20)))
        # P-384 key labelled P-256: not a point on P-256.
        self.assertEqual("sev_cert_public_key",
                         self._code(p[:16] + struct.pack("<I", 1) + p[20:]))

    def test_root_cert_errors(self) -> None:
        ark = sev_certs.builtin_roots("naples")[0].to_bytes()

        def code(data: bytes) -> str:
            return self.assertRaises(errors.InvalidInput,
                                     sev_certs.parse_amd_root_cert,
                                     data).code

        self.assertEqual("sev_cert_size", code(ark[:63]))
        self.assertEqual("sev_cert_size", code(ark + b"\0"))
        self.assertEqual("sev_cert_version",
                         code(struct.pack("<I", 0) + ark[4:]))
        self.assertEqual("sev_cert_usage",
                         code(ark[:36] + struct.pack("<I", 0x1004)
                              + ark[40:]))
        self.assertEqual("sev_cert_key_size",
                         code(ark[:56] + struct.pack("<II", 1024, 1024)
                              + ark[64:]))
        self.assertEqual("sev_cert_key_size",
                         code(ark[:56] + struct.pack("<II", 4096, 2048)
                              + ark[64:]))
        # Even modulus is not an RSA key.
        self.assertEqual("sev_cert_public_key",
                         code(ark[:64 + 256] + b"\0" * 256 + ark[576:]))

    def test_non_bytes(self) -> None:
        for fn in (sev_certs.parse_sev_cert, sev_certs.parse_amd_root_cert):
            exc = self.assertRaises(errors.InvalidInput, fn, "text")
            self.assertEqual("sev_cert_size", exc.code)


class TestModelChain(base.TestCase):

    def test_model_chain_verifies_and_round_trips(self) -> None:
        plat = sp_model.SevPlatform()
        ark = sev_certs.parse_amd_root_cert(plat.ark)
        sev_certs.verify_platform_chain(ark, plat.ask, plat.cek, plat.pek,
                                        plat.pdh, oca=plat.oca)
        pdh = sev_certs.parse_sev_cert(plat.pdh)
        again = sev_certs.make_sev_cert(pdh.usage, pdh.algorithm,
                                        pdh.public_key(), api_major=0,
                                        api_minor=24,
                                        signatures=pdh.signatures)
        self.assertEqual(plat.pdh, again.to_bytes())

    def test_model_chain_with_4096_bit_roots(self) -> None:
        plat = sp_model.SevPlatform(rsa_bits=4096)
        sev_certs.verify_platform_chain(plat.ark, plat.ask, plat.cek,
                                        plat.pek, plat.pdh, oca=plat.oca)

    def test_model_chain_refused_under_amd_roots(self) -> None:
        plat = sp_model.SevPlatform()
        ark, ask = sev_certs.builtin_roots("naples")
        exc = self.assertRaises(errors.VerificationFailed,
                                sev_certs.verify_platform_chain, ark, ask,
                                plat.cek, plat.pek, plat.pdh)
        self.assertEqual("sev_cert_signature", exc.code)

    def test_foreign_oca_refused(self) -> None:
        a = sp_model.SevPlatform()
        b = sp_model.SevPlatform()
        exc = self.assertRaises(errors.VerificationFailed,
                                sev_certs.verify_platform_chain, a.ark,
                                a.ask, a.cek, a.pek, a.pdh, oca=b.oca)
        self.assertEqual("sev_cert_signature", exc.code)

    def test_make_sev_cert_rejects_other_curves(self) -> None:
        key = ec.generate_private_key(ec.SECP521R1()).public_key()
        exc = self.assertRaises(errors.InvalidInput, sev_certs.make_sev_cert,
                                sev_certs.Usage.PDH,
                                sev_certs.Algorithm.ECDH_SHA256, key)
        self.assertEqual("sev_cert_curve", exc.code)


ROME = platform("rome")
NAPLES_ROOTS = sev_certs.builtin_roots("naples")
ROME_ROOTS = sev_certs.builtin_roots("rome")


class TestParserProperties(base.TestCase):

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2200))
    def test_random_bytes_sev_cert(self, data: bytes) -> None:
        try:
            sev_certs.parse_sev_cert(data)
        except errors.AttestationError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=1700))
    def test_random_bytes_root_cert(self, data: bytes) -> None:
        try:
            sev_certs.parse_amd_root_cert(data)
        except errors.AttestationError:
            pass

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(NAMES), st.integers(0, sev_certs.SEV_CERT_SIZE - 1),
           st.integers(1, 255))
    def test_single_byte_mutation_platform(self, name: str, index: int,
                                           mask: int) -> None:
        certs = dict(ROME)
        certs[name] = flip(certs[name], index, mask)
        try:
            sev_certs.verify_platform_chain(*ROME_ROOTS, certs["cek"],
                                            certs["pek"], certs["pdh"],
                                            oca=certs["oca"])
        except errors.AttestationError:
            return
        # Only bytes outside every signed body and used slot may change.
        self.assertGreaterEqual(index, sev_certs.SEV_CERT_BODY_SIZE)

    @settings(max_examples=100, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.booleans(), st.integers(0, 831), st.integers(1, 255))
    def test_single_byte_mutation_root(self, mutate_ark: bool, index: int,
                                       mask: int) -> None:
        ark, ask = (r.to_bytes() for r in NAPLES_ROOTS)
        if mutate_ark:
            ark = flip(ark, index, mask)
        else:
            ask = flip(ask, index, mask)
        c = platform("naples")
        try:
            sev_certs.verify_platform_chain(ark, ask, c["cek"], c["pek"],
                                            c["pdh"], oca=c["oca"])
        except errors.AttestationError:
            return
        self.fail(f"mutated root certificate byte {index} accepted")
