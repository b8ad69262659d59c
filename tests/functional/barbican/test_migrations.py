"""Migrations of the suite's tables, on sqlite, MariaDB and PostgreSQL.

From an empty database and from the first released schema (with rows) to
head; databases that builds before migrations created (with create_all)
recognised, completed and upgraded; anything else refused untouched; the
models agree with the migrated schema (alembic's compare_metadata);
Barbican's own ``alembic_version`` is never touched. The MariaDB and
PostgreSQL classes need ``TEE_TEST_MYSQL_URL`` / ``TEE_TEST_POSTGRESQL_URL``
(see :mod:`tests.functional.barbican.scratch_db`) and are skipped, with
that reason, without them.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import io
import os
import subprocess
import sys
import time

import fixtures
from oslo_db import exception as db_exc
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.cmd import cli
from barbican_tee.cmd import db as db_cmd
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from tests import base
from tests.functional.barbican import scratch_db

# The tables of the first build on main (f43a069), verbatim; and those
# later builds added (d38a2c5, fbdc2f7, e18a125), verbatim.
_F43A069 = '''
POLICIES = sa.Table(
    "tee_policies", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(255), nullable=False, index=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("mac_kek", sa.String(32), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)

BINDINGS = sa.Table(
    "tee_bindings", METADATA,
    sa.Column("secret_id", sa.String(36), primary_key=True),
    sa.Column("policy_id", sa.String(36), nullable=False),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("mac_kek", sa.String(32), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)

NONCES = sa.Table(
    "tee_nonces", METADATA,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("secret_id", sa.String(36), nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
)

RATES = sa.Table(
    "tee_rates", METADATA,
    sa.Column("bucket", sa.String(300), primary_key=True),
    sa.Column("window", sa.Integer, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
'''
_D38A2C5 = '''
SEV_SESSIONS = sa.Table(
    "tee_sev_sessions", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("secret_id", sa.String(36), nullable=False),
    sa.Column("instance_uuid", sa.String(36), nullable=False),
    sa.Column("policy", sa.Integer, nullable=False),
    # The guest owner's TEK/TIK, sealed under the KEK like a secret.
    sa.Column("sealed_state", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)
'''
_FBDC2F7 = '''
INSTANCE_BINDINGS = sa.Table(
    "tee_instance_bindings", METADATA,
    sa.Column("secret_id", sa.String(36), primary_key=True),
    sa.Column("instance_uuid", sa.String(36), nullable=False, index=True),
    sa.Column("project_id", sa.String(255), nullable=False),
    # Set when the instance is deleted: the secret is then released to no
    # one until its owner binds it to a policy again.
    sa.Column("retired", sa.Boolean, nullable=False, default=False),
    sa.Column("mac_kek", sa.String(32), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)
'''
_E18A125 = '''
SPENT_NONCES = sa.Table(
    "tee_spent_nonces", METADATA,
    sa.Column("digest", sa.String(64), primary_key=True),
    # Unix seconds: the nonce's own expiry, after which it is refused
    # before this table is consulted.
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)
'''
_ALL_BUILD_TABLES = {
    "tee_policies", "tee_bindings", "tee_nonces", "tee_rates",
    "tee_sev_sessions", "tee_instance_bindings", "tee_spent_nonces"}


def _build_metadata(*sources: str, only: set[str] | None = None
                    ) -> sa.MetaData:
    """The MetaData an earlier build's create_all used."""
    namespace = {"sa": sa, "METADATA": sa.MetaData()}
    for source in sources:
        exec(source, namespace)  # noqa: S102 - the tests' own constants
    md: sa.MetaData = namespace["METADATA"]
    if only is not None:
        for table in list(md.tables.values()):
            if table.name not in only:
                md.remove(table)
    return md


# What create_all left in a database, by the builds that ran on it.
SHAPES = {
    # An old database that every build ran on, in order.
    "f43a069..e18a125": _build_metadata(
        _F43A069, _D38A2C5, _FBDC2F7, _E18A125),
    "f43a069..d38a2c5": _build_metadata(_F43A069, _D38A2C5),
    "f43a069..fbdc2f7": _build_metadata(_F43A069, _D38A2C5, _FBDC2F7),
    # A fresh database of e18a125 (tee_nonces no longer created).
    "e18a125 fresh": _build_metadata(
        _F43A069, _D38A2C5, _FBDC2F7, _E18A125,
        only=_ALL_BUILD_TABLES - {"tee_nonces"}),
    # A fresh database of the last build before migrations (d766cda):
    # the binding tables had moved out of create_all's MetaData too.
    "d766cda fresh": _build_metadata(
        _F43A069, _D38A2C5, _E18A125,
        only={"tee_policies", "tee_rates", "tee_sev_sessions",
              "tee_spent_nonces"}),
}

# `openstack-tee db upgrade` (the real command, cli.main) in a process of
# its own. It starts once the file NAME.start exists (so that the
# processes' imports overlap), stops right after its first look at the
# schema (under the upgrade lock, if it has it) until the file "go"
# exists, and leaves markers: NAME.locking as it asks for the lock,
# NAME.read (what it saw) once it has looked. With TEE_TEST_NO_LOCK=1 the
# lock is left out (the transaction is what it was without it): the
# positive control of the race the lock prevents.
#   python -c UPGRADER MARKER_DIR NAME CONFIG_FILE [UPGRADE ARGS...]
UPGRADER = """
import contextlib, os, sys, time
from barbican_tee import migrations
from barbican_tee.cmd import cli

markers, name, conf = sys.argv[1:4]
no_lock = bool(os.environ.get("TEE_TEST_NO_LOCK"))

def wait_for(path):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(markers, path)):
        if time.monotonic() > deadline:
            sys.exit("no " + path)
        time.sleep(0.01)

def mark(suffix, text=""):
    with open(os.path.join(markers, name + suffix + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(markers, name + suffix + ".tmp"),
              os.path.join(markers, name + suffix))

server_lock = migrations._server_lock
write_lock = migrations._sqlite_write_lock
state, seen = migrations.state, []

@contextlib.contextmanager
def _server_lock(conn, timeout):
    mark(".locking")
    if no_lock:
        yield
    else:
        with server_lock(conn, timeout):
            yield

def _sqlite_write_lock(conn, timeout):
    if no_lock:
        # The deferred transaction oslo.db's engine begins without it.
        conn.exec_driver_sql("BEGIN")
    else:
        write_lock(conn, timeout)

def _state(conn):
    st = state(conn)
    if not seen:
        seen.append(st)
        mark(".read", st.describe())
        wait_for("go")
    return st

migrations._server_lock = _server_lock
migrations._sqlite_write_lock = _sqlite_write_lock
migrations.state = _state
wait_for(name + ".start")
sys.exit(cli.main(["db", "upgrade", "--config-file", conf, *sys.argv[4:]]))
"""

HEAD_TABLES = {"tee_policies", "tee_bindings", "tee_rates", "tee_floors",
               "tee_sev_sessions", "tee_instance_bindings",
               "tee_spent_nonces", "tee_endorsements"}

POLICY_ID = "2f0c8a4e-5b1d-4c3e-9a7f-6d8e1b2c3a40"
SECRET_ID = "6b1f5c0e-1d2a-4c8e-9f3b-2a7d4e6c8b10"
INSTANCE = "9d2e4f6a-8b0c-4d1e-a3f5-7b9c1d3e5f70"
SESSION_ID = "4a6c8e0f-2b4d-4f6a-8c0e-1a3b5c7d9e10"


class _MigrationTests:
    """Every test here runs on each database kind (the subclasses)."""

    KIND = scratch_db.SQLITE

    def setUp(self) -> None:
        super().setUp()
        scratch_db.skip_unless_server(self, self.KIND)
        self.url = self.useFixture(scratch_db.Database(self.KIND)).url
        self.engine = db.make_engine(self.url)
        self.addCleanup(self.engine.dispose)
        tmp = self.useFixture(fixtures.TempDir()).path
        kek = os.path.join(tmp, "kek")
        keyring.write_key_file(kek)
        self.ring = keyring.Keyring.from_files(kek, [])
        # Barbican's version table: the suite's migrations never touch it.
        with self.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version "
                                 "(version_num VARCHAR(32) NOT NULL)"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES "
                                 "('barbican-rev')"))

    # -- helpers ---------------------------------------------------------
    def _tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())

    def _assert_at_head(self, compare_models: bool = True) -> None:
        self.assertEqual(HEAD_TABLES | {migrations.VERSION_TABLE,
                                        "alembic_version"},
                         self._tables())
        with self.engine.connect() as conn:
            self.assertEqual(migrations.head(),
                             migrations.state(conn).revision)
            if compare_models:
                self.assertEqual([], migrations.drift(conn))
            self.assertEqual(["barbican-rev"], conn.execute(sa.text(
                "SELECT version_num FROM alembic_version")).scalars().all())
        migrations.check(self.engine)

    def _start(self, markers: str, name: str, no_lock: bool,
               *args: str) -> subprocess.Popen[str]:
        """An upgrader NAME (see UPGRADER), waiting for NAME.start."""
        env = dict(os.environ)
        env.pop("TEE_TEST_NO_LOCK", None)
        if no_lock:
            env["TEE_TEST_NO_LOCK"] = "1"
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-c", UPGRADER, markers, name,
             os.path.join(markers, "barbican.conf"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)
        self.addCleanup(self._reap, proc)
        return proc

    @staticmethod
    def _reap(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    def _wait_for(self, path: str, procs: list[subprocess.Popen[str]]
                  ) -> str:
        deadline = time.monotonic() + 120
        while not os.path.exists(path):
            for proc in procs:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    self.fail(f"upgrader exited {proc.returncode} before "
                              f"{os.path.basename(path)}: {out}{err}")
            self.assertLess(time.monotonic(), deadline, path)
            time.sleep(0.01)
        with open(path) as f:
            return f.read()

    def _waiting_for_lock(self) -> bool:
        """Whether a session waits for the upgrade lock, says the server."""
        if self.KIND == scratch_db.POSTGRESQL:
            query = ("SELECT COUNT(*) FROM pg_locks WHERE locktype = "
                     "'advisory' AND NOT granted AND database = (SELECT "
                     "oid FROM pg_database WHERE datname = "
                     "current_database())")
        elif self.KIND == scratch_db.MYSQL:
            query = ("SELECT COUNT(*) FROM information_schema.processlist "
                     "WHERE state = 'User lock' AND info LIKE "
                     "'SELECT GET_LOCK%%'")
        else:
            raise AssertionError(f"{self.KIND} has no such view")
        with self.engine.connect() as conn:
            return bool(conn.exec_driver_sql(query).scalar())

    def _run_pair(self, no_lock: bool) -> tuple[
            subprocess.Popen[str], subprocess.Popen[str], str, str]:
        """A stops after its look at the schema; then B starts.

        With the lock, B must wait for A, and a third upgrader, C, with
        --lock-timeout 0.5, gives up. Returns A and B once both have
        ended, what A saw and what B saw.
        """
        markers = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(markers, "barbican.conf"), "w") as f:
            f.write(f"[database]\nconnection = {self.url}\n")

        def path(name: str) -> str:
            return os.path.join(markers, name)

        def release(name: str) -> None:
            with open(path(name + ".start"), "w"):
                pass

        first = self._start(markers, "a", no_lock)
        second = self._start(markers, "b", no_lock)
        third = (None if no_lock else
                 self._start(markers, "c", False, "--lock-timeout", "0.5"))
        release("a")
        seen_a = self._wait_for(path("a.read"), [first])
        release("b")
        self._wait_for(path("b.locking"), [first, second])
        if no_lock:
            # B looks while A is between its look and its commit.
            seen_b = self._wait_for(path("b.read"), [first, second])
        else:
            assert third is not None
            # B waits: the server says so (PostgreSQL, MariaDB); sqlite's
            # waiters are invisible, so there B must stay out for 1 s.
            sqlite = self.KIND == scratch_db.SQLITE
            deadline = time.monotonic() + (1 if sqlite else 60)
            while sqlite or not self._waiting_for_lock():
                self.assertFalse(os.path.exists(path("b.read")))
                self.assertIsNone(second.poll())
                if time.monotonic() > deadline:
                    self.assertTrue(sqlite, "B never waited for the lock")
                    break
                time.sleep(0.02)
            # C will not wait long: a clear refusal.
            release("c")
            _out, err = third.communicate(timeout=120)
            self.assertEqual(2, third.returncode, err)
            self.assertIn("another `openstack-tee db upgrade` has held "
                          "this database's upgrade lock", err)
            self.assertIn("nothing was changed", err)
            self.assertNotIn("Traceback", err)
            self.assertFalse(os.path.exists(path("c.read")))
            self.assertFalse(os.path.exists(path("b.read")))
        with open(path("go"), "w"):
            pass
        if not no_lock:
            seen_b = self._wait_for(path("b.read"), [first, second])
        for proc in (first, second):
            proc.wait(timeout=120)
        return first, second, seen_a, seen_b

    def _store(self) -> db.Store:
        return db.Store(self.engine, self.ring)

    def _old_rows(self, md: sa.MetaData) -> None:
        """Rows as the earlier build wrote them, MACs included."""
        kid = self.ring.current.kid
        policy = {"id": POLICY_ID, "project_id": "proj",
                  "document": '{"tee": "amd-sev-snp"}',
                  "created_at": datetime.datetime(2026, 11, 27, 10, 0)}
        policy["mac_kek"] = kid
        policy["mac"] = self.ring.mac(
            kid, db._policy_mac_input(policy)).hex()
        with self.engine.begin() as conn:
            conn.execute(md.tables["tee_policies"].insert().values(**policy))
            conn.execute(md.tables["tee_rates"].insert().values(
                bucket="client:192.0.2.1", window=7, count=3))
            if "tee_bindings" in md.tables:
                binding = {"secret_id": SECRET_ID, "policy_id": POLICY_ID,
                           "project_id": "proj", "mac_kek": kid}
                binding["mac"] = self.ring.mac(
                    kid, db._binding_mac_input(binding)).hex()
                conn.execute(md.tables["tee_bindings"].insert().values(
                    **binding))
            if "tee_nonces" in md.tables:
                conn.execute(md.tables["tee_nonces"].insert().values(
                    nonce="n" * 64, secret_id=SECRET_ID,
                    expires_at=datetime.datetime(2026, 11, 27, 10, 5)))
            if "tee_sev_sessions" in md.tables:
                conn.execute(md.tables["tee_sev_sessions"].insert().values(
                    id=SESSION_ID, secret_id=SECRET_ID,
                    instance_uuid=INSTANCE, policy=5,
                    sealed_state="sealed-session-state",
                    expires_at=datetime.datetime(2099, 1, 1)))

    def _assert_rows_kept(self, md: sa.MetaData) -> None:
        store = self._store()
        row = store.get_policy(POLICY_ID)
        self.assertIsNotNone(row)
        self.assertTrue(store.policy_intact(row))
        with self.engine.connect() as conn:
            self.assertEqual([("client:192.0.2.1", 7, 3)], [
                tuple(r) for r in conn.execute(db.RATES.select())])
        if "tee_bindings" in md.tables:
            self.assertEqual((POLICY_ID, None, False),
                             store.legacy_binding(SECRET_ID))
        if "tee_sev_sessions" in md.tables:
            session = store.take_sev_session(SESSION_ID)
            self.assertIsNotNone(session)
            self.assertEqual("sealed-session-state",
                             session["sealed_state"])

    # -- tests -----------------------------------------------------------
    def test_empty_database_to_head(self) -> None:
        with self.engine.connect() as conn:
            self.assertFalse(migrations.state(conn).at_head)
        error = self.assertRaises(migrations.SchemaError,
                                  migrations.check, self.engine)
        self.assertIn("openstack-tee db upgrade", str(error))
        done = migrations.upgrade(self.engine)
        self.assertIsNone(done.before.revision)
        self.assertIsNone(done.stamped)
        self._assert_at_head()
        # Usable: every kind of row goes in and comes out.
        store = self._store()
        store.create_policy(POLICY_ID, "proj", {"tee": "amd-sev-snp"})
        self.assertTrue(store.policy_intact(store.get_policy(POLICY_ID)))
        self.assertTrue(store.spend_nonce("a" * 64, 10, 0))
        self.assertFalse(store.spend_nonce("a" * 64, 10, 0))
        self.assertTrue(store.hit("b", 1, 1))
        self.assertFalse(store.hit("b", 1, 1))
        # Again: nothing to do.
        again = migrations.upgrade(self.engine)
        self.assertIn("already at revision", again.describe())
        self._assert_at_head()

    def test_concurrent_upgrades_wait_for_the_lock(self) -> None:
        """Two `db upgrade` processes on a fresh database: one waits.

        A holds the upgrade lock between its look at the schema and its
        commit; B asks for the lock meanwhile and waits (on PostgreSQL and
        MariaDB the server says so; sqlite's waiters are invisible, so
        there B is seen not to get in for a second); a third with
        --lock-timeout 0.5 gives up clearly; B then finds the tables at
        head and changes nothing.
        """
        first, second, seen_a, seen_b = self._run_pair(no_lock=False)
        out_a, err_a = first.communicate()
        out_b, err_b = second.communicate()
        self.assertEqual(0, first.returncode, err_a)
        self.assertEqual(0, second.returncode, err_b)
        self.assertIn("not created yet", seen_a)
        self.assertIn("upgraded from an empty schema to "
                      f"{migrations.head()}", out_a)
        self.assertEqual(f"at revision {migrations.head()} (head)", seen_b)
        self.assertIn(f"already at revision {migrations.head()}", out_b)
        # Not compared with the models on sqlite: Barbican's models
        # (imported by other modules of this test run, and always in
        # barbican-api) render BigInteger as INTEGER there, and the
        # command (without them) created BIGINT: the same type in sqlite.
        self._assert_at_head(compare_models=self.KIND != scratch_db.SQLITE)
        with self.engine.connect() as conn:
            self.assertEqual([migrations.head()], conn.execute(sa.text(
                f"SELECT version_num FROM {migrations.VERSION_TABLE}"
            )).scalars().all())

    def test_concurrent_upgrades_race_without_the_lock(self) -> None:
        """Positive control: without the lock, both see an empty schema.

        Both then create the same tables, and one of them fails on the
        other's (this is what the lock prevents).
        """
        first, second, seen_a, seen_b = self._run_pair(no_lock=True)
        self.assertIn("not created yet", seen_a)
        self.assertIn("not created yet", seen_b)
        results = [(p.returncode, *p.communicate()) for p in (first,
                                                               second)]
        failed = [err for code, _out, err in results if code != 0]
        self.assertNotEqual([], failed, results)
        # sqlite: B's deferred transaction, which read before A wrote,
        # cannot write after A's commit (SQLITE_BUSY_SNAPSHOT).
        race = ("database is locked" if self.KIND == scratch_db.SQLITE
                else "already exists|duplicate")
        for err in failed:
            self.assertRegex(err.lower(), race, results)

    def test_first_released_schema_with_rows_to_head(self) -> None:
        """Through the revisions: tee0001 (f43a069), rows, then head."""
        migrations.upgrade(self.engine, migrations.FIRST_RELEASE)
        first = _build_metadata(_F43A069)
        with self.engine.connect() as conn:
            self.assertEqual(migrations.FIRST_RELEASE,
                             migrations.state(conn).revision)
        # The revision made exactly what f43a069's create_all made.
        self.assertEqual(set(first.tables) | {migrations.VERSION_TABLE,
                                              "alembic_version"},
                         self._tables())
        inspector = sa.inspect(self.engine)
        for table in first.tables.values():
            self.assertEqual(
                [c.name for c in table.columns],
                [c["name"] for c in inspector.get_columns(table.name)])
        self._old_rows(first)
        error = self.assertRaises(migrations.SchemaError,
                                  migrations.check, self.engine)
        self.assertIn("at revision tee0001", str(error))
        migrations.upgrade(self.engine)
        self._assert_at_head()
        self._assert_rows_kept(first)

    def test_create_all_databases_recognised_and_upgraded(self) -> None:
        """Earlier builds' create_all: stamped, completed, upgraded."""
        for label, md in [("f43a069", _build_metadata(_F43A069)),
                          *SHAPES.items()]:
            with self.subTest(shape=label):
                with self.engine.begin() as conn:
                    for name in self._tables() - {"alembic_version"}:
                        conn.execute(sa.text(f"DROP TABLE {name}"))
                md.create_all(self.engine)
                self._old_rows(md)
                error = self.assertRaises(migrations.SchemaError,
                                          migrations.check, self.engine)
                self.assertIn("without migrations", str(error))
                done = migrations.upgrade(self.engine)
                expected = (migrations.FIRST_RELEASE
                            if set(md.tables) <= {
                                "tee_policies", "tee_bindings",
                                "tee_nonces", "tee_rates"}
                            else migrations.BEFORE_MIGRATIONS)
                self.assertEqual(expected, done.stamped)
                self.assertIn("recognised as revision", done.describe())
                self._assert_at_head()
                self._assert_rows_kept(md)

    def test_unrecognised_databases_refused_untouched(self) -> None:
        full = SHAPES["f43a069..e18a125"]
        cases = {
            "unknown table": "CREATE TABLE tee_other (id INTEGER)",
            "extra column": ("ALTER TABLE tee_policies ADD COLUMN "
                             "extra INTEGER"),
            "missing table": "DROP TABLE tee_rates",
        }
        for label, statement in cases.items():
            with self.subTest(case=label):
                with self.engine.begin() as conn:
                    for name in self._tables() - {"alembic_version"}:
                        conn.execute(sa.text(f"DROP TABLE {name}"))
                full.create_all(self.engine)
                with self.engine.begin() as conn:
                    conn.execute(sa.text(statement))
                before = self._tables()
                error = self.assertRaises(migrations.SchemaError,
                                          migrations.upgrade, self.engine)
                self.assertIn("does not recognise", str(error))
                self.assertIn("nothing was changed", str(error))
                self.assertEqual(before, self._tables())
        # A revision from a newer release: refused, not "upgraded".
        with self.engine.begin() as conn:
            for name in self._tables() - {"alembic_version"}:
                conn.execute(sa.text(f"DROP TABLE {name}"))
        migrations.upgrade(self.engine)
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                f"UPDATE {migrations.VERSION_TABLE} SET "
                "version_num = 'tee9999'"))
        for call in (migrations.upgrade, migrations.check):
            error = self.assertRaises(migrations.SchemaError, call,
                                      self.engine)
            self.assertIn("does not know", str(error))

    def test_a_sev_policy_with_bit_31_set_is_stored(self) -> None:
        """A SEV policy is unsigned 32-bit: tee0006 widens the column.

        From the schema before it (tee0005), with a session row in it.
        """
        migrations.upgrade(self.engine, "tee0005")
        store = db.Store(self.engine, self.ring)
        row = {"secret_id": "s", "instance_uuid": "i", "sealed_state": "{}",
               "expires_at": db.utcnow() + datetime.timedelta(hours=1)}
        store.add_sev_session(dict(row, id="old", policy=0x1))
        if self.KIND != scratch_db.SQLITE:
            # Positive control: the signed 32-bit column refused it.
            self.assertRaises(
                (sa.exc.DBAPIError, db_exc.DBError), store.add_sev_session,
                dict(row, id="refused", policy=0xFFFF0001))
        migrations.upgrade(self.engine)
        self._assert_at_head()
        store.add_sev_session(dict(row, id="new", policy=0xFFFF0001))
        self.assertEqual(0xFFFF0001, store.take_sev_session("new")["policy"])
        self.assertEqual(0x1, store.take_sev_session("old")["policy"])

    def test_compare_metadata_sees_a_difference(self) -> None:
        """compare_metadata sees a difference when there is one."""
        migrations.upgrade(self.engine)
        with self.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE tee_spent_nonces"))
            diffs = migrations.drift(conn)
        self.assertEqual([("add_table", "tee_spent_nonces"),
                          ("add_index", "ix_tee_spent_nonces_expires_at")],
                         [(d[0], d[1].name) for d in diffs])


class SqliteMigrationTest(_MigrationTests, base.TestCase):
    KIND = scratch_db.SQLITE


class MariaDBMigrationTest(_MigrationTests, base.TestCase):
    KIND = scratch_db.MYSQL

    def _collations(self) -> dict[tuple[str, str], str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT table_name, column_name, collation_name FROM "
                "information_schema.columns WHERE table_schema = "
                "DATABASE() AND table_name LIKE 'tee\\_%' AND "
                "data_type = 'varchar'")).all()
        return {(t, c): coll for t, c, coll in rows
                if t != migrations.VERSION_TABLE}

    def test_strings_compare_exactly(self) -> None:
        """A case-swapped id or digest is another one (finding 4)."""
        first = _build_metadata(_F43A069)
        migrations.upgrade(self.engine, migrations.FIRST_RELEASE)
        self._old_rows(first)
        # Positive control: the first released schema ignored case.
        with self.engine.connect() as conn:
            self.assertEqual(1, conn.execute(sa.text(
                "SELECT COUNT(*) FROM tee_policies WHERE id = :i"),
                {"i": POLICY_ID.upper()}).scalar_one())
        migrations.upgrade(self.engine)
        collations = self._collations()
        # 19 string columns up to tee0003, tee0004's tee_floors four and
        # tee0005's tee_endorsements eight.
        self.assertEqual(31, len(collations))
        self.assertEqual({"utf8mb4_bin"}, set(collations.values()),
                         collations)
        store = self._store()
        self.assertIsNone(store.get_policy(POLICY_ID.upper()))
        self.assertIsNotNone(store.get_policy(POLICY_ID))
        digest = "ab" * 32
        self.assertTrue(store.spend_nonce(digest, 10, 0))
        self.assertTrue(store.spend_nonce(digest.upper(), 10, 0))
        self.assertFalse(store.spend_nonce(digest, 10, 0))
        # A fresh database gets the same collations.
        with self.engine.begin() as conn:
            for name in self._tables() - {"alembic_version"}:
                conn.execute(sa.text(f"DROP TABLE {name}"))
        migrations.upgrade(self.engine)
        self.assertEqual(collations, self._collations())


class PostgreSQLMigrationTest(_MigrationTests, base.TestCase):
    KIND = scratch_db.POSTGRESQL


class CommandTest(base.TestCase):
    """``openstack-tee db`` as an operator runs it."""

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [base.installed_command("openstack-tee"), "db", *args],
            capture_output=True, text=True, timeout=120, check=False)

    def test_check_upgrade_current(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(tmp, "barbican.conf")
        url = f"sqlite:///{tmp}/barbican.sqlite"
        with open(conf, "w") as f:
            f.write(f"[database]\nconnection = {url}\n")
        checked = self._run("check", "--config-file", conf)
        self.assertEqual(1, checked.returncode, checked)
        self.assertIn("not created yet", checked.stdout)
        self.assertIn("openstack-tee db upgrade", checked.stdout)
        upgraded = self._run("upgrade", "--config-file", conf)
        self.assertEqual(0, upgraded.returncode, upgraded)
        self.assertIn(f"upgraded from an empty schema to "
                      f"{migrations.head()}", upgraded.stdout)
        for action in ("check", "current"):
            done = self._run(action, "--config-file", conf)
            self.assertEqual(0, done.returncode, done)
            self.assertIn(f"at revision {migrations.head()} (head)",
                          done.stdout)
        # Unrecognised: exit 2, the reason on stderr, nothing changed.
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {migrations.VERSION_TABLE}"))
            conn.execute(sa.text("CREATE TABLE tee_other (id INTEGER)"))
        refused = self._run("upgrade", "--config-file", conf)
        self.assertEqual(2, refused.returncode, refused)
        self.assertIn("tee_other", refused.stderr)
        self.assertNotIn(migrations.VERSION_TABLE,
                         sa.inspect(engine).get_table_names())
        engine.dispose()
        missing = self._run("upgrade", "--config-file",
                            os.path.join(tmp, "nowhere.conf"))
        self.assertEqual(2, missing.returncode, missing)

    def test_no_database_to_upgrade(self) -> None:
        """No barbican.conf, no [database] connection, no driver: exit 2.

        With the reason, and nothing created anywhere.
        """
        tmp = self.useFixture(fixtures.TempDir()).path
        home = os.path.join(tmp, "home")
        os.mkdir(home)
        # Run where oslo.config's search finds nothing (HOME, and no
        # /etc/barbican.conf on this machine) from an empty directory.
        env = dict(os.environ, HOME=home)
        if os.path.exists("/etc/barbican/barbican.conf") or os.path.exists(
                "/etc/barbican.conf"):
            self.skipTest("this machine has a barbican.conf in /etc")
        found = subprocess.run(
            [base.installed_command("openstack-tee"), "db", "upgrade"],
            capture_output=True, text=True, timeout=120, check=False,
            cwd=tmp, env=env)
        self.assertEqual(2, found.returncode, found)
        self.assertIn("no barbican.conf found", found.stderr)
        empty = os.path.join(tmp, "empty.conf")
        with open(empty, "w") as f:
            f.write("[DEFAULT]\ndebug = false\n")
        unset = self._run("upgrade", "--config-file", empty)
        self.assertEqual(2, unset.returncode, unset)
        self.assertIn("sets no [database] connection", unset.stderr)
        self.assertEqual(["empty.conf", "home"], sorted(os.listdir(tmp)))
        # A driver that is not installed (mysqlclient, here): exit 2 (not
        # 1, "upgrade needed"), and what to install.
        if importlib.util.find_spec("MySQLdb") is not None:
            self.skipTest("mysqlclient is installed here")
        nodriver = os.path.join(tmp, "nodriver.conf")
        with open(nodriver, "w") as f:
            f.write("[database]\nconnection = mysql+mysqldb://u:p@"
                    "127.0.0.1/barbican\n")
        for action in ("check", "upgrade"):
            out = self._run(action, "--config-file", nodriver)
            self.assertEqual(2, out.returncode, out)
            self.assertNotIn("Traceback", out.stderr)
            self.assertIn("the database driver is not installed",
                          out.stderr)

    def test_rewrap_without_a_usable_config(self) -> None:
        """Exit 2 (nothing done) with the reason, not a traceback."""
        tmp = self.useFixture(fixtures.TempDir()).path
        empty = os.path.join(tmp, "empty.conf")
        with open(empty, "w") as f:
            f.write("[DEFAULT]\ndebug = false\n")
        tables = os.path.join(tmp, "tables.conf")
        with open(tables, "w") as f:
            f.write(f"[database]\nconnection = sqlite:///{tmp}/none.sqlite\n"
                    "[tee_sealed]\nkek_file = /nonexistent\n")
        for conf, reason in ((os.path.join(tmp, "nowhere.conf"),
                              "ConfigFilesNotFoundError"),
                             (empty, "sets no [database] connection"),
                             (tables, "rewrap: ")):
            with self.subTest(conf=conf):
                out = subprocess.run(
                    [base.installed_command("openstack-tee"), "rewrap",
                     "--config-file", conf], capture_output=True,
                    text=True, timeout=120, check=False)
                self.assertEqual(2, out.returncode, out)
                self.assertIn(reason, out.stderr)
                self.assertNotIn("Traceback", out.stderr)

    def test_downgrade_refused(self) -> None:
        """Migrations go forward only: a downgrade request is refused."""
        tmp = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(tmp, "barbican.conf")
        url = f"sqlite:///{tmp}/barbican.sqlite"
        with open(conf, "w") as f:
            f.write(f"[database]\nconnection = {url}\n")
        engine = db.make_engine(url)
        self.addCleanup(engine.dispose)
        migrations.upgrade(engine)
        refused = self._run("downgrade", migrations.FIRST_RELEASE,
                            "--config-file", conf)
        self.assertEqual(2, refused.returncode, refused)
        self.assertIn("go forward only", refused.stderr)
        self.assertIn("restore the backup", refused.stderr)
        self.assertIn("nothing was changed", refused.stderr)
        self.assertEqual(migrations.head(), migrations.check(engine).revision)
        # Listed, so that an operator looking for it reads why not.
        parser = cli.build_parser()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertRaises(SystemExit, parser.parse_args,
                              ["db", "--help"])
        self.assertIn("downgrade", out.getvalue())

    def test_lock_timeout_argument(self) -> None:
        self.assertEqual(migrations.DEFAULT_LOCK_TIMEOUT,
                         db_cmd.DEFAULT_LOCK_TIMEOUT)
        parser = cli.build_parser()
        args = parser.parse_args(["db", "upgrade"])
        self.assertEqual(migrations.DEFAULT_LOCK_TIMEOUT, args.lock_timeout)
        args = parser.parse_args(["db", "upgrade", "--lock-timeout", "2.5"])
        self.assertEqual(2.5, args.lock_timeout)
        for bad in ("0", "-1", "soon", "86401"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                error = self.assertRaises(
                    SystemExit, parser.parse_args,
                    ["db", "upgrade", "--lock-timeout", bad])
            self.assertEqual(2, error.code)
            self.assertIn("--lock-timeout", err.getvalue())

