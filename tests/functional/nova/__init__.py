"""Nova's functional harness with openstack-tee's Nova pieces.

On Nova 34 (``tox -e functional``) every module here runs. On Nova 33.0.2
(``tox -e nova33``) only the modules in :data:`NOVA33` run; the others
cannot by their nature, for the reason given in :data:`NOT_ON_NOVA33`.
"""

from __future__ import annotations

from importlib import metadata
import os
import unittest

NOVA_MAJOR = int(metadata.version("nova").split(".", 1)[0])

# Nova 33's own functional SEV, traits and reshape tests with our driver,
# filter and weigher, and its extra-spec validator tests with our entry
# point.
NOVA33 = ("test_nova_functional", "test_nova_validators")
NOT_ON_NOVA33 = {
    "test_tee_boot": "SEV-SNP and TDX boots (Nova 34 only) and a harness "
                     "built on Nova 34's fake libvirt SNP/TDX features",
    "test_attested_launch": "needs a real barbican-api (Barbican 23), which "
                            "the nova33 environment does not install; "
                            "also boots SEV-SNP guests",
    "test_secret_check": "needs a real barbican-api (Barbican 23), which "
                         "the nova33 environment does not install",
    "test_osc_flavor": "python-openstackclient against the demo harness, "
                       "which writes SEV-SNP flavors; the tee: validators "
                       "are covered by test_nova_validators",
}


def load_tests(loader: unittest.TestLoader, standard: unittest.TestSuite,
               pattern: str | None) -> unittest.TestSuite:
    if NOVA_MAJOR >= 34:
        standard.addTests(loader.discover(
            start_dir=os.path.dirname(__file__),
            pattern=pattern or "test*.py"))
        return standard
    for name in NOVA33:
        standard.addTests(loader.loadTestsFromName(f"{__name__}.{name}"))
    return standard
