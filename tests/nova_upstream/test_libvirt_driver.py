"""Nova 34's own libvirt driver unit tests, run against TEELibvirtDriver.

Every test of ``nova.tests.unit.virt.libvirt.test_driver`` whose name
touches launch security, memory encryption, SEV, TDX, UEFI, secure boot,
the machine type or cleanup (which we override to retire secret bindings),
plus ``test_public_api_signatures``, runs here with
``nova.virt.libvirt.driver.LibvirtDriver`` replaced by TEELibvirtDriver for
the whole test (setUp included): every ``libvirt_driver.LibvirtDriver(...)``
the test makes, and every patch of ``...LibvirtDriver._method``, is ours.
:class:`SubstitutionTest` proves that the substitution really happens.

The guests of these tests carry no ``tee:`` extra spec, so each must get
exactly upstream's behaviour and XML.

Tests that cannot pass by their nature, with the reason (none today):
"""

from __future__ import annotations

import re
from typing import Any
import unittest
from unittest import mock

from nova.tests.unit.virt.libvirt import test_driver as upstream
from nova.virt.libvirt import driver as libvirt_driver

from nova_tee.virt.libvirt import driver as tee_driver
from tests import base

SELECT = re.compile(
    r"sev|mem_encryption|memory_encryption|launch_security|tdx|uefi|"
    r"machine_type|secure_boot|cleanup|test_public_api_signatures",
    re.IGNORECASE)

# test id (class.method) -> why it cannot pass with our driver.
CANNOT_PASS: dict[str, str] = {}


class _Substituted:
    """Runs the upstream test with TEELibvirtDriver as LibvirtDriver."""

    def setUp(self) -> None:
        patcher = mock.patch.object(libvirt_driver, "LibvirtDriver",
                                    tee_driver.TEELibvirtDriver)
        patcher.start()
        try:
            super().setUp()  # type: ignore[misc]
        finally:
            self.addCleanup(patcher.stop)  # type: ignore[attr-defined]


def _selected(cls: type) -> list[str]:
    return sorted(name for name in dir(cls)
                  if name.startswith("test")
                  and SELECT.search(f"{cls.__name__}.{name}")
                  and callable(getattr(cls, name))
                  and f"{cls.__name__}.{name}" not in CANNOT_PASS)


def _upstream_classes() -> list[type]:
    return [cls for _, cls in sorted(vars(upstream).items())
            if isinstance(cls, type)
            and issubclass(cls, unittest.TestCase)
            and cls.__module__ == upstream.__name__ and _selected(cls)]


SUBSTITUTED: dict[str, type] = {}
for _cls in _upstream_classes():
    _sub = type(_cls.__name__, (_Substituted, _cls),
                {"__module__": __name__, "__qualname__": _cls.__name__})
    SUBSTITUTED[_cls.__name__] = _sub


class SubstitutionTest(base.TestCase):
    """The substituted classes really build TEELibvirtDriver."""

    def test_driver_class_is_ours(self) -> None:
        self.assertIn("LibvirtConnTestCase", SUBSTITUTED)
        cls = SUBSTITUTED["LibvirtConnTestCase"]
        name = "test_public_api_signatures"
        seen: list[type] = []
        original = getattr(upstream.LibvirtConnTestCase, name)

        def spy(test: Any) -> None:
            seen.append(type(libvirt_driver.LibvirtDriver(
                upstream.fake.FakeVirtAPI(), True)))
            original(test)

        with mock.patch.object(cls, name, spy, create=True):
            result = unittest.TestResult()
            cls(name).run(result)
        self.assertEqual([], result.errors + result.failures)
        self.assertEqual([tee_driver.TEELibvirtDriver], seen)
        # and LibvirtDriver is upstream's again after the test.
        self.assertIsNot(tee_driver.TEELibvirtDriver,
                         libvirt_driver.LibvirtDriver)

    def test_selection_is_not_empty(self) -> None:
        total = sum(len(_selected(c)) for c in SUBSTITUTED.values())
        # Nova 34 has over a hundred such tests; a selection that shrank
        # to nothing would pass without testing anything.
        self.assertGreater(total, 100)


def load_tests(loader: unittest.TestLoader, standard: unittest.TestSuite,
               pattern: str | None) -> unittest.TestSuite:
    suite = unittest.TestSuite()
    suite.addTests(loader.loadTestsFromTestCase(SubstitutionTest))
    for cls in SUBSTITUTED.values():
        for name in _selected(cls):
            suite.addTest(cls(name))
    return suite
