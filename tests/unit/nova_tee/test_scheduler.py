"""TEEFilter and TEEWeigher on Nova's own HostState objects."""

from __future__ import annotations

from typing import Any

from nova import objects
from nova.tests.unit.scheduler import fakes
from oslo_config import fixture as cfg_fixture

from nova_tee.scheduler import filters
from nova_tee.scheduler import weights
from tests import base

SNP = {"hw:mem_encryption": "true", "hw:mem_encryption_model": "amd-sev-snp"}


def _host(name: str, **stats: str) -> Any:
    return fakes.FakeHostState(name, name, {"stats": dict(stats)})


def _snp_host(name: str = "h1", **extra: str) -> Any:
    stats = {"tee.v": "1", "tee.models": "amd-sev,amd-sev-snp",
             "tee.amd-sev-snp.slots": "10", "tee.amd-sev-snp.used": "2",
             "tee.amd-sev.slots": "100", "tee.amd-sev.used": "0",
             "tee.fw": "1.55", "tee.fw_build": "21",
             "tee.snp_tcb": "3.0.8.115"}
    stats.update(extra)
    return _host(name, **stats)


def _spec(extra_specs: dict[str, str],
          image_props: dict[str, Any] | None = None) -> Any:
    objects.register_all()
    return objects.RequestSpec(
        flavor=objects.Flavor(extra_specs=extra_specs),
        image=objects.ImageMeta(properties=objects.ImageMetaProps(
            **(image_props or {}))))


class TEEFilterTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.conf = self.useFixture(cfg_fixture.Config()).conf
        self.filt = filters.TEEFilter()

    def test_non_tee_request_passes_every_host(self) -> None:
        spec = _spec({"hw:cpu_policy": "dedicated"})
        for host in (_host("plain"), _snp_host()):
            self.assertTrue(self.filt.host_passes(host, spec))

    def test_snp_request(self) -> None:
        spec = _spec(dict(SNP, **{"tee:min_tcb_snp": "8",
                                  "tee:min_firmware": "1.55"}))
        self.assertTrue(self.filt.host_passes(_snp_host(), spec))
        failing = [
            _host("plain"),
            _snp_host(**{"tee.models": "amd-sev"}),
            _snp_host(**{"tee.amd-sev-snp.used": "10"}),
            _snp_host(**{"tee.snp_tcb": "3.0.7.115"}),
            _snp_host(**{"tee.snp_tcb": ""}),
            _snp_host(**{"tee.fw": "1.51"}),
            _snp_host(**{"tee.fw": "garbage"}),
        ]
        for host in failing:
            with self.subTest(stats=host.stats):
                self.assertFalse(self.filt.host_passes(host, spec))

    def test_min_free_slots_headroom(self) -> None:
        self.conf.set_override("min_free_slots", 9, group="tee")
        spec = _spec(SNP)
        self.assertFalse(self.filt.host_passes(_snp_host(), spec))
        self.assertTrue(self.filt.host_passes(
            _snp_host(**{"tee.amd-sev-snp.used": "1"}), spec))

    def test_image_requested_tee(self) -> None:
        spec = _spec({}, {"hw_mem_encryption": True,
                          "hw_mem_encryption_model": "amd-sev-snp"})
        self.assertTrue(self.filt.host_passes(_snp_host(), spec))
        self.assertFalse(self.filt.host_passes(_host("plain"), spec))

    def test_contradictory_request_passes_no_host(self) -> None:
        spec = _spec({"tee:attestation": "required"})
        self.assertFalse(self.filt.host_passes(_snp_host(), spec))


class TEEWeigherTest(base.TestCase):

    def test_prefers_more_free_slots(self) -> None:
        conf = self.useFixture(cfg_fixture.Config()).conf
        w = weights.TEEWeigher()
        spec = _spec(SNP)
        roomy = _snp_host("roomy", **{"tee.amd-sev-snp.used": "0"})
        tight = _snp_host("tight", **{"tee.amd-sev-snp.used": "9"})
        self.assertGreater(w._weigh_object(roomy, spec),
                           w._weigh_object(tight, spec))
        self.assertEqual(0.0, w._weigh_object(roomy, _spec({})))
        conf.set_override("weight_multiplier", -2.0, group="tee")
        self.assertEqual(-2.0, w.weight_multiplier(roomy))


class HostOfferCacheTest(base.TestCase):

    def test_new_stats_are_seen(self) -> None:
        self.useFixture(cfg_fixture.Config())
        filt = filters.TEEFilter()
        spec = _spec(dict(SNP, **{"tee:min_tcb_snp": "9"}))
        host = _snp_host()
        self.assertFalse(filt.host_passes(host, spec))
        # The compute node reports a firmware update: a new stats dict.
        host.stats = dict(host.stats, **{"tee.snp_tcb": "3.0.9.115"})
        self.assertTrue(filt.host_passes(host, spec))
        # A second request with another spec is judged on its own.
        self.assertFalse(filt.host_passes(
            host, _spec(dict(SNP, **{"tee:min_tcb_snp": "10"}))))
