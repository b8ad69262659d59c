"""Nova's own functional SEV/TDX/traits/reshape tests, our pieces in.

Nova 34.0.0 in ``tox -e functional``, Nova 33.0.2 in ``tox -e nova33``:
the classes below are those the installed release has.

Each class below is one of Nova's own test classes (shipped in the nova
wheel under ``nova/tests/functional``), unchanged but for the substitution
an operator makes in nova.conf:

- ``compute_driver = libvirt_tee.TEELibvirtDriver`` (loaded by name through
  the shim, as nova-compute loads it);
- ``TEEFilter`` in ``[filter_scheduler] enabled_filters`` and
  ``TEEWeigher`` in ``weight_classes`` (loaded by dotted path);
- our paste filter in Nova's api-paste.ini, so flavors and servers go
  through the REST API as they would in a deployment with the suite.

Every compute and scheduler service these tests start is checked: the
compute's driver must be a TEELibvirtDriver, and the scheduler must hold a
TEEFilter and a TEEWeigher; after each test, one scheduler and at least one
compute must have been checked. A test whose services were not substituted
fails; it cannot pass on upstream's pieces by accident.

Selected: every functional test class of Nova 34.0.0 about SEV, TDX, their
traits and reshapes (``libvirt.test_amd_sev``, ``libvirt.test_intel_tdx``,
``libvirt.test_reshape`` (SEV and vGPU), ``libvirt.test_report_cpu_traits``,
``regressions.test_bug_1928063``): 19 tests, 193 s of test time, about
80-100 s of wall time on 2 workers (measured on the shared CI machine).

Nova 33.0.2 has no ``test_amd_sev`` and no ``test_intel_tdx`` (it has no
SEV-SNP or TDX), and its ``test_report_cpu_traits`` has
``LibvirtReportNoSevTraitsTests`` (SEV traits appearing) where Nova 34
folds that into ``LibvirtReportSevTraitsTests`` and adds TDX traits; every
such class Nova 33 has is selected the same way.

Left out, by nature: ``test_servers.CreateServerConstraintsTest`` and
``test_nova_manage``'s placement audit also touch ``hw:mem_encryption``,
but they run on Nova's fake virt driver without the libvirt fixture, so
there is no libvirt driver to substitute.

One change to Nova's harness, not to the tests: SQLAlchemy 2.1 deprecates
``orm.noload``, which Nova 34's instance queries use, and Nova's harness
turns that warning into an error (``VGPUReshapeTests`` failed on it, in
``Instance.get_by_uuid`` called by the test itself); that warning category
is ignored, as in openstack_tee_demo.nova_harness.

Nova's test modules are imported as modules (never their classes), so the
test loader finds only the subclasses here, not Nova's originals.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any
import warnings

from nova import conf as nova_conf
from nova.tests.functional.libvirt import test_report_cpu_traits
from nova.tests.functional.libvirt import test_reshape
from nova.tests.functional.regressions import test_bug_1928063
from sqlalchemy import exc as sa_exc

from nova_tee.scheduler import filters as tee_filters
from nova_tee.scheduler import weights as tee_weights
from nova_tee.virt.libvirt import driver as tee_driver
from openstack_tee_demo import nova_harness

CONF = nova_conf.CONF
NOVA_MAJOR = int(metadata.version("nova").split(".", 1)[0])

SHIM = "libvirt_tee.TEELibvirtDriver"
FILTER_PATH = "nova_tee.scheduler.TEEFilter"
WEIGHER_PATH = "nova_tee.scheduler.TEEWeigher"


class TEESubstitution:
    """Mixin: our driver, filter and weigher in place of upstream's alone.

    Put it first in the bases, before Nova's test class.
    """

    # Read by Nova's ProviderUsageBaseTestCase.setUp.
    compute_driver = SHIM
    # Read by Nova's ServersTestBase._setup_scheduler_service.
    ADDITIONAL_FILTERS = ["TEEFilter"]

    flags: Any
    useFixture: Any
    assertIsInstance: Any
    assertIn: Any
    assertEqual: Any
    assertTrue: Any
    addCleanup: Any

    def setUp(self) -> None:
        self.tee_computes: list[str] = []
        self.tee_schedulers = 0
        # Nova's REST API through a paste file that carries our filter
        # (set before Nova's setUp, which starts the API).
        nova_harness.use_tee_paste_config(self)
        super().setUp()  # type: ignore[misc]
        # Registered after Nova's cleanups (which clear the test's
        # attributes), so it runs first, right after the test: every test
        # here starts a scheduler and at least one compute, each checked
        # in start_service.
        self.addCleanup(self._check_substituted)
        # Nova's harness turns warnings into errors; SQLAlchemy 2.1
        # deprecates orm.noload, which Nova 34's instance queries use. Not
        # ours, and not a behaviour change: ignore that category only.
        warnings.filterwarnings("ignore",
                                category=sa_exc.SADeprecationWarning)

    def _check_substituted(self) -> None:
        self.assertEqual(1, self.tee_schedulers)
        self.assertTrue(self.tee_computes, "no compute service started")

    def _setup_compute_service(self) -> None:
        super()._setup_compute_service()  # type: ignore[misc]
        self.flags(compute_driver=SHIM)

    def start_service(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "scheduler":
            group = CONF.filter_scheduler
            self.flags(available_filters=_with(
                group.available_filters, FILTER_PATH),
                enabled_filters=_with(group.enabled_filters, "TEEFilter"),
                weight_classes=_with(group.weight_classes, WEIGHER_PATH),
                group="filter_scheduler")
        if name == "compute":
            self.assertEqual(SHIM, CONF.compute_driver)
        service = super().start_service(  # type: ignore[misc]
            name, *args, **kwargs)
        if name == "compute":
            self.assertIsInstance(service.manager.driver,
                                  tee_driver.TEELibvirtDriver)
            self.tee_computes.append(service.host)
        elif name == "scheduler":
            hm = service.manager.host_manager
            self.assertIn(tee_filters.TEEFilter,
                          [type(f) for f in hm.enabled_filters])
            self.assertIn(tee_weights.TEEWeigher,
                          [type(w) for w in hm.weighers])
            self.tee_schedulers += 1
        return service


def _with(values: list[str], value: str) -> list[str]:
    values = list(values)
    return values if value in values else values + [value]


if NOVA_MAJOR >= 34:
    # Nova 34's SEV-SNP and TDX functional tests (Nova 33 has neither).
    test_amd_sev = importlib.import_module(
        "nova.tests.functional.libvirt.test_amd_sev")
    test_intel_tdx = importlib.import_module(
        "nova.tests.functional.libvirt.test_intel_tdx")

    class TestSEV(TEESubstitution, test_amd_sev.TestSEV):
        pass

    class TestTDX(TEESubstitution, test_intel_tdx.TestTDX):
        pass

    class LibvirtReportTdxTraitsTests(
            TEESubstitution,
            test_report_cpu_traits.LibvirtReportTdxTraitsTests):
        pass
else:
    class LibvirtReportNoSevTraitsTests(
            TEESubstitution,
            test_report_cpu_traits.LibvirtReportNoSevTraitsTests):
        pass


class SevReshapeTests(TEESubstitution, test_reshape.SevResphapeTests):
    pass


class VGPUReshapeTests(TEESubstitution, test_reshape.VGPUReshapeTests):
    pass


class TestSEVInstanceReboot(TEESubstitution,
                            test_bug_1928063.TestSEVInstanceReboot):
    pass


class LibvirtReportTraitsTests(
        TEESubstitution, test_report_cpu_traits.LibvirtReportTraitsTests):
    pass


class LibvirtReportSevTraitsTests(
        TEESubstitution,
        test_report_cpu_traits.LibvirtReportSevTraitsTests):
    pass

