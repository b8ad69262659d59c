"""Policy documents and their evaluation against verified claims."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from barbican_tee.attestation import errors
from barbican_tee.attestation import policy
from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from openstack_tee_demo.sp_model import snp as sp_model
from tests import base

MEASUREMENT = bytes(range(48))


class PolicyDocumentTest(base.TestCase):

    def test_round_trip(self) -> None:
        doc = {
            "name": "web", "tee": "amd-sev-snp",
            "measurements": [MEASUREMENT.hex()],
            "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8,
                        "microcode": 115},
            "guest_policy": {"debug": False, "migrate_ma": False,
                             "smt": True, "single_socket": False,
                             "abi_minimum": "1.51"},
            "host_data": "ab" * 32, "id_key_digests": ["cd" * 48],
            "author_key_digests": [], "signers": ["vcek"], "vmpl": 0,
        }
        p = policy.Policy.from_dict(doc)
        again = policy.Policy.from_dict(p.to_dict())
        self.assertEqual(p, again)
        self.assertEqual((1, 51), p.guest_policy.abi_minimum)

    def test_new_fields_round_trip(self) -> None:
        docs = [
            {"tee": "amd-sev-es", "measurements": ["ab" * 32],
             "guest_policy": {"sev_key_sharing": True, "sev_nosend": True,
                              "sev_domain": False, "sev_only": None,
                              "abi_minimum": "0.24"}},
            {"tee": "amd-sev-snp", "measurements": [MEASUREMENT.hex()],
             "signers": ["vlek", "vcek"], "vmpl": [2, 0],
             "guest_policy": {"migrate_ma": True}},
            {"tee": "intel-tdx", "measurements": [MEASUREMENT.hex()],
             "rtmrs": ["01" * 48, None, "03" * 48],
             "mr_seam": "5e" * 48, "xfam": "0x00000000000602e7",
             "td_attributes": "0000000010000000"},
        ]
        for doc in docs:
            with self.subTest(tee=doc["tee"]):
                p = policy.Policy.from_dict(doc)
                shown = p.to_dict()
                self.assertEqual(p, policy.Policy.from_dict(shown))
                # The canonical form is a fixed point.
                self.assertEqual(shown, policy.Policy.from_dict(
                    shown).to_dict())
        tdx = policy.Policy.from_dict(docs[2])
        self.assertEqual(4, len(tdx.rtmrs))
        self.assertIsNone(tdx.rtmrs[1])
        self.assertEqual(0x602E7, tdx.xfam)
        self.assertEqual("0x0000000010000000",
                         tdx.to_dict()["td_attributes"])
        snp_p = policy.Policy.from_dict(docs[1])
        self.assertEqual([0, 2], snp_p.to_dict()["vmpl"])
        self.assertEqual(("vcek", "vlek"), snp_p.signers)

    def test_defaults_are_strict(self) -> None:
        p = policy.Policy.from_dict({"tee": "amd-sev-snp"})
        self.assertEqual(("vcek",), p.signers)
        self.assertEqual((0,), p.vmpl)
        self.assertFalse(p.guest_policy.debug)
        self.assertFalse(p.guest_policy.migrate_ma)
        self.assertFalse(p.guest_policy.sev_key_sharing)
        shown = p.to_dict()
        self.assertEqual(["vcek"], shown["signers"])
        self.assertEqual(0, shown["vmpl"])
        self.assertFalse(shown["guest_policy"]["migrate_ma"])
        # What older versions stored for "not said" (null, []) is strict.
        old = policy.Policy.from_dict({
            "tee": "amd-sev-snp", "signers": [], "vmpl": None,
            "guest_policy": {"debug": False, "migrate_ma": None}})
        self.assertEqual(p, old)

    def test_max_age_is_a_lease_in_seconds(self) -> None:
        base_doc = {"tee": "amd-sev-snp",
                    "measurements": [MEASUREMENT.hex()]}
        # Absent or null: no lease, and the canonical form is unchanged.
        for doc in (base_doc, dict(base_doc, max_age=None)):
            p = policy.Policy.from_dict(doc)
            self.assertIsNone(p.max_age)
            self.assertNotIn("max_age", p.to_dict())
        p = policy.Policy.from_dict(dict(base_doc, max_age=3600))
        self.assertEqual(3600, p.max_age)
        self.assertEqual(3600, p.to_dict()["max_age"])
        self.assertEqual(p, policy.Policy.from_dict(p.to_dict()))
        self.assertEqual(policy.MAX_AGE_LIMIT, policy.Policy.from_dict(
            dict(base_doc, max_age=policy.MAX_AGE_LIMIT)).max_age)
        for bad in (0, -1, policy.MAX_AGE_LIMIT + 1, 1.5, "60", True, [],
                    {}):
            with self.subTest(max_age=bad):
                exc = self.assertRaises(
                    errors.InvalidInput, policy.Policy.from_dict,
                    dict(base_doc, max_age=bad))
                self.assertEqual("policy_max_age", exc.code)

    def test_bad_documents_have_their_own_codes(self) -> None:
        cases = [
            ([], "policy_malformed"),
            ({"tee": "amd-sev-snp", "colour": 1}, "policy_unknown_field"),
            ({"tee": "arm-cca"}, "policy_tee"),
            ({"tee": "amd-sev-snp", "measurements": ["zz"]},
             "policy_measurements"),
            ({"tee": "amd-sev-snp", "measurements": ["00" * 32]},
             "policy_measurements"),
            ({"tee": "amd-sev-snp", "min_tcb": {"snp": 256}},
             "policy_min_tcb"),
            ({"tee": "amd-sev-snp", "min_tcb": {"cpu": 1}},
             "policy_min_tcb"),
            ({"tee": "amd-sev-snp", "guest_policy": {"debug": "no"}},
             "policy_guest_policy"),
            ({"tee": "amd-sev-snp", "guest_policy": {"abi_minimum": "x"}},
             "policy_guest_policy"),
            ({"tee": "amd-sev-snp", "host_data": "00" * 31},
             "policy_host_data"),
            ({"tee": "amd-sev-snp", "signers": ["ark"]}, "policy_signers"),
            ({"tee": "amd-sev-snp", "vmpl": 4}, "policy_vmpl"),
            ({"tee": "amd-sev-snp", "vmpl": True}, "policy_vmpl"),
            ({"tee": "intel-tdx", "tcb_statuses": ["Fine"]},
             "policy_tcb_statuses"),
            ({"tee": "amd-sev-snp", "name": 3}, "policy_name"),
            ({"tee": "amd-sev-snp", "vmpl": []}, "policy_vmpl"),
            ({"tee": "amd-sev-snp", "vmpl": [0, 4]}, "policy_vmpl"),
            ({"tee": "amd-sev-snp", "vmpl": "0"}, "policy_vmpl"),
            ({"tee": "amd-sev-snp", "signers": "vcek"}, "policy_signers"),
            ({"tee": "amd-sev", "guest_policy": {"sev_nosend": 1}},
             "policy_guest_policy"),
            ({"tee": "amd-sev", "guest_policy": {"sev_noks": True}},
             "policy_guest_policy"),
            ({"tee": "intel-tdx", "rtmrs": ["00" * 47]}, "policy_rtmrs"),
            ({"tee": "intel-tdx", "rtmrs": [None] * 5}, "policy_rtmrs"),
            ({"tee": "intel-tdx", "rtmrs": "00"}, "policy_rtmrs"),
            ({"tee": "intel-tdx", "mr_seam": "00" * 32}, "policy_mr_seam"),
            ({"tee": "intel-tdx", "xfam": "0x1234"}, "policy_xfam"),
            ({"tee": "intel-tdx", "xfam": 3}, "policy_xfam"),
            ({"tee": "intel-tdx", "td_attributes": "zz" * 8},
             "policy_td_attributes"),
        ]
        for doc, code in cases:
            with self.subTest(code=code, doc=doc):
                with self.assertRaises(errors.InvalidInput) as ctx:
                    policy.Policy.from_dict(doc)  # type: ignore[arg-type]
                self.assertEqual(code, ctx.exception.code)

    @settings(max_examples=300, deadline=None)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(
            st.sampled_from(["tee", "measurements", "min_tcb",
                             "guest_policy", "host_data", "signers", "vmpl",
                             "snp", "debug", "abi_minimum", "name", "x",
                             "rtmrs", "xfam", "td_attributes",
                             "sev_nosend", "sev_key_sharing"]),
            children, max_size=5),
        max_leaves=12))
    def test_random_documents_only_raise_our_errors(self, doc: object) -> None:
        try:
            policy.Policy.from_dict(doc)  # type: ignore[arg-type]
        except errors.InvalidInput:
            pass


class EvaluateSnpTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.sp = sp_model.SecureProcessor()
        self.verifier = snp.SnpVerifier(extra_roots=[self.sp.roots()])

    def _verified(self, **kw: object) -> snp.VerifiedReport:
        kw.setdefault("measurement", MEASUREMENT)
        return self.verifier.verify(
            self.sp.report(**kw),  # type: ignore[arg-type]
            self.sp.vcek_der if kw.get("signer", "vcek") == "vcek"
            else self.sp.vlek_der)

    def _policy(self, **kw: object) -> policy.Policy:
        doc: dict[str, object] = {"tee": "amd-sev-snp",
                                  "measurements": [MEASUREMENT.hex()]}
        doc.update(kw)
        return policy.Policy.from_dict(doc)

    def test_good_report_meets_policy(self) -> None:
        result = policy.evaluate_snp(
            self._policy(min_tcb={"bootloader": 3, "snp": 8,
                                  "microcode": 115},
                         host_data="00" * 32, signers=["vcek"], vmpl=0),
            self._verified())
        self.assertTrue(result.ok, result.failures)

    def test_each_check_has_its_code(self) -> None:
        debug_smt_ma = 0x30000 | 1 << 19 | 1 << 18
        cases = [
            ({}, dict(measurement=b"\x01" * 48), ["policy_measurement"]),
            ({"min_tcb": {"snp": 9}}, {}, ["policy_tcb_below_minimum"]),
            ({"min_tcb": {"microcode": 200, "bootloader": 4}}, {},
             ["policy_tcb_below_minimum"]),
            ({}, dict(policy=0x30000 | 1 << 19), ["policy_debug"]),
            ({"guest_policy": {"debug": True}},
             dict(policy=0x30000 | 1 << 19), []),
            ({"guest_policy": {"migrate_ma": False, "smt": False}},
             dict(policy=debug_smt_ma),
             ["policy_debug", "policy_migrate_ma", "policy_smt"]),
            ({"guest_policy": {"single_socket": True}}, {},
             ["policy_single_socket"]),
            ({"guest_policy": {"abi_minimum": "1.55"}},
             dict(policy=0x30000 | 1 << 8 | 51), ["policy_abi"]),
            ({"guest_policy": {"abi_minimum": "1.51"}},
             dict(policy=0x30000 | 1 << 8 | 51), []),
            ({"host_data": "11" * 32}, {}, ["policy_host_data"]),
            ({"id_key_digests": ["22" * 48]}, {}, ["policy_id_key_digest"]),
            ({"author_key_digests": ["33" * 48]},
             dict(author_key_digest=b"\x33" * 48),
             ["policy_author_key_digest"]),
            ({"author_key_digests": ["33" * 48]},
             dict(author_key_digest=b"\x33" * 48, author_key_en=True), []),
            ({"signers": ["vcek"]}, dict(signer="vlek"), ["policy_signer"]),
            ({"vmpl": 0}, dict(vmpl=2), ["policy_vmpl"]),
            # The defaults: VCEK only, VMPL 0, no migration agent.
            ({}, dict(signer="vlek"), ["policy_signer"]),
            ({"signers": ["vlek"]}, dict(signer="vlek"), []),
            ({"signers": ["vcek", "vlek"]}, dict(signer="vlek"), []),
            ({}, dict(vmpl=3), ["policy_vmpl"]),
            ({"vmpl": 3}, dict(vmpl=3), []),
            ({"vmpl": [0, 2]}, dict(vmpl=2), []),
            ({"vmpl": [0, 2]}, dict(vmpl=1), ["policy_vmpl"]),
            ({}, dict(policy=0x30000 | 1 << 18), ["policy_migrate_ma"]),
            ({"guest_policy": {"migrate_ma": True}},
             dict(policy=0x30000 | 1 << 18), []),
        ]
        for pol, rep, codes in cases:
            with self.subTest(policy=pol, report=rep):
                result = policy.evaluate_snp(self._policy(**pol),
                                             self._verified(**rep))
                self.assertEqual(sorted(codes), sorted(result.codes))
                self.assertEqual(not codes, result.ok)

    def test_wrong_tee_is_refused(self) -> None:
        p = policy.Policy.from_dict({"tee": "intel-tdx"})
        self.assertEqual(["policy_tee_mismatch"],
                         policy.evaluate_snp(p, self._verified()).codes)

    def test_operator_floor_can_only_be_raised(self) -> None:
        floor = snp.TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
        verifier = snp.SnpVerifier(
            extra_roots=[self.sp.roots()],
            tcb_floors={self.sp_product(): floor})
        zero = snp.TcbVersion(bootloader=0, tee=0, snp=0, microcode=0)
        low_sp = sp_model.SecureProcessor(label="old-firmware", tcb=zero)
        low = snp.SnpVerifier(
            extra_roots=[low_sp.roots()],
            tcb_floors={self.sp_product(): floor}).verify(
                low_sp.report(measurement=MEASUREMENT), low_sp.vcek_der)
        good = verifier.verify(self.sp.report(measurement=MEASUREMENT),
                               self.sp.vcek_der)
        self.assertEqual(floor, good.tcb_floor)
        cases = [
            ({}, good, []),
            ({}, low, ["snp_tcb_below_floor"]),
            # A policy minimum below the floor does not lower it.
            ({"min_tcb": {"bootloader": 0, "snp": 0, "microcode": 0}},
             low, ["snp_tcb_below_floor"]),
            # Above it, it raises it; both shortfalls are named.
            ({"min_tcb": {"snp": 9}}, good, ["policy_tcb_below_minimum"]),
            ({"min_tcb": {"tee": 1}}, low,
             ["snp_tcb_below_floor", "policy_tcb_below_minimum"]),
        ]
        for pol, verified, codes in cases:
            with self.subTest(policy=pol, tcb=verified.reported_tcb):
                result = policy.evaluate_snp(self._policy(**pol), verified)
                self.assertEqual(codes, result.codes)

    def sp_product(self) -> snp_certs.Product:
        return self.sp.roots().product


@dataclasses.dataclass(frozen=True)
class _TdxClaims:
    mr_td: bytes = MEASUREMENT
    mr_config_id: bytes = b"\x00" * 48
    mr_owner: bytes = b"\x00" * 48
    debug: bool = False
    tcb_status: str = "UpToDate"
    rtmrs: tuple[bytes, bytes, bytes, bytes] = (
        b"\x10" * 48, b"\x11" * 48, b"\x12" * 48, b"\x13" * 48)
    mr_seam: bytes = b"\x5e" * 48
    xfam: int = 0x602E7
    td_attributes: int = 0x10000000


class EvaluateTdxTest(base.TestCase):

    def test_codes(self) -> None:
        base_doc = {"tee": "intel-tdx", "measurements": [MEASUREMENT.hex()]}
        cases = [
            ({}, _TdxClaims(), []),
            ({}, _TdxClaims(mr_td=b"\x01" * 48), ["policy_measurement"]),
            ({}, _TdxClaims(tcb_status="OutOfDate"), ["policy_tcb_status"]),
            ({"tcb_statuses": ["UpToDate", "SWHardeningNeeded"]},
             _TdxClaims(tcb_status="SWHardeningNeeded"), []),
            ({}, _TdxClaims(debug=True), ["policy_debug"]),
            ({"mr_config_id": "aa" * 48}, _TdxClaims(),
             ["policy_mr_config_id"]),
            ({"mr_owner": "bb" * 48}, _TdxClaims(), ["policy_mr_owner"]),
            ({"rtmrs": ["10" * 48, "11" * 48, "12" * 48, "13" * 48],
              "mr_seam": "5e" * 48, "xfam": "0x00000000000602e7",
              "td_attributes": "0x0000000010000000"}, _TdxClaims(), []),
            ({"rtmrs": [None, None, None, "10" * 48]}, _TdxClaims(),
             ["policy_rtmr"]),
            ({"rtmrs": ["10" * 48, "10" * 48]}, _TdxClaims(),
             ["policy_rtmr"]),
            ({"mr_seam": "00" * 48}, _TdxClaims(), ["policy_mr_seam"]),
            ({"xfam": "0x00000000000000e7"}, _TdxClaims(),
             ["policy_xfam"]),
            ({"td_attributes": "0x0000000000000000"}, _TdxClaims(),
             ["policy_td_attributes"]),
        ]
        for extra, claims, codes in cases:
            with self.subTest(extra=extra, claims=claims):
                p = policy.Policy.from_dict({**base_doc, **extra})
                self.assertEqual(sorted(codes),
                                 policy.evaluate_tdx(p, claims).codes)


class EvaluateSevLaunchTest(base.TestCase):
    """SEV/SEV-ES launch policy bits against the owner's policy."""

    NOVA_SEV = 0x33     # SEV | DOMAIN | NOKS | NODBG (nova_tee.specs)
    NOVA_SEV_ES = 0x37  # ... | ES

    def _policy(self, tee: str = "amd-sev", **gp: object) -> policy.Policy:
        return policy.Policy.from_dict({
            "tee": tee, "measurements": ["ab" * 32], "guest_policy": gp})

    def test_novas_defaults_pass_the_default_policy(self) -> None:
        self.assertTrue(policy.evaluate_sev_launch(
            self._policy(), self.NOVA_SEV).ok)
        self.assertTrue(policy.evaluate_sev_launch(
            self._policy("amd-sev-es"), self.NOVA_SEV_ES, 0, 24).ok)
        # An SEV-ES launch satisfies an amd-sev policy (ES is stronger).
        self.assertTrue(policy.evaluate_sev_launch(
            self._policy(), self.NOVA_SEV_ES).ok)

    def test_each_bit_has_its_code(self) -> None:
        n = self.NOVA_SEV
        cases = [
            ("amd-sev", {}, n & ~0x01, ["sev_policy_debug"]),
            ("amd-sev", {"debug": True}, n & ~0x01, []),
            ("amd-sev", {}, n & ~0x02, ["sev_policy_noks"]),
            ("amd-sev", {"sev_key_sharing": True}, n & ~0x02, []),
            ("amd-sev-es", {}, n, ["sev_policy_es"]),
            ("amd-sev", {"sev_nosend": True}, n, ["sev_policy_nosend"]),
            ("amd-sev", {"sev_nosend": True}, n | 0x08, []),
            ("amd-sev", {"sev_domain": True}, n & ~0x10,
             ["sev_policy_domain"]),
            ("amd-sev", {"sev_domain": None}, n & ~0x10, []),
            ("amd-sev", {"sev_only": True}, n & ~0x20,
             ["sev_policy_sev_only"]),
            ("amd-sev", {"sev_only": False}, n & ~0x20, []),
            # Every failure at once, each with its code.
            ("amd-sev-es", {"sev_domain": True, "sev_only": True,
                            "sev_nosend": True}, 0,
             ["sev_policy_debug", "sev_policy_noks", "sev_policy_es",
              "sev_policy_nosend", "sev_policy_domain",
              "sev_policy_sev_only"]),
        ]
        for tee, gp, bits, codes in cases:
            with self.subTest(tee=tee, gp=gp, bits=hex(bits)):
                result = policy.evaluate_sev_launch(
                    self._policy(tee, **gp), bits)
                self.assertEqual(codes, result.codes)

    def test_firmware_api_minimum(self) -> None:
        p = self._policy(abi_minimum="0.24", sev_nosend=True)
        nosend = self.NOVA_SEV | 0x08
        self.assertEqual([], policy.evaluate_sev_launch(p, nosend).codes)
        self.assertEqual([], policy.evaluate_sev_launch(
            p, nosend, 0, 24).codes)
        self.assertEqual([], policy.evaluate_sev_launch(
            p, nosend, 1, 0).codes)
        self.assertEqual(["sev_api_version"], policy.evaluate_sev_launch(
            p, nosend, 0, 23).codes)
        # Without NOSEND the guest may be sent to another platform: the
        # launch policy's API fields must keep that one at the minimum.
        lax = self._policy(abi_minimum="0.24")
        self.assertEqual(["sev_policy_api_version"],
                         policy.evaluate_sev_launch(lax, self.NOVA_SEV,
                                                    0, 24).codes)
        pinned = self.NOVA_SEV | 0 << 16 | 24 << 24
        self.assertEqual([], policy.evaluate_sev_launch(lax, pinned,
                                                        0, 24).codes)

    def test_not_an_sev_policy(self) -> None:
        p = policy.Policy.from_dict({"tee": "amd-sev-snp"})
        self.assertEqual(["policy_tee_mismatch"],
                         policy.evaluate_sev_launch(p, self.NOVA_SEV).codes)
