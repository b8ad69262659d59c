"""Policy documents and their evaluation against verified claims."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from barbican_tee.attestation import errors
from barbican_tee.attestation import policy
from barbican_tee.attestation import snp
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
                             "snp", "debug", "abi_minimum", "name", "x"]),
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


@dataclasses.dataclass(frozen=True)
class _TdxClaims:
    mr_td: bytes = MEASUREMENT
    mr_config_id: bytes = b"\x00" * 48
    mr_owner: bytes = b"\x00" * 48
    debug: bool = False
    tcb_status: str = "UpToDate"


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
        ]
        for extra, claims, codes in cases:
            with self.subTest(extra=extra, claims=claims):
                p = policy.Policy.from_dict({**base_doc, **extra})
                self.assertEqual(sorted(codes),
                                 policy.evaluate_tdx(p, claims).codes)
