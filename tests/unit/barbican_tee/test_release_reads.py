"""What a release reads ahead (TEEAPIFilter._release_reads), by its word.

The reads themselves, run on the admission's connection and handed out
once, are in test_db_release.PrefetchTest; a release's floor read with a
report that names no product (version 2) in
tests/functional/barbican/test_floors.py.
"""

from __future__ import annotations

import base64
from typing import Any

from barbican_tee.api import endorsements
from openstack_tee_demo.sp_model import snp as sp_model
from tests.unit.barbican_tee import test_floors


class ReleaseReadsTest(test_floors.ScratchFloorStore):

    def setUp(self) -> None:
        super().setUp()
        from barbican_tee.api import filter as filter_mod
        tee = object.__new__(filter_mod.TEEAPIFilter)
        # What the filter's cached properties would build.
        tee.__dict__.update(
            conf=self.conf, floor_store=self.store,
            endorsement_store=endorsements.EndorsementStore(
                self.store.engine, self.store.keyring))
        self.tee = tee
        self.sp = {p: sp_model.SecureProcessor(product=p, label="reads")
                   for p in ("Milan", "Genoa")}

    def _keys(self, evidence: Any) -> list[tuple[Any, ...]]:
        return [r.key for r in self.tee._release_reads(evidence)]

    def _evidence(self, product: str = "Milan", **report: Any
                  ) -> dict[str, Any]:
        raw = self.sp[product].report(**report)
        return {"format": "amd-sev-snp-report",
                "report": base64.b64encode(raw).decode()}

    def test_the_named_products_floor_and_crls(self) -> None:
        for product in ("Milan", "Genoa"):
            name = product.lower()
            self.assertEqual(
                [self.tee.floor_store.read(name).key,
                 self.tee.endorsement_store.crl_read(name).key],
                self._keys(self._evidence(product)))
        # No database among the endorsement sources: the floor only.
        self.conf.set_override("endorsement_sources", [],
                               "tee_attestation")
        self.addCleanup(self.conf.clear_override, "endorsement_sources",
                        "tee_attestation")
        self.assertEqual([self.tee.floor_store.read("milan").key],
                         self._keys(self._evidence()))

    def test_nothing_for_what_names_no_product(self) -> None:
        good = self._evidence()
        for evidence in (
                self._evidence(version=2),  # no CPUID fields
                dict(good, format="intel-tdx-quote"),
                {"format": "amd-sev-snp-report"},
                dict(good, report=good["report"][:-8]),
                dict(good, report="%" + good["report"][1:]),
                dict(good, report=good["report"] * 3),
                dict(good, report=7),
                None, "evidence", []):
            with self.subTest(evidence=str(evidence)[:40]):
                self.assertEqual([], self._keys(evidence))
