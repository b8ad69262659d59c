"""TEEFilter and TEEWeigher on Nova's own HostState objects."""

from __future__ import annotations

from typing import Any

from nova import objects
from nova.scheduler import weights as nova_weights
from nova.tests.unit.scheduler import fakes
from oslo_config import fixture as cfg_fixture

from nova_tee.scheduler import filters
from nova_tee.scheduler import weights
from tests import base

SNP = {"hw:mem_encryption": "true", "hw:mem_encryption_model": "amd-sev-snp"}


def _image_model() -> str:
    """An image's model, as the installed Nova can express it.

    Nova 33 (tox -e nova33) knows amd-sev and amd-sev-es only. Imported
    here, not at the top: Nova's unit-test package (imported by ``fakes``)
    must come before the rest of Nova.
    """
    from nova.objects import fields

    return ("amd-sev-snp" if "amd-sev-snp" in fields.MemEncryptionModel.ALL
            else "amd-sev")


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
        self.conf = self.useFixture(cfg_fixture.Config(filters.CONF)).conf
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
        spec = _spec(dict(SNP, **{"tee:attestation": "required"}))
        self.assertFalse(self.filt.host_passes(_snp_host(), spec))
        self.assertTrue(self.filt.host_passes(
            _snp_host(**{"tee.amd-sev-snp.used": "1"}), spec))

    def test_upstream_tee_requests_pass_as_upstream(self) -> None:
        # Upstream SEV/SNP/TDX flavors and images, no tee: keys: this
        # filter asks nothing of them, whatever the host reports (hosts
        # mid-upgrade, hosts on another driver, full or down-level hosts).
        self.conf.set_override("min_free_slots", 50, group="tee")
        requests = [
            _spec(SNP),
            _spec({"hw:mem_encryption": "true"}),
            _spec({"hw:mem_encryption": "true",
                   "hw:mem_encryption_model": "amd-sev-es"}),
            _spec({"hw:mem_encryption": "true",
                   "hw:mem_encryption_model": "intel-tdx"}),
            _spec({}, {"hw_mem_encryption": True,
                       "hw_mem_encryption_model": _image_model()}),
            _spec({}, {"hw_mem_encryption": True}),
        ]
        hosts = [
            _host("no-stats"),
            fakes.FakeHostState("none", "none", {"stats": None}),
            _snp_host("full", **{"tee.amd-sev-snp.used": "10",
                                 "tee.amd-sev.used": "100"}),
            _snp_host("no-snp", **{"tee.models": "amd-sev"}),
            _host("other", **{"tee.v": "1", "tee.models": ""}),
        ]
        for spec in requests:
            for host in hosts:
                with self.subTest(specs=spec.flavor.extra_specs,
                                  host=host.host):
                    self.assertTrue(self.filt.host_passes(host, spec))

    def test_tee_request_refused_on_host_without_stats(self) -> None:
        spec = _spec(dict(SNP, **{"tee:attestation": "required"}))
        with self.assertLogs(filters.LOG.logger, "DEBUG") as logs:
            self.assertFalse(self.filt.host_passes(_host("old"), spec))
            self.assertFalse(self.filt.host_passes(
                fakes.FakeHostState("none", "none", {"stats": None}),
                spec))
            self.assertFalse(self.filt.host_passes(
                _snp_host("sev-only", **{"tee.models": "amd-sev"}), spec))
            self.assertTrue(self.filt.host_passes(_snp_host(), spec))
        self.assertEqual(3, len(logs.records), logs.output)
        for host in ("old", "none"):
            self.assertTrue(any(
                f"host {host} fails: reports no tee.* stats" in line
                and "TEELibvirtDriver" in line for line in logs.output),
                logs.output)
        self.assertTrue(any(
            "host sev-only fails: does not offer amd-sev-snp (it offers "
            "amd-sev)" in line for line in logs.output), logs.output)

    def test_image_requested_tee_with_tee_flavor_keys(self) -> None:
        # The model may come from the image; the tee: keys from the flavor.
        spec = _spec({"tee:attestation": "required"},
                     {"hw_mem_encryption": True,
                      "hw_mem_encryption_model": _image_model()})
        self.assertTrue(self.filt.host_passes(_snp_host(), spec))
        self.assertFalse(self.filt.host_passes(_host("plain"), spec))

    def test_contradictory_request_passes_no_host(self) -> None:
        spec = _spec({"tee:attestation": "required"})
        self.assertFalse(self.filt.host_passes(_snp_host(), spec))

    def test_misspelt_tee_key_passes_no_host(self) -> None:
        # 'TEE:attestation' is read by nothing: booted, the guest would run
        # unattested. Positive control: spelt right, the host passes.
        self.assertTrue(self.filt.host_passes(_snp_host(), _spec(
            dict(SNP, **{"tee:attestation": "required"}))))
        for key in ("TEE:attestation", " tee:attestation",
                    "Tee :attestation"):
            spec = _spec(dict(SNP, **{key: "required"}))
            self.assertFalse(self.filt.host_passes(_snp_host(), spec), key)


class TEEWeigherTest(base.TestCase):

    def test_prefers_more_free_slots(self) -> None:
        conf = self.useFixture(cfg_fixture.Config(weights.CONF)).conf
        w = weights.TEEWeigher()
        spec = _spec(dict(SNP, **{"tee:attestation": "required"}))
        roomy = _snp_host("roomy", **{"tee.amd-sev-snp.used": "0"})
        tight = _snp_host("tight", **{"tee.amd-sev-snp.used": "9"})
        self.assertGreater(w._weigh_object(roomy, spec),
                           w._weigh_object(tight, spec))
        self.assertEqual(0.0, w._weigh_object(roomy, _spec({})))
        conf.set_override("weight_multiplier", -2.0, group="tee")
        self.assertEqual(-2.0, w.weight_multiplier(roomy))

    def test_tee_request_weighs_hosts_without_stats_lowest(self) -> None:
        self.useFixture(cfg_fixture.Config(weights.CONF))
        w = weights.TEEWeigher()
        spec = _spec(dict(SNP, **{"tee:attestation": "required"}))
        self.assertEqual(10.0, w._weigh_object(
            _snp_host(**{"tee.amd-sev-snp.used": "0"}), spec))
        self.assertEqual(0.0, w._weigh_object(_host("old"), spec))
        self.assertEqual(0.0, w._weigh_object(
            fakes.FakeHostState("none", "none", {"stats": None}), spec))

    def test_upstream_tee_request_weighs_every_host_alike(self) -> None:
        # No tee: keys: the weigher must not reorder hosts that upstream
        # would rank (so mixed old/new hosts are not favoured by stats).
        self.useFixture(cfg_fixture.Config(weights.CONF))
        w = weights.TEEWeigher()
        hosts = [_snp_host("roomy", **{"tee.amd-sev-snp.used": "0"}),
                 _snp_host("tight", **{"tee.amd-sev-snp.used": "9"}),
                 _host("old"),
                 fakes.FakeHostState("none", "none", {"stats": None})]
        for spec in (_spec(SNP), _spec({}, {"hw_mem_encryption": True})):
            self.assertEqual([0.0] * len(hosts),
                             [w._weigh_object(h, spec) for h in hosts])

    def test_through_novas_weight_handler(self) -> None:
        self.useFixture(cfg_fixture.Config(weights.CONF))
        hosts = [_host("old"),
                 _snp_host("tight", **{"tee.amd-sev-snp.used": "9"}),
                 fakes.FakeHostState("none", "none", {"stats": None}),
                 _snp_host("roomy", **{"tee.amd-sev-snp.used": "0"})]
        handler = nova_weights.HostWeightHandler()
        tee = _spec(dict(SNP, **{"tee:attestation": "required"}))
        weighed = handler.get_weighed_objects(
            [weights.TEEWeigher()], hosts, tee)
        self.assertEqual(["roomy", "tight"],
                         [w.obj.host for w in weighed[:2]])
        self.assertEqual([0.0, 0.0], [w.weight for w in weighed[2:]])
        weighed = handler.get_weighed_objects(
            [weights.TEEWeigher()], hosts, _spec(SNP))
        self.assertEqual([0.0] * 4, [w.weight for w in weighed])


class HostOfferCacheTest(base.TestCase):

    def test_new_stats_are_seen(self) -> None:
        self.useFixture(cfg_fixture.Config(filters.CONF))
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
