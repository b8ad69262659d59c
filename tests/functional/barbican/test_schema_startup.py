"""barbican-api with the suite and its schema: no DDL on the request path.

barbican-api refuses to start until ``openstack-tee db upgrade`` has
brought the suite's tables to this release's schema, and on a freshly
upgraded database the first requests of two workers at once get no 5xx
(before migrations, each worker ran create_all on its first request and,
on MariaDB and PostgreSQL, all but one got a 500). On sqlite always, on
MariaDB and PostgreSQL when TEE_TEST_MYSQL_URL / TEE_TEST_POSTGRESQL_URL
are set (skipped, saying so, otherwise).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import subprocess
import sys
import uuid

import fixtures
import requests
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee import migrations
from barbican_tee import server
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import scratch_db

PROJECT = "5a4b3c2d1e0f5a4b3c2d1e0f5a4b3c2d"
POLICY = {"name": "web", "tee": "amd-sev-snp",
          "measurements": [hashlib.sha384(b"guest").hexdigest()],
          "min_tcb": {"bootloader": 3, "snp": 8, "microcode": 115},
          "guest_policy": {"debug": False}, "signers": ["vcek"]}


def _barbican_manage_upgrade(url: str, cwd: str) -> None:
    """Barbican's own tables on ``url`` (barbican-manage db upgrade)."""
    proc = subprocess.run(
        [sys.executable, "-m", "barbican.cmd.barbican_manage", "db",
         "upgrade", "--db-url", url], cwd=cwd, capture_output=True,
        text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"barbican-manage db upgrade failed: "
                             f"{proc.stderr[-2000:]}")


class StartupRefusalTest(base.TestCase):

    def test_refuses_to_start_until_upgraded(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        port = server.free_port()
        # TEE_FUNCTIONAL_DB's database (a new, empty one), or sqlite.
        layout = server.prepare(tmp, port, check=False,
                                db_url=self.useFixture(fixture.Database()).url)
        engine = db.make_engine(layout.db_url)
        self.addCleanup(engine.dispose)
        # As an upgrade leaves it: Barbican's tables upgraded, the suite's
        # still at the first released schema.
        with engine.begin() as conn:
            for name in sa.inspect(conn).get_table_names():
                if name.startswith("tee_"):
                    conn.execute(sa.text(f"DROP TABLE {name}"))
        migrations.upgrade(engine, migrations.FIRST_RELEASE)
        error = self.assertRaises(server.ServerError, server.preflight,
                                  layout)
        self.assertIn("SchemaError", str(error))
        self.assertIn("openstack-tee db upgrade", str(error))
        self.assertIn(f"at revision {migrations.FIRST_RELEASE}", str(error))
        srv = server.Server(layout, port, workers=1)
        self.addCleanup(srv.stop)
        error = self.assertRaises(server.ServerError, srv.start, 60)
        self.assertIn("openstack-tee db upgrade", str(error))
        # Positive control: after the upgrade it starts and answers.
        upgraded = subprocess.run(
            [base.installed_command("openstack-tee"), "db", "upgrade",
             "--config-file", layout.conf_path], capture_output=True,
            text=True, timeout=120, check=False)
        self.assertEqual(0, upgraded.returncode, upgraded)
        server.preflight(layout)
        srv.start()
        resp = requests.get(f"{srv.url}/v1/tee/policies", timeout=30,
                            headers={"X-Project-Id": PROJECT,
                                     "X-Roles": "member",
                                     "X-User-Id": "u"})
        self.assertEqual(200, resp.status_code, resp.text)


class _FirstRequests:
    """Concurrent first requests of two workers on a fresh database."""

    KIND = scratch_db.SQLITE
    REQUESTS = 48

    def test_concurrent_first_requests_get_no_5xx(self) -> None:
        scratch_db.skip_unless_server(self, self.KIND)
        extra: dict[str, dict[str, str]] = {}
        if self.KIND != scratch_db.SQLITE:
            url = self.useFixture(scratch_db.Database(self.KIND)).url
            tmp = self.useFixture(fixtures.TempDir()).path
            _barbican_manage_upgrade(url, tmp)
            extra = {"database": {"connection": url}}
        srv = self.useFixture(fixture.BarbicanServer(workers=2,
                                                     extra_conf=extra))
        headers = srv.headers(PROJECT, roles="member,reader")

        def one(i: int) -> tuple[str, int]:
            if i % 3 == 0:
                return "create", requests.post(
                    f"{srv.url}/v1/tee/policies", json=POLICY,
                    headers=headers, timeout=60).status_code
            if i % 3 == 1:
                return "list", requests.get(
                    f"{srv.url}/v1/tee/policies", headers=headers,
                    timeout=60).status_code
            return "challenge", requests.post(
                f"{srv.url}/v1/tee/challenge",
                json={"secret_id": str(uuid.uuid4())},
                timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(self.REQUESTS) as pool:
            results = list(pool.map(one, range(self.REQUESTS)))
        self.assertEqual([], [r for r in results if r[1] >= 500])
        expected = {"create": 201, "list": 200, "challenge": 201}
        self.assertEqual([], [r for r in results if r[1] != expected[r[0]]])
        listed = requests.get(f"{srv.url}/v1/tee/policies", headers=headers,
                              timeout=60).json()
        self.assertEqual(self.REQUESTS // 3, len(listed["policies"]))
        with open(srv.log_path, encoding="utf-8") as f:
            self.assertNotIn("Traceback", f.read())


class SqliteFirstRequestsTest(_FirstRequests, base.TestCase):
    KIND = scratch_db.SQLITE


class MariaDBFirstRequestsTest(_FirstRequests, base.TestCase):
    KIND = scratch_db.MYSQL


class PostgreSQLFirstRequestsTest(_FirstRequests, base.TestCase):
    KIND = scratch_db.POSTGRESQL


def _kill_connections(admin_url: sa.URL, kind: str, database: str) -> int:
    """End every server connection to ``database`` (as a restart would)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            if kind == scratch_db.POSTGRESQL:
                return len(conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM "
                    "pg_stat_activity WHERE datname = :d AND "
                    "pid <> pg_backend_pid()"), {"d": database}).all())
            ids = conn.execute(sa.text(
                "SELECT id FROM information_schema.processlist WHERE "
                "db = :d AND id <> CONNECTION_ID()"),
                {"d": database}).scalars().all()
            for ident in ids:
                conn.execute(sa.text(f"KILL {int(ident)}"))
            return len(ids)
    finally:
        admin.dispose()


class _Reconnect:
    """Pooled connections that died are replaced, not answered with 500."""

    KIND = scratch_db.MYSQL

    def test_dead_pooled_connections_are_replaced(self) -> None:
        scratch_db.skip_unless_server(self, self.KIND)
        url = self.useFixture(scratch_db.Database(self.KIND)).url
        _barbican_manage_upgrade(url,
                                 self.useFixture(fixtures.TempDir()).path)
        srv = self.useFixture(fixture.BarbicanServer(
            workers=2, extra_conf={"database": {"connection": url}}))
        headers = srv.headers(PROJECT, roles="member,reader")

        def load(n: int) -> list[int]:
            def one(i: int) -> int:
                if i % 2:
                    return requests.get(f"{srv.url}/v1/tee/policies",
                                        headers=headers,
                                        timeout=60).status_code
                return requests.post(
                    f"{srv.url}/v1/tee/challenge",
                    json={"secret_id": str(uuid.uuid4())},
                    timeout=60).status_code
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                return list(pool.map(one, range(n)))

        created = requests.post(f"{srv.url}/v1/tee/policies", json=POLICY,
                                headers=headers, timeout=60)
        self.assertEqual(201, created.status_code, created.text)
        self.assertEqual({200, 201}, set(load(24)))  # pools are warm
        # Positive control: a pooled connection without a check fails.
        plain = sa.create_engine(url, pool_pre_ping=False)
        self.addCleanup(plain.dispose)
        with plain.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        database = sa.make_url(url).database
        assert database is not None
        admin = scratch_db.server_url(self.KIND)
        assert admin is not None
        self.assertGreater(_kill_connections(admin, self.KIND, database), 1)
        with plain.connect() as conn:
            self.assertRaises(sa.exc.OperationalError, conn.execute,
                              sa.text("SELECT 1"))
        # The suite's routes recover at once, as Barbican's do.
        self.assertEqual({200, 201}, set(load(24)))
        listed = requests.get(f"{srv.url}/v1/tee/policies", headers=headers,
                              timeout=60).json()
        self.assertEqual([created.json()["id"]],
                         [p["id"] for p in listed["policies"]])


class MariaDBReconnectTest(_Reconnect, base.TestCase):
    KIND = scratch_db.MYSQL


class PostgreSQLReconnectTest(_Reconnect, base.TestCase):
    KIND = scratch_db.POSTGRESQL
