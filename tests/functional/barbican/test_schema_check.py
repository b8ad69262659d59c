"""The /v1/tee filter's schema check at startup: once per process, on the
engine its requests use (barbican_tee.api.filter._check_schema).

In the functional suite because it imports the filter (and with it
Barbican), which the unit tests' process must not (Nova's).
The refusal of a whole barbican-api is in test_schema_startup.py.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.api import filter as tee_filter
from barbican_tee import migrations
from tests import base
from tests.unit.barbican_tee import test_process_engine


class SchemaCheckTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        # A URL of its own: the process-wide state starts empty for it.
        self.url, self.conf = test_process_engine.scratch_sqlite(self)
        self.addCleanup(tee_filter._SCHEMA_AT_HEAD.discard, self.url)

    def _statements(self, engine: sa.Engine) -> list[str]:
        seen: list[str] = []

        def record(*args: Any) -> None:
            seen.append(args[2])

        sa.event.listen(engine, "before_cursor_execute", record)
        self.addCleanup(sa.event.remove, engine, "before_cursor_execute",
                        record)
        return seen

    def test_refused_until_at_head_then_checked_once(self) -> None:
        engine = db.process_engine(self.url, self.conf)
        migrations.upgrade(engine, migrations.FIRST_RELEASE)
        for _ in range(2):  # a refusal is not remembered
            error = self.assertRaises(migrations.SchemaError,
                                      tee_filter._check_schema, self.conf)
            self.assertIn("openstack-tee db upgrade", str(error))
        migrations.upgrade(engine)
        seen = self._statements(engine)
        tee_filter._check_schema(self.conf)
        self.assertTrue(seen, "the first check read nothing")
        # The second filter of the pipeline: no query, same engine.
        del seen[:]
        tee_filter._check_schema(self.conf)
        self.assertEqual([], seen)
        self.assertIs(engine, db.process_engine(self.url, self.conf))
