"""The per-process bound around endorsement sources (source_bound)."""

from __future__ import annotations

import threading
from typing import ClassVar

from oslo_config import cfg
from oslo_config import fixture as cfg_fixture

from barbican_tee.attestation import evidence
from barbican_tee.attestation import source_bound
from barbican_tee.conf import attestation as attestation_conf
from tests import base


class _Counting(evidence.EndorsementSource):
    """Answers a VCEK for chip ids it knows; counts every call."""

    name = "counting"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.calls: list[bytes] = []
        self.known = {b"a" * 64: b"VCEK-A", b"b" * 64: b"VCEK-B"}
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def snp_endorsement(self, chip_id: bytes, reported_tcb: int,
                        signer: str) -> bytes | None:
        self.calls.append(chip_id)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return self.known.get(chip_id)

    def tdx_collateral(self, quote: bytes) -> str | None:
        self.calls.append(quote)
        return "{}" if quote == b"quote" else None


class _Local(_Counting):
    bounded: ClassVar[bool] = False


class BoundedSourceTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.conf = cfg.ConfigOpts()
        attestation_conf.register_opts(self.conf)
        # Overrides undone after each test (the option group is shared).
        self.useFixture(cfg_fixture.Config(self.conf))
        self.now = 0.0
        self.inner = _Counting(self.conf)

    def _bound(self, **overrides: int) -> source_bound.BoundedSource:
        for name, value in overrides.items():
            self.conf.set_override(name, value, "tee_attestation")
        return source_bound.BoundedSource(self.inner, self.conf,
                                          clock=lambda: self.now)

    def test_answers_are_cached_for_the_ttl_not_found_never(self) -> None:
        src = self._bound(endorsement_cache_ttl=300)
        for _ in range(3):
            self.assertEqual(b"VCEK-A",
                             src.snp_endorsement(b"a" * 64, 7, "vcek"))
        self.assertEqual(1, len(self.inner.calls))
        # Another TCB or signer is another question.
        src.snp_endorsement(b"a" * 64, 8, "vcek")
        src.snp_endorsement(b"a" * 64, 7, "vlek")
        self.assertEqual(3, len(self.inner.calls))
        # "Not found" is asked again (an endorsement may appear).
        self.assertIsNone(src.snp_endorsement(b"z" * 64, 7, "vcek"))
        self.assertIsNone(src.snp_endorsement(b"z" * 64, 7, "vcek"))
        self.assertEqual(5, len(self.inner.calls))
        self.now = 300.0
        src.snp_endorsement(b"a" * 64, 7, "vcek")
        self.assertEqual(6, len(self.inner.calls))
        self.assertEqual("{}", src.tdx_collateral(b"quote"))
        self.assertEqual("{}", src.tdx_collateral(b"quote"))
        self.assertEqual(7, len(self.inner.calls))

    def test_least_recently_used_goes_first(self) -> None:
        src = self._bound(endorsement_cache_size=1)
        src.snp_endorsement(b"a" * 64, 7, "vcek")
        src.snp_endorsement(b"b" * 64, 7, "vcek")
        src.snp_endorsement(b"a" * 64, 7, "vcek")
        self.assertEqual([b"a" * 64, b"b" * 64, b"a" * 64],
                         self.inner.calls)

    def test_calls_per_minute(self) -> None:
        src = self._bound(endorsement_source_calls_per_minute=2)
        for chip in (b"x", b"y"):
            self.assertIsNone(src.snp_endorsement(chip * 64, 7, "vcek"))
        exc = self.assertRaises(source_bound.SourceBusy,
                                src.snp_endorsement, b"w" * 64, 7, "vcek")
        self.assertEqual("endorsement_source_busy", exc.code)
        self.assertEqual(2, len(self.inner.calls))  # not asked
        # Half a minute later one call's worth has come back.
        self.now = 30.0
        self.assertIsNone(src.snp_endorsement(b"w" * 64, 7, "vcek"))
        self.assertRaises(source_bound.SourceBusy, src.snp_endorsement,
                          b"v" * 64, 7, "vcek")

    def test_calls_at_once(self) -> None:
        src = self._bound(endorsement_source_concurrency=1)
        self.inner.gate = threading.Event()
        first = threading.Thread(target=src.snp_endorsement,
                                 args=(b"a" * 64, 7, "vcek"))
        first.start()
        self.addCleanup(first.join)
        self.addCleanup(self.inner.gate.set)
        self.assertTrue(self.inner.entered.wait(10))
        self.assertRaises(source_bound.SourceBusy, src.snp_endorsement,
                          b"b" * 64, 7, "vcek")
        self.inner.gate.set()
        first.join()
        # The slot is free again (positive control).
        self.assertEqual(b"VCEK-B",
                         src.snp_endorsement(b"b" * 64, 7, "vcek"))

    def test_a_source_may_opt_out(self) -> None:
        local = _Local(self.conf)
        self.assertIs(local, source_bound.bound(local, self.conf))
        wrapped = source_bound.bound(self.inner, self.conf)
        self.assertIsInstance(wrapped, source_bound.BoundedSource)

    def test_every_method_of_the_interface_reaches_the_source(self) -> None:
        # A method the wrapper left to the base class would answer
        # "nothing" for the source: no CRL, hence no revocation.
        interface = {name for name, value in
                     vars(evidence.EndorsementSource).items()
                     if callable(value) and not name.startswith("_")}
        self.assertIn("snp_crls", interface)
        for name in interface:
            self.assertIn(name, vars(source_bound.BoundedSource), name)

    def test_crls_reach_the_source(self) -> None:
        crls = [b"CRL-DER"]

        class _WithCrls(_Counting):
            def snp_crls(self, product: str) -> list[bytes]:
                self.calls.append(product.encode())
                return crls if product == "milan" else []

        inner = _WithCrls(self.conf)
        src = source_bound.BoundedSource(inner, self.conf,
                                         clock=lambda: self.now)
        self.assertEqual(crls, src.snp_crls("milan"))
        self.assertEqual([], src.snp_crls("genoa"))
        self.assertEqual([b"milan", b"genoa"], inner.calls)

    def test_the_database_source_has_only_its_vceks_cached(self) -> None:
        # A CRL imported now refuses at once in every process; the
        # source is local: not limited (test_endorsements shows both).
        from barbican_tee.api import endorsements
        policy = source_bound.policy_of(
            endorsements.DatabaseEndorsementSource(self.conf))
        self.assertEqual(frozenset({"snp_endorsement"}), policy.cached)
        self.assertFalse(policy.limited)
        self.assertEqual({"snp_endorsement"}, set(policy.keep_until))

    def test_a_policy_narrows_the_cache_and_the_limits(self) -> None:
        self.conf.set_override("endorsement_source_calls_per_minute", 1,
                               "tee_attestation")
        src = source_bound.BoundedSource(
            self.inner, self.conf, clock=lambda: self.now,
            policy=source_bound.BoundPolicy(
                cached=frozenset({"tdx_collateral"}), limited=False))
        for _ in range(3):
            src.snp_endorsement(b"a" * 64, 7, "vcek")
            src.tdx_collateral(b"quote")
        # VCEKs asked every time (past a minute's calls: not limited),
        # the collateral once.
        self.assertEqual([b"a" * 64, b"quote", b"a" * 64, b"a" * 64],
                         self.inner.calls)
        # An answer with no expiry of its own (None) is not kept.
        src = source_bound.BoundedSource(
            self.inner, self.conf, clock=lambda: self.now,
            policy=source_bound.BoundPolicy(
                limited=False,
                keep_until={"snp_endorsement": lambda answer: None}))
        del self.inner.calls[:]
        src.snp_endorsement(b"a" * 64, 7, "vcek")
        src.snp_endorsement(b"a" * 64, 7, "vcek")
        self.assertEqual([b"a" * 64] * 2, self.inner.calls)

    def test_a_policy_names_interface_methods_only(self) -> None:
        self.assertRaises(ValueError, source_bound.BoundPolicy,
                          cached=frozenset({"snp_endorsements"}))
        self.assertRaises(ValueError, source_bound.BoundPolicy,
                          keep_until={"tdx_collateral_verified": len})

        class _Bad(_Counting):
            bound_policy = "snp_endorsement"

        self.assertRaises(TypeError, source_bound.bound, _Bad(self.conf),
                          self.conf)

    def test_crl_answers_cost_no_token_per_report(self) -> None:
        # A source that has no CRLs at all is not asked (no token): the
        # reports past a minute's calls are not refused.
        src = self._bound(endorsement_source_calls_per_minute=2,
                          endorsement_cache_ttl=300)
        for _ in range(5):
            self.assertEqual([], src.snp_crls("milan"))
        # One that has (none for genoa): asked once per TTL, the empty
        # answer included.
        crls = [b"CRL-DER"]

        class _WithCrls(_Counting):
            def snp_crls(self, product: str) -> list[bytes]:
                self.calls.append(product.encode())
                return crls if product == "milan" else []

        inner = _WithCrls(self.conf)
        self.conf.set_override("endorsement_source_calls_per_minute", 4,
                               "tee_attestation")
        src = source_bound.BoundedSource(inner, self.conf,
                                         clock=lambda: self.now)
        for _ in range(5):
            self.assertEqual(crls, src.snp_crls("milan"))
            self.assertEqual([], src.snp_crls("genoa"))
        self.assertEqual([b"milan", b"genoa"], inner.calls)
        # Past the TTL it is asked again.
        self.now = 300.0
        src.snp_crls("genoa")
        self.assertEqual([b"milan", b"genoa", b"genoa"], inner.calls)
        # "Not found" for a VCEK is still not cached.
        self.assertIsNone(src.snp_endorsement(b"z" * 64, 7, "vcek"))
        self.assertIsNone(src.snp_endorsement(b"z" * 64, 7, "vcek"))
        self.assertEqual(2, inner.calls.count(b"z" * 64))
