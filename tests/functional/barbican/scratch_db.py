"""Fresh databases for tests: sqlite always, MariaDB and PostgreSQL when
a server is given.

``TEE_TEST_MYSQL_URL`` and ``TEE_TEST_POSTGRESQL_URL`` are SQLAlchemy URLs
of a server and a user who may create databases (say
``mysql+pymysql://root:pw@127.0.0.1:3306/`` and
``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``). Each
:class:`Database` creates its own database there, named
``tee_test_<random>``, and drops it afterwards. Without the variable, the
test is skipped, with the reason in the test run's output (a test that did
not run never counts as a pass).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import fixtures
import sqlalchemy as sa
import testtools

SQLITE = "sqlite"
MYSQL = "mysql"
POSTGRESQL = "postgresql"

ENV = {MYSQL: "TEE_TEST_MYSQL_URL", POSTGRESQL: "TEE_TEST_POSTGRESQL_URL"}


def server_url(kind: str) -> sa.URL | None:
    value = os.environ.get(ENV[kind], "").strip()
    return sa.make_url(value) if value else None


def skip_unless_server(test: testtools.TestCase, kind: str) -> None:
    """Skip ``test``, saying why, unless ``kind``'s server is given."""
    if kind != SQLITE and server_url(kind) is None:
        test.skipTest(f"{ENV[kind]} is not set: this {kind} test did not "
                      "run (set it to a server's URL to run it)")


class Database(fixtures.Fixture):
    """A new, empty database of ``kind``; ``url`` is its URL (a string)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.url = ""

    def _setUp(self) -> None:
        if self.kind == SQLITE:
            tmp = tempfile.mkdtemp(prefix="tee-db-")
            self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
            self.url = f"sqlite:///{tmp}/test.sqlite"
            return
        server = server_url(self.kind)
        assert server is not None, f"{ENV[self.kind]} is not set"
        name = f"tee_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT",
                                 poolclass=sa.pool.NullPool)
        # As devstack creates Barbican's (recreate_database barbican utf8).
        create = (f"CREATE DATABASE {name} CHARACTER SET utf8"
                  if self.kind == MYSQL else
                  f"CREATE DATABASE {name} ENCODING 'UTF8'")
        with admin.connect() as conn:
            conn.execute(sa.text(create))
        self.addCleanup(self._drop, admin, name)
        self.url = server.set(database=name).render_as_string(
            hide_password=False)

    def _drop(self, admin: sa.Engine, name: str) -> None:
        with admin.connect() as conn:
            if self.kind == POSTGRESQL:
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM "
                    "pg_stat_activity WHERE datname = :n AND "
                    "pid <> pg_backend_pid()"), {"n": name})
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
