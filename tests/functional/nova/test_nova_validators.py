"""Nova 34.0.0's own extra-spec validator tests, with our entry point in.

Nova loads every module registered under ``nova.api.extra_spec_validators``
(stevedore) into one table; ours adds the ``tee`` namespace. Nova's own
tests (``nova.tests.unit.api.validation.extra_specs.test_validators``) must
still pass with it there: our validators must not shadow, reject or loosen
any upstream key. Each test here first checks that ours is loaded, so it
cannot pass on upstream's validators alone.

They run with Nova's functional tests, in their own stestr invocation:
``nova.test`` registers oslo.log's command-line options on import, which
fails in the unit-test process once Barbican's config module has parsed
the global config.
"""

from __future__ import annotations

from nova.tests.unit.api.validation.extra_specs import test_validators
from stevedore import extension

# Nova's unit-test package must be imported before the rest of Nova (it
# chooses the threading backend), so Nova's validators module is reached
# through the test module that imports it.
validators = test_validators.validators
ENTRY_POINT_GROUP = "nova.api.extra_spec_validators"


class TestValidators(test_validators.TestValidators):

    def setUp(self) -> None:
        super().setUp()
        names = extension.ExtensionManager(
            ENTRY_POINT_GROUP, invoke_on_load=False).names()
        self.assertIn("tee", names)
        # Loads the table on first use, as nova-api does.
        validators.validate("tee:attestation", "required")
        self.assertIn("tee", validators.NAMESPACES)
        self.assertIn("tee:attestation", validators.VALIDATORS)
