"""barbican_tee.api.db: which errors rerun a transaction; exact lookups.

The behaviour on MariaDB and PostgreSQL themselves is in
tests/functional/barbican/test_databases.py.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import shutil
import tempfile
import threading
from typing import Any
from unittest import mock

import fixtures
from oslo_db import exception as db_exc
import pymysql
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from tests import base
from tests.unit.barbican_tee import test_sealed


class _PgError(Exception):
    def __init__(self, pgcode: str) -> None:
        super().__init__(pgcode)
        self.pgcode = pgcode


def _wrapped(orig: BaseException, invalidated: bool = False
             ) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("UPDATE tee_rates ...", {}, orig,
                                   connection_invalidated=invalidated)


class RetryableTest(base.TestCase):

    def test_deadlocks_and_lock_timeouts_are_retried(self) -> None:
        for errno in (1213, 1205):
            self.assertTrue(db.retryable(_wrapped(
                pymysql.err.OperationalError(errno, "Deadlock found"))))
        for code in ("40P01", "40001"):
            self.assertTrue(db.retryable(_wrapped(_PgError(code))))
        self.assertTrue(db.retryable(_wrapped(Exception("gone"),
                                              invalidated=True)))

    def test_oslo_db_wrapped_errors_are_judged_by_their_cause(self) -> None:
        # What oslo.db's engine raises for an error it does not translate.
        serialisation = db_exc.DBError(_wrapped(_PgError("40001")))
        self.assertTrue(db.retryable(serialisation))
        denied = db_exc.DBError(_wrapped(
            pymysql.err.OperationalError(1045, "Access denied")))
        self.assertFalse(db.retryable(denied))

    def test_other_errors_are_not(self) -> None:
        # A duplicate key (the spent-nonce guarantee) must not be retried
        # into a success, nor anything that is not a database error.
        self.assertFalse(db.retryable(sa.exc.IntegrityError(
            "INSERT", {}, pymysql.err.IntegrityError(1062, "Duplicate"))))
        self.assertFalse(db.retryable(_wrapped(
            pymysql.err.OperationalError(1045, "Access denied"))))
        self.assertFalse(db.retryable(_wrapped(_PgError("23505"))))
        self.assertFalse(db.retryable(ValueError("1213")))

    def test_a_deadlock_victim_runs_again_whole(self) -> None:
        calls = []

        class Flaky:
            @db._retry  # noqa: SLF001
            def run(self) -> str:
                calls.append(1)
                if len(calls) < 3:
                                raise _wrapped(pymysql.err.OperationalError(
                        1213, "Deadlock found"))
                return "done"

        self.assertEqual("done", Flaky().run())
        self.assertEqual(3, len(calls))


def _scratch_store(test: base.TestCase, pool_sqlite: bool) -> db.Store:
    """A Store on a migrated sqlite file of the test's own."""
    tmp = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, tmp)
    ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"), [])
    engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite",
                            pool_sqlite=pool_sqlite)
    test.addCleanup(engine.dispose)
    migrations.upgrade(engine)
    return db.Store(engine, ring)


class StoreOnSqliteTest(base.TestCase):

    pool_sqlite = False

    def setUp(self) -> None:
        super().setUp()
        self.store = _scratch_store(self, self.pool_sqlite)

    def _windows(self) -> set[tuple[str, int]]:
        with self.store.engine.connect() as conn:
            return {(b, w) for b, w, _c in
                    conn.execute(sa.select(db.RATES)).all()}

    def test_old_windows_of_every_bucket_are_pruned(self) -> None:
        clock = [1000.0]
        self.patch(db.time, "monotonic", lambda: clock[0])
        self.store.hit("client:gone", 100, 10)
        self.store.hit("client:b", 101, 10)
        self.assertEqual({("client:gone", 100), ("client:b", 101)},
                         self._windows())
        # Window 105, within the interval: nothing pruned yet (only the
        # bucket's own earlier windows, none here).
        clock[0] += db.PRUNE_INTERVAL - 1
        self.store.hit("client:c", 105, 10)
        self.assertIn(("client:gone", 100), self._windows())
        # The interval passed: every bucket's windows before 104 go, the
        # previous window stays.
        clock[0] += 1
        self.store.hit("client:d", 104, 10)
        self.store.hit("client:e", 105, 10)
        self.assertEqual({("client:c", 105), ("client:d", 104),
                          ("client:e", 105)}, self._windows())
        # The release path prunes too.
        self.store.hit("client:f", 106, 10)
        clock[0] += db.PRUNE_INTERVAL
        self.store.admit_release("client:g", 200, 10, "s")
        self.assertEqual({("client:g", 200)}, self._windows())

    def test_a_failed_prune_does_not_fail_the_request(self) -> None:
        def broken(statement: Any) -> None:
            raise sa.exc.OperationalError("DELETE", {}, Exception("down"))

        self.patch(self.store, "_execute_retried", broken)
        self.assertTrue(self.store.hit("client:a", 5, 10))

    def test_rate_counts_are_exact_under_threads(self) -> None:
        results: list[bool] = []
        lock = threading.Lock()

        def hit() -> None:
            ok = self.store.hit_many([("client:a", 10), ("secret:s", 25)], 7)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=hit) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(10, results.count(True))
        # The next window starts at 1 and prunes the old one.
        self.assertTrue(self.store.hit("client:a", 8, 1))
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(db.RATES)).all()
        self.assertEqual({("client:a", 8, 1), ("secret:s", 7, 30)},
                         {tuple(r) for r in rows})

    def test_lookups_are_exact(self) -> None:
        self.store.create_policy("abcdef00-0000-4000-8000-000000000000",
                                 "project", {"tee": "amd-sev-snp"})
        self.assertIsNotNone(self.store.get_policy(
            "abcdef00-0000-4000-8000-000000000000"))
        self.assertIsNone(self.store.get_policy(
            "ABCDEF00-0000-4000-8000-000000000000"))
        self.assertEqual([], self.store.list_policies("PROJECT"))
        self.assertFalse(self.store.delete_policy(
            "ABCDEF00-0000-4000-8000-000000000000"))
        self.assertTrue(self.store.delete_policy(
            "abcdef00-0000-4000-8000-000000000000"))


class PooledStoreOnSqliteTest(StoreOnSqliteTest):
    """The same, on the pooled engine the API's request path uses."""

    pool_sqlite = True

    def test_connections_are_pooled(self) -> None:
        self.assertIsInstance(self.store.engine.pool, sa.pool.QueuePool)
        with self.store.engine.connect() as conn:
            first = conn.connection.dbapi_connection
        with self.store.engine.connect() as conn:
            self.assertIs(first, conn.connection.dbapi_connection)

    def _rows(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(db.RATES)).scalar())

    def test_a_reused_connection_still_runs_whole_transactions(self) -> None:
        engine = self.store.engine
        # oslo.db marks a connection in a transaction (and emits BEGIN
        # only without the mark); a mark left behind on a pooled
        # connection must not turn the next transaction into autocommit.
        with engine.connect() as conn:
            conn.connection.info["in_transaction"] = True
        for _ in range(2):
            with self.assertRaises(ZeroDivisionError):
                with engine.begin() as conn:
                    conn.execute(db.RATES.insert().values(
                        bucket="b", window=1, count=1))
                    1 / 0  # noqa: B018
            self.assertEqual(0, self._rows())
        # Positive control: the same insert, committed, is there.
        with engine.begin() as conn:
            conn.execute(db.RATES.insert().values(bucket="b", window=1,
                                                  count=1))
        self.assertEqual(1, self._rows())

    def test_the_pool_is_oslo_dbs_engine_with_barbicans_options(
            self) -> None:
        from oslo_config import cfg
        from oslo_db import options as db_options

        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        conf = cfg.ConfigOpts()
        conf.register_opts(db_options.database_opts, group="database")
        conf.set_override("max_pool_size", 3, group="database")
        conf.set_override("pool_timeout", 7, group="database")
        engine = db.make_engine(f"sqlite:///{tmp}/p.sqlite", conf,
                                pool_sqlite=True)
        self.addCleanup(engine.dispose)
        pool = engine.pool
        assert isinstance(pool, sa.pool.QueuePool)
        self.assertEqual((3, 7), (pool.size(), pool.timeout()))
        # The pool's own URL parameters never reach sqlite.
        self.assertEqual({"timeout", "check_same_thread"},
                         set(engine.url.query))
        with engine.connect() as conn:
            # oslo.db's connection events (its REGEXP function) and ours
            # (WAL) ran on the pooled connection.
            self.assertEqual(1, conn.execute(sa.text(
                "SELECT 'abc' REGEXP 'b'")).scalar())
            self.assertEqual("wal", conn.execute(sa.text(
                "PRAGMA journal_mode")).scalar())
        # Without pool_sqlite (or for another database): oslo.db's pool.
        plain = db.make_engine(f"sqlite:///{tmp}/p.sqlite")
        self.addCleanup(plain.dispose)
        self.assertIsInstance(plain.pool, sa.pool.NullPool)


class DriverPathTest(base.TestCase):
    """The hot statements on the driver's cursor (db._driver_transaction).

    On MariaDB and PostgreSQL: tests/functional/barbican/test_databases.py
    (deadlocks, a restarted server, concurrent spends).
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = _scratch_store(self, pool_sqlite=True)

    def _count(self, bucket: str, window: int) -> int | None:
        with self.store.engine.connect() as conn:
            return conn.execute(db._HIT_COUNT,  # noqa: SLF001
                                {"b": bucket, "w": window}).scalar()

    def test_parameters_in_each_drivers_order(self) -> None:
        from sqlalchemy.dialects import mysql
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.dialects import sqlite

        values = {"b": "client:x", "w": 7}
        for dialect, expected in (
                (sqlite.pysqlite.dialect(), ("client:x", 7, 1, 1)),
                (mysql.pymysql.dialect(), ("client:x", 7, 1, 1)),
                (postgresql.psycopg2.dialect(),
                 {"b": "client:x", "w": 7, "count": 1, "count_1": 1})):
            upsert, _ = db._hit_statement(dialect.name)  # noqa: SLF001
            compiled = db._driver_statement(dialect, upsert)  # noqa: SLF001
            self.assertEqual(expected, compiled.params(values))
            # Compiled once per dialect.
            self.assertIs(compiled, db._driver_statement(  # noqa: SLF001
                dialect, upsert))
            for statement in (db._spend_once_statement(  # noqa: SLF001
                    dialect.name), db._STORE_META_OF,  # noqa: SLF001
                    db._POLICY_PIN_BY_ID, db._HIT_COUNT):  # noqa: SLF001
                db._driver_statement(dialect, statement)  # noqa: SLF001

    def test_a_parameter_sqlalchemy_must_convert_is_refused(self) -> None:
        # sqlite stores a datetime as text: SQLAlchemy's bind processing,
        # which the driver path does not do.
        statement = sa.select(db.POLICIES.c.id).where(
            db.POLICIES.c.created_at < sa.bindparam("t", type_=sa.DateTime))
        # An IN list: SQLAlchemy writes it into the text at each execution.
        in_list = sa.select(db.RATES.c.count).where(db.RATES.c.bucket.in_(
            sa.bindparam("bs", expanding=True)))
        for refused in (statement, in_list):
            with self.assertRaises(db.NotForDriver):
                db._driver_statement(  # noqa: SLF001
                    self.store.engine.dialect, refused)
        # Positive control: the same with a string parameter.
        self.assertEqual(("x",), db._driver_statement(  # noqa: SLF001
            self.store.engine.dialect, sa.select(db.RATES.c.count).where(
                db.RATES.c.bucket == sa.bindparam("b"))).params({"b": "x"}))

    def test_what_raises_commits_nothing(self) -> None:
        upsert, _ = db._hit_statement("sqlite")  # noqa: SLF001

        def work(execute: Any) -> None:
            execute(upsert, {"b": "client:r", "w": 1}).fetchall()
            raise ValueError("after the upsert")

        with self.store.engine.connect() as conn:
            with self.assertRaises(ValueError):
                db._driver_transaction(conn, work)  # noqa: SLF001
        self.assertIsNone(self._count("client:r", 1))
        # Positive control: the same upsert, returned from, is committed.
        with self.store.engine.connect() as conn:
            self.assertEqual(1, db._driver_transaction(  # noqa: SLF001
                conn, lambda execute: execute(upsert, {
                    "b": "client:r", "w": 1}).fetchall()[0][0]))
        self.assertEqual(1, self._count("client:r", 1))

    def test_driver_errors_are_sqlalchemys_without_parameters(self) -> None:
        missing = sa.table("tee_missing", sa.column("v", sa.String))
        statement = sa.select(missing.c.v).where(
            missing.c.v == sa.bindparam("v"))
        with self.store.engine.connect() as conn:
            with self.assertRaises(sa.exc.OperationalError) as caught:
                db._driver_transaction(  # noqa: SLF001
                    conn, lambda execute: execute(statement, {
                        "v": "parameter-value-42"}))
        self.assertNotIn("parameter-value-42", str(caught.exception))
        self.assertIn("tee_missing", str(caught.exception))
        self.assertFalse(caught.exception.connection_invalidated)
        self.assertTrue(db.unavailable(caught.exception))
        self.assertFalse(db.retryable(caught.exception))
        # The connection went back to the pool usable.
        self.assertTrue(self.store.hit("client:after", 1, 10))

    def test_a_lost_connection_is_invalidated_and_retried(self) -> None:
        upsert, _ = db._hit_statement("sqlite")  # noqa: SLF001
        with self.store.engine.connect() as conn:
            lost = conn.connection.dbapi_connection

            def work(execute: Any) -> None:
                lost.close()  # as a server that went away
                execute(upsert, {"b": "client:l", "w": 1})

            with self.assertRaises(sa.exc.DBAPIError) as caught:
                db._driver_transaction(conn, work)  # noqa: SLF001
        self.assertTrue(caught.exception.connection_invalidated)
        self.assertTrue(db.retryable(caught.exception))
        # The pool replaced it.
        with self.store.engine.connect() as conn:
            self.assertIsNot(lost, conn.connection.dbapi_connection)
        self.assertTrue(self.store.hit("client:l", 1, 10))
        self.assertEqual(1, self._count("client:l", 1))

    def test_statements_logged_with_connection_debug(self) -> None:
        import logging

        quiet = self.useFixture(fixtures.FakeLogger(
            name="sqlalchemy.engine.Engine", level=logging.WARNING))
        self.store.hit("client:203.0.113.9", 1, 10)
        self.assertEqual("", quiet.output)
        logged = self.useFixture(fixtures.FakeLogger(
            name="sqlalchemy.engine.Engine", level=logging.INFO))
        self.store.hit("client:203.0.113.9", 1, 10)
        self.assertIn("INSERT INTO tee_rates", logged.output)
        self.assertIn("driver path", logged.output)
        # The statement, not its parameters.
        self.assertNotIn("203.0.113.9", logged.output)

    def test_a_deadlock_victims_hit_runs_again_whole(self) -> None:
        self.useFixture(fixtures.MockPatch("time.sleep"))
        real = db._hit  # noqa: SLF001
        calls: list[int] = []

        def deadlocked(*args: Any) -> int:
            count = real(*args)
            calls.append(count)
            if len(calls) == 1:
                raise _wrapped(pymysql.err.OperationalError(
                    1213, "Deadlock found"))
            return count

        self.useFixture(fixtures.MockPatch(
            "barbican_tee.api.db._hit", side_effect=deadlocked))
        self.assertTrue(self.store.hit("client:d", 1, 1))
        # The first attempt's count was rolled back: both attempts saw 1.
        self.assertEqual([1, 1], calls)
        self.assertEqual(1, self._count("client:d", 1))


class _FlakyEngine:
    """The real engine, whose transactions fail as a database can.

    ``fail`` transactions (``begin()``) raise a MariaDB deadlock:
    ``"before"`` one rolled back before its commit, ``"after"`` one
    committed whose acknowledgement was lost (a connection dropped after
    the commit).
    """

    def __init__(self, engine: sa.Engine, fail: int, when: str) -> None:
        self.engine = engine
        self.fail = fail
        self.when = when
        self.begun = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def _deadlock(self) -> sa.exc.DBAPIError:
        self.fail -= 1
        return _wrapped(pymysql.err.OperationalError(
            1213, "Deadlock found when trying to get lock"))

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        self.begun += 1
        with self.engine.begin() as conn:
            yield conn
            if self.fail > 0 and self.when == "before":
                conn.rollback()
        if self.fail > 0 and self.when in ("before", "after"):
            self.between()
            raise self._deadlock()

    def between(self) -> None:
        """What others do between the failed attempt and its retry."""


class WritesRetriedTest(base.TestCase):
    """Every write path runs its whole transaction again on a deadlock."""

    policy_id = "abcdef00-0000-4000-8000-000000000000"

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        self.ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"),
                                               [])
        self.engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite")
        self.addCleanup(self.engine.dispose)
        migrations.upgrade(self.engine)
        db._STORE_META_ROWS.create(self.engine)  # noqa: SLF001
        self.store = db.Store(self.engine, self.ring)
        # No pauses between attempts in these tests.
        self.useFixture(fixtures.MockPatch("time.sleep"))

    def _flaky(self, fail: int, when: str) -> _FlakyEngine:
        flaky = _FlakyEngine(self.engine, fail, when)
        self.store.engine = flaky  # type: ignore[assignment]
        return flaky

    def _policies(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                sa.select(db.POLICIES)).mappings()]

    def test_create_policy_after_a_rolled_back_attempt(self) -> None:
        flaky = self._flaky(2, "before")
        self.store.create_policy(self.policy_id, "p", {"tee": "x"})
        self.assertEqual(3, flaky.begun)
        [row] = self._policies()
        self.assertTrue(self.store.policy_intact(row))

    def test_create_policy_after_a_lost_acknowledgement(self) -> None:
        # The first insert committed; its retry meets its own row.
        flaky = self._flaky(1, "after")
        self.store.create_policy(self.policy_id, "p", {"tee": "x"})
        self.assertEqual(2, flaky.begun)
        [row] = self._policies()
        self.assertEqual(("p", '{"tee": "x"}'),
                         (row["project_id"], row["document"]))

    def test_a_duplicate_not_ours_stays_an_error(self) -> None:
        # Positive control: another row with the id is not taken for ours,
        # on a retry nor on a first attempt.
        self.store.create_policy(self.policy_id, "other", {"tee": "x"})
        self._flaky(1, "before")
        self.assertRaises(db.DUPLICATE, self.store.create_policy,
                          self.policy_id, "p", {"tee": "x"})
        self._flaky(0, "before")
        self.assertRaises(db.DUPLICATE, self.store.create_policy,
                          self.policy_id, "other", {"tee": "x"})
        [row] = self._policies()
        self.assertEqual("other", row["project_id"])

    def test_delete_policy(self) -> None:
        for when in ("before", "after"):
            self.store.create_policy(self.policy_id, "p", {"tee": "x"})
            flaky = self._flaky(1, when)
            self.store.delete_policy(self.policy_id)
            self.assertEqual(2, flaky.begun)
            self.assertEqual([], self._policies())
            self.store.engine = self.engine

    def test_remac_rows(self) -> None:
        self.store.create_policy(self.policy_id, "p", {"tee": "x"})
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        ring = keyring.Keyring(keyring.Keyring.from_files(
            test_sealed._kek(tmp, "n"), []).current, [self.ring.current])
        self.assertNotEqual(ring.current.kid, self.ring.current.kid)
        self.store.keyring = ring
        flaky = self._flaky(1, "before")
        self.assertEqual((1, 0), self.store.remac_rows())
        self.assertEqual(2, flaky.begun)
        [row] = self._policies()
        self.assertEqual(ring.current.kid, row["mac_kek"])
        self.assertTrue(self.store.policy_intact(row))

    def test_a_duplicate_from_a_concurrent_writer_runs_again(self) -> None:
        # Read what is there, insert the rest: another writer inserted
        # the same row in between (what MariaDB/PostgreSQL answer with a
        # duplicate key); the next attempt reads it and inserts nothing.
        attempts: list[int] = []
        row = {"id": self.policy_id, "project_id": "p", "document": "{}",
               "created_at": db.utcnow(), "mac_kek": "k", "mac": "00"}

        @db.again_on_duplicate
        def put() -> bool:
            attempts.append(1)
            with self.engine.connect() as conn:
                present = bool(conn.execute(sa.select(db.POLICIES.c.id)).all())
            if len(attempts) == 1:
                with self.engine.begin() as conn:  # the other writer
                    conn.execute(db.POLICIES.insert().values(**row))
            if present:
                return False
            with self.engine.begin() as conn:
                conn.execute(db.POLICIES.insert().values(**row))
            return True

        self.assertFalse(put())
        self.assertEqual(2, len(attempts))
        self.assertEqual(1, len(self._policies()))

        # Positive control: a duplicate every time stays an error.
        @db.again_on_duplicate
        def always() -> None:
            attempts.append(1)
            with self.engine.begin() as conn:
                conn.execute(db.POLICIES.insert().values(**row))

        del attempts[:]
        self.assertRaises(db.DUPLICATE, always)
        self.assertEqual(3, len(attempts))

    def test_a_mac_that_is_not_hex_is_a_forged_row(self) -> None:
        # What a database writer may put there: a refusal, never an
        # error that would stop a release's audit or a whole rewrap.
        self.store.create_policy(self.policy_id, "p", {"tee": "x"})
        other = "abcdef00-0000-4000-8000-000000000001"
        self.store.create_policy(other, "p", {"tee": "y"})
        with self.engine.begin() as conn:
            conn.execute(db.POLICIES.update().where(
                db.POLICIES.c.id == self.policy_id).values(mac="not-hex"))
        rows = {r["id"]: r for r in self._policies()}
        self.assertFalse(self.store.policy_intact(rows[self.policy_id]))
        self.assertTrue(self.store.policy_intact(rows[other]))
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        self.store.keyring = keyring.Keyring(keyring.Keyring.from_files(
            test_sealed._kek(tmp, "n"), []).current, [self.ring.current])
        # The intact row is re-MACed, the forged one counted and left.
        self.assertEqual((1, 1), self.store.remac_rows())
        for value in (None, 7, "", "zz" * 32, b"\x00" * 32):
            self.assertFalse(self.ring.check_mac(
                self.ring.current.kid, b"data", value))  # type: ignore

    def test_legacy_binding_read_is_retried(self) -> None:
        # The real engine's connect() fails once (legacy_binding inspects
        # the engine, which a _FlakyEngine in its place is not).
        real = self.engine.connect
        calls: list[int] = []

        def connect() -> sa.Connection:
            calls.append(1)
            if len(calls) == 1:
                raise _wrapped(pymysql.err.OperationalError(
                    1213, "Deadlock found"))
            return real()

        with mock.patch.object(self.engine, "connect", side_effect=connect):
            self.assertEqual((None, None, False),
                             self.store.legacy_binding(self.policy_id))
        self.assertGreater(len(calls), 1)

    def _meta(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db._STORE_META)).all()  # noqa
        return {r[1]: r[2] for r in rows}

    def _record(self, values: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(db._STORE_META.delete())  # noqa: SLF001
            conn.execute(db._STORE_META.insert(), [  # noqa: SLF001
                {"secret_id": "s", "key": k, "value": v, "deleted": False}
                for k, v in values.items()])

    def test_swap_after_a_rolled_back_attempt(self) -> None:
        old, new = {"a": "1", "b": "2"}, {"a": "3", "b": "4"}
        self._record(old)
        flaky = self._flaky(2, "before")
        self.assertTrue(self.store.replace_store_metadata("s", old, new))
        self.assertEqual(3, flaky.begun)
        self.assertEqual(new, self._meta())

    def test_swap_after_a_lost_acknowledgement_is_not_a_conflict(
            self) -> None:
        # The first attempt committed: the retry sees its own values and
        # writes nothing more.
        old, new = {"a": "1", "b": "2"}, {"a": "3", "b": "4"}
        self._record(old)
        flaky = self._flaky(1, "after")
        self.assertTrue(self.store.replace_store_metadata("s", old, new))
        self.assertEqual(2, flaky.begun)
        self.assertEqual(new, self._meta())

    def test_swap_adds_and_drops_record_keys_only(self) -> None:
        # An upgraded record has keys the old one had not, and may lack
        # some it had; Barbican's own keys are never touched. Lost
        # acknowledgement: the retry recognises its own commit.
        old = {"plugin_name": "p", "tee_a": "1", "tee_gone": "9"}
        new = {"tee_a": "2", "tee_b": "3"}
        self._record(old)
        flaky = self._flaky(1, "after")
        self.assertTrue(self.store.replace_store_metadata("s", old, new))
        self.assertEqual(2, flaky.begun)
        self.assertEqual({"plugin_name": "p", "tee_a": "2", "tee_b": "3"},
                         self.store.store_metadata("s"))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(
                db._STORE_META_ROWS)).mappings().all()  # noqa: SLF001
        gone = [r for r in rows if r["key"] == "tee_gone"]
        self.assertEqual([True], [bool(r["deleted"]) for r in gone])
        self.assertIsNotNone(gone[0]["deleted_at"])
        added = [r for r in rows if r["key"] == "tee_b"]
        self.assertEqual(["ACTIVE"], [r["status"] for r in added])
        self.assertEqual(36, len(added[0]["id"]))
        # A concurrent change of a dropped key fails the whole swap.
        self._record(old)
        self.store.engine = self.engine
        changed = dict(old, tee_gone="8")
        self.assertFalse(self.store.replace_store_metadata("s", changed,
                                                           new))
        self.assertEqual(old, self.store.store_metadata("s"))

    def test_swap_retried_after_a_concurrent_change_fails(self) -> None:
        # Positive control: between the attempts another writer swapped
        # the record; the retry neither overwrites it nor claims success.
        old, new = {"a": "1", "b": "2"}, {"a": "3", "b": "4"}
        other = {"a": "5", "b": "6"}
        self._record(old)
        store = self.store

        class Concurrent(_FlakyEngine):
            def between(self) -> None:
                with self.engine.begin() as conn:
                    conn.execute(db._STORE_META.update().where(  # noqa
                        db._STORE_META.c.key == "a").values(  # noqa
                        value="5"))
                    conn.execute(db._STORE_META.update().where(  # noqa
                        db._STORE_META.c.key == "b").values(  # noqa
                        value="6"))

        store.engine = Concurrent(  # type: ignore[assignment]
            self.engine, 1, "before")
        self.assertFalse(store.replace_store_metadata("s", old, new))
        self.assertEqual(other, self._meta())
