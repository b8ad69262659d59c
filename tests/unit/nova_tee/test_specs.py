"""The tee: extra specs: values, conflicts, policy composition."""

from __future__ import annotations

from nova.api.validation.extra_specs import validators
from nova import exception

from nova_tee import specs
from tests import base

SNP = {"hw:mem_encryption": "true", "hw:mem_encryption_model": "amd-sev-snp"}
SEV = {"hw:mem_encryption": "true", "hw:mem_encryption_model": "amd-sev"}


class RequestTest(base.TestCase):

    def test_ordinary_flavor_is_no_request(self) -> None:
        self.assertIsNone(specs.request_from({}))
        self.assertIsNone(specs.request_from({"hw:cpu_policy": "dedicated"}))

    def test_defaults_match_upstream_policies(self) -> None:
        # Upstream Nova's default policies: SNP 0x30000, SEV 0x33,
        # SEV-ES 0x37; tee: keys only refine them.
        self.assertEqual(0x30000, specs.request_from(SNP).policy)
        self.assertEqual(0x33, specs.request_from(SEV).policy)
        es = dict(SEV, **{"hw:mem_encryption_model": "amd-sev-es"})
        self.assertEqual(0x37, specs.request_from(es).policy)
        # hw:mem_encryption alone means SEV, as upstream.
        self.assertEqual(
            "amd-sev",
            specs.request_from({"hw:mem_encryption": "true"}).model)

    def test_image_properties_enable_encryption(self) -> None:
        req = specs.request_from(
            {"tee:attestation": "required"},
            {"hw_mem_encryption": True,
             "hw_mem_encryption_model": "amd-sev-snp"})
        self.assertEqual("amd-sev-snp", req.model)
        self.assertTrue(req.attestation)

    def test_snp_policy_bits(self) -> None:
        req = specs.request_from(dict(SNP, **{
            "tee:snp_smt": "false", "tee:snp_migrate_ma": "true",
            "tee:snp_single_socket": "yes", "tee:snp_abi_minimum": "1.51",
            "tee:min_tcb_snp": "8", "tee:min_tcb_microcode": "115",
            "tee:min_firmware": "1.55"}))
        self.assertEqual(0x20000 | 1 << 18 | 1 << 20 | 1 << 8 | 51,
                         req.policy)
        self.assertEqual((0, 0, 8, 115), req.min_tcb)
        self.assertEqual((1, 55), req.min_firmware)

    def test_sev_policy_bits(self) -> None:
        req = specs.request_from(dict(SEV, **{
            "tee:sev_noks": "false", "tee:sev_nosend": "true"}))
        self.assertEqual(0x20 | 0x01 | 0x08 | 0x10, req.policy)

    def test_conflicts_name_the_keys(self) -> None:
        cases = [
            ({"tee:attestation": "required"}, "hw:mem_encryption"),
            (dict(SEV, **{"tee:snp_debug": "true"}),
             "tee:snp_debug applies to amd-sev-snp"),
            (dict(SNP, **{"tee:sev_nosend": "true"}),
             "tee:sev_nosend applies to amd-sev, amd-sev-es"),
            (dict(SNP, **{"tee:min_tcb_snp": "300"}), "tee:min_tcb_snp"),
            (dict(SNP, **{"tee:snp_debug": "true",
                          "tee:attestation": "required"}),
             "tee:snp_debug=true conflicts with tee:attestation=required"),
            (dict(SNP, **{"tee:colour": "blue"}), "tee:colour"),
            # Near misses of the namespace: nothing would read them.
            (dict(SNP, **{"TEE:attestation": "required"}),
             "'TEE:attestation' is not a tee: extra spec"),
            (dict(SNP, **{" tee:attestation": "required"}),
             "' tee:attestation' is not a tee: extra spec"),
            (dict(SNP, **{"Tee :snp_debug": "false"}), "'Tee :snp_debug'"),
            ({"TEE:attestation": "required"}, "need memory encryption"),
            # Values Nova's int() would take, outside 0-255 in decimal
            # digits: refused here as at the API.
            (dict(SNP, **{"tee:min_tcb_snp": " 8"}), "tee:min_tcb_snp"),
            (dict(SNP, **{"tee:min_tcb_snp": "+8"}), "tee:min_tcb_snp"),
            (dict(SNP, **{"tee:min_tcb_snp": "1_0"}), "tee:min_tcb_snp"),
            (dict(SNP, **{"tee:min_tcb_snp": "\u0668"}), "tee:min_tcb_snp"),
            (dict(SNP, **{"tee:snp_abi_minimum": "1.300"}),
             "tee:snp_abi_minimum"),
            (dict(SNP, **{"tee:snp_abi_minimum": "\u0661.51"}),
             "tee:snp_abi_minimum"),
        ]
        for extra_specs, expected in cases:
            with self.subTest(specs=extra_specs):
                problems = specs.conflicts(extra_specs)
                self.assertTrue(any(expected in p for p in problems),
                                problems)
                self.assertRaises(specs.SpecError, specs.request_from,
                                  extra_specs)


class NovaValidatorsTest(base.TestCase):
    """Our validators, loaded by Nova's own entry-point machinery."""

    def test_registered_through_entry_point(self) -> None:
        self.assertIn("tee:attestation", validators.VALIDATORS)
        validators.validate("tee:attestation", "required")
        validators.validate("tee:min_tcb_snp", "8")
        validators.validate("tee:snp_abi_minimum", "1.51")
        for name, value in (("tee:attestation", "maybe"),
                            ("tee:min_tcb_snp", "256"),
                            ("tee:min_tcb_snp", " 8"),
                            ("tee:min_tcb_snp", "+8"),
                            ("tee:min_tcb_snp", "1_0"),
                            ("tee:min_tcb_snp", "-1"),
                            ("tee:snp_debug", "sometimes"),
                            ("tee:snp_abi_minimum", "1"),
                            ("tee:snp_abi_minimum", "1.300"),
                            ("tee:snp_abi_minimum", "999.0"),
                            ("tee:unknown", "1")):
            with self.subTest(name=name, value=value):
                self.assertRaises(exception.ValidationError,
                                  validators.validate, name, value)
        # What the API accepts, the scheduler's parser accepts too.
        for value in ("0", "8", "08", "255", "199", "249"):
            validators.validate("tee:min_tcb_snp", value)
            self.assertIsNone(specs.check_value("tee:min_tcb_snp", value))
        for value in ("1.51", "0.0", "255.255", "01.09"):
            validators.validate("tee:snp_abi_minimum", value)
            self.assertIsNotNone(specs.parse_version(value))
