"""barbican_tee.server: a real barbican-api under gunicorn, on sqlite."""

from __future__ import annotations

import importlib
import signal
import subprocess
from typing import Any
from unittest import mock

from barbicanclient import client as barbican_client
from barbicanclient import exceptions as barbican_exc
import fixtures
from keystoneauth1 import session as ks_session
import requests
import sqlalchemy as sa

from barbican_tee import server
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import scratch_db

# Without the tee_api filter and the tee_sealed store: Barbican alone, as
# these tests need nothing of ours but the server itself.
BARBICAN_ONLY = {"paste_filters": server.PIPELINE_WITHOUT_TEE_API,
                 "stores": (server.SOFTWARE_STORE,)}


def client(url: str, project: str,
           roles: str = "member") -> barbican_client.Client:
    # No Keystone: a keystoneauth1 session without an auth plugin, sending
    # the unauthenticated context middleware's headers; barbicanclient
    # adds X-Project-Id itself.
    sess = ks_session.Session(additional_headers={
        "X-Roles": roles, "X-User-Id": f"user-{project}"})
    return barbican_client.Client(session=sess, endpoint=url,
                                  project_id=project)


class TestBarbicanServer(base.TestCase):

    def _store(self, url: str, project: str, payload: str) -> str:
        secret = client(url, project).secrets.create(
            name="openstack-tee-test", payload=payload)
        ref: str = secret.store()
        return ref

    def test_store_read_list_and_isolation(self) -> None:
        srv = self.useFixture(fixture.BarbicanServer(workers=2,
                                                     **BARBICAN_ONLY))
        self.assertTrue(srv.url.startswith("http://127.0.0.1:"))
        ref = self._store(srv.url, "project-a", "the payload")
        self.assertTrue(ref.startswith(srv.url + "/v1/secrets/"), ref)

        mine = client(srv.url, "project-a")
        self.assertEqual("the payload", mine.secrets.get(ref).payload)
        listed = [s.secret_ref for s in mine.secrets.list()]
        self.assertIn(ref, listed)

        other = client(srv.url, "project-b")
        with self.assertRaises(barbican_exc.HTTPClientError) as cm:
            other.secrets.get(ref).payload  # noqa: B018 - fetches
        self.assertEqual(403, cm.exception.status_code)
        self.assertNotIn(ref, [s.secret_ref for s in other.secrets.list()])

        # Both workers serve: plain HTTP with the same headers.
        for _ in range(6):
            resp = requests.get(ref + "/payload", timeout=10,
                                headers={**srv.headers("project-a"),
                                         "Accept": "text/plain"})
            self.assertEqual(200, resp.status_code, resp.text)
            self.assertEqual("the payload", resp.text)

    def test_sigkill_and_restart_keeps_secrets(self) -> None:
        srv = self.useFixture(fixture.BarbicanServer(workers=2,
                                                     **BARBICAN_ONLY))
        ref = self._store(srv.url, "project-a", "durable")
        first_pid = srv.pid
        srv.kill(signal.SIGKILL)
        with self.assertRaises(requests.ConnectionError):
            requests.get(srv.url, timeout=5)
        srv.restart()
        self.assertNotEqual(first_pid, srv.pid)
        self.assertEqual(
            "durable", client(srv.url, "project-a").secrets.get(ref).payload)

    def _assert_plugin_failure(self, message: str) -> None:
        self.assertIn("PluginLoadError", message)
        self.assertIn("Barbican secret store plugin 'no_such_plugin' "
                      "failed to load", message)
        self.assertIn("no entry point 'no_such_plugin' in "
                      "'barbican.secretstore.plugin'", message)

    def test_the_database_url_is_never_on_a_command_line(self) -> None:
        # Any local user reads /proc/PID/cmdline: the database password
        # goes to Barbican's migrations on stdin.
        data = self.useFixture(fixtures.TempDir()).path
        layout = server.prepare(data, server.free_port(), check=False)
        seen: list[tuple[list[str], str | None]] = []
        real = subprocess.run

        def run(argv: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append((list(argv), kwargs.get("input")))
            return real(argv, *args, **kwargs)

        with mock.patch.object(subprocess, "run", run):
            server.db_upgrade(layout)
        self.assertEqual(1, len(seen))
        argv, stdin = seen[0]
        self.assertEqual(layout.db_url, stdin)
        self.assertFalse([a for a in argv if layout.db_url in a], argv)
        # Barbican's tables are there: the migrations ran.
        engine = sa.create_engine(layout.db_url)
        self.addCleanup(engine.dispose)
        self.assertIn("secrets", sa.inspect(engine).get_table_names())

    def test_missing_store_plugin_fails_preflight(self) -> None:
        broken = fixture.BarbicanServer(
            paste_filters=server.PIPELINE_WITHOUT_TEE_API,
            stores=(server.SOFTWARE_STORE,
                    server.Store("broken", "no_such_plugin")))
        with self.assertRaises(server.ServerError) as cm:
            self.useFixture(broken)
        self.assertIn("barbican-api preflight failed", str(cm.exception))
        self._assert_plugin_failure(str(cm.exception))

    def test_missing_store_plugin_stops_gunicorn(self) -> None:
        broken = fixture.BarbicanServer(
            paste_filters=server.PIPELINE_WITHOUT_TEE_API,
            stores=(server.SOFTWARE_STORE,
                    server.Store("broken", "no_such_plugin")),
            preflight=False)
        with self.assertRaises(server.ServerError) as cm:
            self.useFixture(broken)
        message = str(cm.exception)
        # 3 is gunicorn's WORKER_BOOT_ERROR; with gevent workers both can
        # fail in the same reaping pass, and gunicorn's halt then raises
        # HaltServer once more and exits 1. Either way it stopped.
        self.assertRegex(message, r"exited with status [13] while starting")
        self._assert_plugin_failure(message)


class TestBarbicanServerWithTEE(base.TestCase):
    """The full pipeline (tee_api) and the tee_sealed store.

    Needs barbican_tee.api.filter and barbican_tee.plugin.store: fails, with
    the import error, while either is missing.
    """

    def setUp(self) -> None:
        super().setUp()
        for module in ("barbican_tee.api.filter",
                       "barbican_tee.plugin.store"):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                self.fail(f"{module} cannot be imported ({exc}): the "
                          "tee_api filter / tee_sealed store are needed "
                          "for the full barbican-api pipeline")

    def test_full_pipeline_serves_barbican(self) -> None:
        srv = self.useFixture(fixture.BarbicanServer(workers=2))
        ref = self._store_and_read(srv)
        self.assertTrue(ref.startswith(srv.url + "/v1/secrets/"), ref)
        stores = requests.get(srv.url + "/v1/secret-stores", timeout=10,
                              headers=srv.headers("project-a", "reader"))
        self.assertEqual(200, stores.status_code, stores.text)
        plugins = {s["secret_store_plugin"]
                   for s in stores.json()["secret_stores"]}
        self.assertEqual({"store_crypto", "tee_sealed"}, plugins)

    def _store_and_read(self, srv: fixture.BarbicanServer) -> str:
        mine = client(srv.url, "project-a")
        ref: str = mine.secrets.create(name="s", payload="p").store()
        self.assertEqual("p", mine.secrets.get(ref).payload)
        return ref

    def test_tee_sealed_without_kek_fails_loudly(self) -> None:
        broken = fixture.BarbicanServer(
            extra_conf={"tee_sealed": {"kek_file": "/nonexistent/tee-kek"}})
        with self.assertRaises(server.ServerError) as cm:
            self.useFixture(broken)
        self.assertIn("'tee_sealed' failed to load", str(cm.exception))


class PostgreSQLServeTest(base.TestCase):
    """``openstack-tee serve`` on PostgreSQL: Barbican's own store works."""

    def test_prepare_applies_the_postgresql_workaround(self) -> None:
        scratch_db.skip_unless_server(self, scratch_db.POSTGRESQL)
        url = self.useFixture(scratch_db.Database(scratch_db.POSTGRESQL)).url
        data = self.useFixture(fixtures.TempDir()).path
        port = server.free_port()
        layout = server.prepare(data, port, db_url=url,
                                stores=(server.SOFTWARE_STORE,),
                                pipeline=server.PIPELINE_WITHOUT_TEE_API)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.addCleanup(engine.dispose)
        with engine.connect() as conn:
            self.assertEqual(
                ["encrypted_data_as_text", "kek_data_plugin_meta_as_text"],
                [r[0] for r in conn.execute(sa.text(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                    "ORDER BY tgname"))])
        srv = server.Server(layout, port, 1)
        srv.start(timeout=300)
        self.addCleanup(srv.stop)
        # A project's second secret (500 without the workaround), and
        # both read back.
        for payload in ("first", "second"):
            ref = client(srv.url, "proj").secrets.create(
                name="openstack-tee-test", payload=payload).store()
            self.assertEqual(payload, client(srv.url, "proj").secrets.get(
                ref).payload)
