"""The evidence-verifier registry: what is loaded, what is refused."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from unittest import mock

import fixtures
from oslo_config import cfg

from barbican_tee.attestation import evidence
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import snp_evidence
from barbican_tee.attestation import tdx_evidence
from barbican_tee.conf import attestation as attestation_conf
from tests import base

_MOD = "barbican_tee.attestation.evidence"


class _Fake(evidence.EvidenceVerifier):
    format = "fake-evidence"

    def verify(self, evidence_doc: Any,
               now: datetime.datetime) -> evidence.VerifiedEvidence:
        raise NotImplementedError

    def evaluate(self, policy: policy_mod.Policy,
                 verified: evidence.VerifiedEvidence,
                 instance_uuid: str | None) -> policy_mod.Result:
        raise NotImplementedError


class _Ext:
    def __init__(self, name: str, plugin: Any, value: str) -> None:
        self.name = name
        self.plugin = plugin
        self.entry_point = mock.Mock(value=value)
        self.entry_point.name = name


class RegistryTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        # A fresh process as far as the registry knows.
        self.useFixture(fixtures.MonkeyPatch(f"{_MOD}._loaded", {}))
        self.useFixture(fixtures.MonkeyPatch(f"{_MOD}._warned", set()))
        self.log = mock.Mock()
        self.useFixture(fixtures.MonkeyPatch(f"{_MOD}.LOG", self.log))

    def _load(self, exts: list[_Ext], failures: tuple[str, ...] = ()
              ) -> Any:
        def manager(namespace: str, invoke_on_load: bool,
                    on_load_failure_callback: Any) -> list[_Ext]:
            for name in failures:
                ep = mock.Mock(value=f"broken:{name}")
                ep.name = name
                on_load_failure_callback(None, ep, ImportError("boom"))
            return exts
        with mock.patch.object(evidence.extension, "ExtensionManager",
                               side_effect=manager) as made:
            got = evidence.load_plugins("ns", evidence.EvidenceVerifier)
            again = evidence.load_plugins("ns", evidence.EvidenceVerifier)
        self.assertIs(got, again)
        self.assertEqual(1, made.call_count, "loaded more than once")
        return got

    def test_good_plugin_is_loaded(self) -> None:
        got = self._load([_Ext("fake-evidence", _Fake, "m:_Fake")])
        self.assertEqual({"fake-evidence": _Fake}, dict(got))
        self.log.error.assert_not_called()

    def test_refusals(self) -> None:
        got = self._load([
            # Named for another format than its class's.
            _Ext("other", _Fake, "m:_Fake"),
            # Not a verifier at all.
            _Ext("not-a-class", object(), "m:thing"),
            # Two distributions claim one name.
            _Ext("fake-evidence", _Fake, "a:_Fake"),
            _Ext("fake-evidence", _Fake, "b:_Fake"),
        ], failures=("broken",))
        self.assertEqual({"other": None, "not-a-class": None,
                          "fake-evidence": None, "broken": None},
                         dict(got))
        self.assertEqual(4, self.log.error.call_count)

    def test_same_entry_point_twice_is_one_plugin(self) -> None:
        got = self._load([_Ext("fake-evidence", _Fake, "m:_Fake"),
                          _Ext("fake-evidence", _Fake, "m:_Fake")])
        self.assertEqual({"fake-evidence": _Fake}, dict(got))

    def test_builtin_formats_are_entry_points(self) -> None:
        # The installed package's own entry points (no fake manager).
        got = evidence.load_plugins(evidence.EVIDENCE_NAMESPACE,
                                    evidence.EvidenceVerifier)
        self.assertIs(snp_evidence.SnpReportVerifier,
                      got["amd-sev-snp-report"])
        self.assertIs(tdx_evidence.TdxQuoteVerifier, got["intel-tdx-quote"])


class EnabledFormatsTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(f"{_MOD}._warned", set()))
        self.log = mock.Mock()
        self.useFixture(fixtures.MonkeyPatch(f"{_MOD}.LOG", self.log))
        self.conf = cfg.ConfigOpts()
        attestation_conf.register_opts(self.conf)
        self.conf([])

    def test_defaults_are_the_builtins(self) -> None:
        formats = evidence.EvidenceVerifiers(self.conf)
        self.assertIsInstance(formats.get("amd-sev-snp-report"),
                              snp_evidence.SnpReportVerifier)
        self.assertIsInstance(formats.get("intel-tdx-quote"),
                              tdx_evidence.TdxQuoteVerifier)
        for other in ("fake-evidence", None, 3, ["amd-sev-snp-report"]):
            self.assertIsNone(formats.get(other))
        self.assertEqual("amd-sev-snp-report or intel-tdx-quote",
                         formats.describe())

    def test_only_enabled_formats(self) -> None:
        self.conf.set_override("evidence_formats",
                               ["intel-tdx-quote", "missing-format"],
                               group="tee_attestation")
        formats = evidence.EvidenceVerifiers(self.conf)
        self.assertIsNone(formats.get("amd-sev-snp-report"))
        self.assertIsNone(formats.get("missing-format"))
        self.assertIsNotNone(formats.get("intel-tdx-quote"))
        self.assertEqual("intel-tdx-quote", formats.describe())
        self.log.error.assert_called_once()
        evidence.EvidenceVerifiers(self.conf)
        self.log.error.assert_called_once()


class InstanceBindingTest(base.TestCase):
    """Both built-in formats refuse evidence from another instance."""

    UUID = "6f1c5d0e-8b0a-4c4e-9d61-3f2a1b0c9d8e"
    OTHER = "2b4ec3a4-0e3a-4b7e-9d61-6c1c0d1d3a02"
    CASES = (
        # verifier, evaluate_* it hands on to, hash, the refusal's message
        (snp_evidence.SnpReportVerifier, "evaluate_snp", hashlib.sha256,
         "the guest is not the instance the secret is bound to "
         "(host_data)"),
        (tdx_evidence.TdxQuoteVerifier, "evaluate_tdx", hashlib.sha384,
         "the TD is not the instance the secret is bound to "
         "(MRCONFIGID)"),
    )

    def setUp(self) -> None:
        super().setUp()
        self.conf = cfg.ConfigOpts()
        attestation_conf.register_opts(self.conf)
        self.conf([])

    def _evaluate(self, fmt: type[evidence.EvidenceVerifier],
                  evaluator: str, instance_data: bytes,
                  instance_uuid: str | None) -> tuple[Any, mock.Mock]:
        verifier = fmt(self.conf)
        verified = evidence.VerifiedEvidence(
            format=fmt.format, tee="t", report_data=b"r", measurement=b"m",
            instance_data=instance_data, details=object())
        passed = policy_mod.Result(())
        with mock.patch.object(policy_mod, evaluator,
                               return_value=passed) as policy_check:
            result = verifier.evaluate(mock.sentinel.policy, verified,
                                       instance_uuid)
        return result, policy_check

    def test_bound_instance(self) -> None:
        for fmt, evaluator, digest, _message in self.CASES:
            mine = digest(b"openstack-tee:v1:" + self.UUID.encode())
            for uuid in (self.UUID, None):
                result, policy_check = self._evaluate(
                    fmt, evaluator, mine.digest(), uuid)
                self.assertTrue(result.ok, (fmt, uuid))
                policy_check.assert_called_once()
            # Bound to no instance: any instance data is accepted.
            result, policy_check = self._evaluate(
                fmt, evaluator, b"\0" * mine.digest_size, None)
            self.assertTrue(result.ok, fmt)

    def test_other_instance_is_refused(self) -> None:
        for fmt, evaluator, digest, message in self.CASES:
            other = digest(b"openstack-tee:v1:" + self.OTHER.encode())
            wrong_hash = (hashlib.sha384 if digest is hashlib.sha256
                          else hashlib.sha256)
            for data in (other.digest(), b"\0" * other.digest_size,
                         wrong_hash(b"openstack-tee:v1:"
                                    + self.UUID.encode()).digest()):
                result, policy_check = self._evaluate(
                    fmt, evaluator, data, self.UUID)
                self.assertEqual(
                    (policy_mod.Failure("instance_mismatch", message),),
                    result.failures)
                policy_check.assert_not_called()
