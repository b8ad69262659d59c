"""barbican_tee.api.db on the release path: one transaction per admission.

The same on MariaDB and PostgreSQL, under concurrency, is in
tests/functional/barbican/test_databases.py (32 concurrent releases of one
nonce, rate limits without 5xx).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import tempfile
import threading

import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.attestation import policy as policy_mod
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from tests import base
from tests.unit.barbican_tee import test_process_engine
from tests.unit.barbican_tee import test_sealed

SECRET = "0b0e1a2c-0000-4000-8000-000000000001"
POLICY = "abcdef00-0000-4000-8000-000000000000"


class AdmitReleaseTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        url, conf = test_process_engine.scratch_sqlite(self)
        engine = db.process_engine(url, conf)
        migrations.upgrade(engine)
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"), [])
        self.store = db.Store(engine, ring)

    def _meta(self, values: dict[str, str]) -> None:
        # Barbican's table, as far as the suite reads it.
        meta = sa.Table("secret_store_metadata", sa.MetaData(),
                        sa.Column("secret_id", sa.String(36)),
                        sa.Column("key", sa.String(255)),
                        sa.Column("value", sa.String(255)),
                        sa.Column("deleted", sa.Boolean))
        with self.store.engine.begin() as conn:
            meta.create(conn, checkfirst=True)
            for key, value in values.items():
                conn.execute(meta.insert().values(
                    secret_id=SECRET, key=key, value=value, deleted=False))

    def _spent(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(
                db.SPENT_NONCES)).scalar())

    def test_one_spend_of_a_nonce_reads_the_record_and_policy(self) -> None:
        self.store.create_policy(POLICY, "project", {"tee": "amd-sev-snp"})
        self._meta({"tee_policy": POLICY, "plugin_name": "x"})
        first = self.store.admit_release("client:a", 1, 10, SECRET,
                                         "d" * 64, 100)
        self.assertTrue(first.spent)
        self.assertEqual(1, first.count)
        self.assertEqual({"tee_policy": POLICY, "plugin_name": "x"},
                         first.meta)
        assert first.policy is not None
        self.assertEqual(POLICY, first.policy[0])
        # What the release checks of the row (its MAC, its pin, the
        # document), exactly as the row holds it.
        stored = self.store.get_policy(POLICY)
        assert stored is not None and first.policy[1] is not None
        self.assertEqual({k: stored[k] for k in ("id", "project_id",
                                                 "document", "mac_kek",
                                                 "mac")},
                         first.policy[1])
        self.assertTrue(self.store.policy_intact(first.policy[1]))
        self.assertEqual(db.policy_pin(stored),
                         db.policy_pin(first.policy[1]))
        # The same nonce again: counted, not spent, nothing read.
        again = self.store.admit_release("client:a", 1, 10, SECRET,
                                         "d" * 64, 100)
        self.assertEqual((2, False, None, None),
                         (again.count, again.spent, again.meta,
                          again.policy))
        # Another nonce (positive control) is spent.
        self.assertTrue(self.store.admit_release(
            "client:a", 1, 10, SECRET, "e" * 64, 100).spent)
        self.assertEqual(2, self._spent())

    def test_a_policy_the_index_names_but_that_is_gone(self) -> None:
        self._meta({"tee_policy": POLICY})
        got = self.store.admit_release("client:a", 1, 10, SECRET,
                                       "d" * 64, 100)
        self.assertEqual((POLICY, None), got.policy)
        # No policy in the index (or not an id): nothing read ahead.
        self.assertIsNone(self.store.admit_release(
            "client:b", 1, 10, "0b0e1a2c-0000-4000-8000-000000000002",
            "e" * 64, 100).policy)

    def test_over_the_limit_or_refused_spends_nothing(self) -> None:
        self._meta({})
        over = self.store.admit_release("client:a", 1, 0, SECRET,
                                        "d" * 64, 100)
        self.assertEqual((1, False), (over.count, over.spent))
        refused = self.store.admit_release("client:a", 1, 10, SECRET)
        self.assertEqual((2, False), (refused.count, refused.spent))
        self.assertEqual(0, self._spent())
        # Counted in the same bucket as hit() counts challenges.
        self.assertTrue(self.store.hit("client:a", 1, 3))
        self.assertFalse(self.store.hit("client:a", 1, 3))

    def test_concurrent_spends_of_one_nonce_one_wins(self) -> None:
        self._meta({})
        results: list[bool] = []
        lock = threading.Lock()

        def spend() -> None:
            got = self.store.admit_release("client:a", 1, 1000, SECRET,
                                           "d" * 64, 100)
            with lock:
                results.append(got.spent)

        threads = [threading.Thread(target=spend) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([True] + [False] * 15, sorted(results,
                                                       reverse=True))

    def test_expired_rows_are_pruned_at_most_every_interval(self) -> None:
        self._meta({})
        self.store.admit_release("client:a", 1, 10, SECRET, "a" * 64, 100)
        self.store.admit_release("client:a", 1, 10, SECRET, "b" * 64, 5000,
                                 prune_before=1000)
        self.assertEqual(1, self._spent())
        self.store.admit_release("client:a", 1, 10, SECRET, "c" * 64, 100)
        # Within the interval: not pruned again (expired nonces are
        # refused before the table is read anyway).
        self.store.admit_release("client:a", 1, 10, SECRET, "e" * 64, 5000,
                                 prune_before=1000)
        self.assertEqual(3, self._spent())
        self.store._pruned_at -= db.PRUNE_INTERVAL
        self.store.admit_release("client:a", 1, 10, SECRET, "f" * 64, 5000,
                                 prune_before=1000)
        self.assertEqual(3, self._spent())


class PrefetchTest(AdmitReleaseTest):
    """Reads run in the admission's transaction (db.Read)."""

    def _read(self, policy_id: str = POLICY,
              engine: sa.Engine | None = None) -> db.Read:
        return db.Read.of(engine or self.store.engine, _POLICY_ROW,
                          {"p": policy_id})

    def test_reads_run_in_the_admission_and_serve_once(self) -> None:
        self.store.create_policy(POLICY, "project", {"tee": "amd-sev-snp"})
        self._meta({"tee_policy": POLICY})
        read = self._read()
        other = self._read("00000000-0000-4000-8000-000000000000")
        admission = self.store.admit_release(
            "client:a", 1, 10, SECRET, "d" * 64, 100, reads=(read, other))
        self.assertTrue(admission.spent)
        with self.store.engine.connect() as conn:
            expected = conn.execute(_POLICY_ROW,
                                    {"p": POLICY}).mappings().all()
        self.assertEqual(1, len(expected))
        with db.using_prefetched(admission.reads):
            self.assertEqual(expected, db.prefetched(
                self.store.engine, _POLICY_ROW, {"p": POLICY}))
            # Once: the same read again goes to the database.
            self.assertIsNone(db.prefetched(self.store.engine, _POLICY_ROW,
                                            {"p": POLICY}))
            # A query with no row has its (empty) answer too.
            self.assertEqual([], db.prefetched(
                self.store.engine, _POLICY_ROW,
                {"p": "00000000-0000-4000-8000-000000000000"}))
        # Outside the request: nothing.
        self.assertIsNone(db.prefetched(self.store.engine, _POLICY_ROW,
                                        {"p": POLICY}))

    def test_nothing_read_for_a_refusal_or_another_engine(self) -> None:
        self.store.create_policy(POLICY, "project", {"tee": "amd-sev-snp"})
        self._meta({"tee_policy": POLICY})
        url, conf = test_process_engine.scratch_sqlite(self)
        elsewhere = db.make_engine(url, conf)
        self.addCleanup(elsewhere.dispose)
        admission = self.store.admit_release(
            "client:a", 1, 10, SECRET, "d" * 64, 100,
            reads=(self._read(engine=elsewhere),))
        self.assertTrue(admission.spent)
        self.assertEqual({}, dict(admission.reads))
        # The same nonce again (not spent), no nonce, over the limit.
        for args in (("d" * 64, 100), (None, 0)):
            self.assertEqual({}, dict(self.store.admit_release(
                "client:a", 1, 10, SECRET, *args,
                reads=(self._read(),)).reads))
        self.assertEqual({}, dict(self.store.admit_release(
            "client:a", 1, 1, SECRET, "e" * 64, 100,
            reads=(self._read(),)).reads))

    def test_a_failing_read_ahead_costs_the_admission_nothing(self) -> None:
        self.store.create_policy(POLICY, "project", {"tee": "amd-sev-snp"})
        self._meta({"tee_policy": POLICY})
        gone = sa.Table("tee_no_such_table", sa.MetaData(),
                        sa.Column("id", sa.String(36)))
        broken = db.Read.of(self.store.engine, gone.select().where(
            gone.c.id == sa.bindparam("p")), {"p": POLICY})
        admission = self.store.admit_release(
            "client:a", 1, 10, SECRET, "d" * 64, 100,
            reads=(self._read(), broken))
        # Spent and committed, the record read; no answer kept (each read
        # is made again when needed, with its own error).
        self.assertTrue(admission.spent)
        self.assertEqual({"tee_policy": POLICY}, admission.meta)
        self.assertEqual({}, dict(admission.reads))
        self.assertEqual(1, self._spent())
        self.assertFalse(self.store.admit_release(
            "client:a", 1, 10, SECRET, "d" * 64, 100).spent)

    def test_a_read_not_for_the_driver_path_is_left_to_its_step(
            self) -> None:
        self.store.create_policy(POLICY, "project", {"tee": "amd-sev-snp"})
        self._meta({"tee_policy": POLICY})
        # A datetime parameter: sqlite's driver takes it only as
        # SQLAlchemy converts it.
        by_time = db.Read.of(self.store.engine, db.POLICIES.select().where(
            db.POLICIES.c.created_at < sa.bindparam("t", type_=sa.DateTime)),
            {"t": datetime.datetime(2100, 1, 1)})
        admission = self.store.admit_release(
            "client:a", 1, 10, SECRET, "d" * 64, 100,
            reads=(self._read(), by_time))
        self.assertTrue(admission.spent)
        self.assertEqual({}, dict(admission.reads))
        # Positive control: without it, the other read is answered.
        self.assertEqual([self._read().key], list(self.store.admit_release(
            "client:a", 1, 10, SECRET, "e" * 64, 100,
            reads=(self._read(),)).reads))

    def test_answers_end_with_the_request_even_on_error(self) -> None:
        read = self._read()
        with self.assertRaises(RuntimeError):
            with db.using_prefetched({read.key: (read, [])}):
                raise RuntimeError("the release failed")
        self.assertIsNone(db.prefetched(self.store.engine, _POLICY_ROW,
                                        {"p": POLICY}))


_POLICY_ROW = db.POLICIES.select().where(
    db.POLICIES.c.id == sa.bindparam("p"))


class LightBeginTest(base.TestCase):
    """The request path's sqlite engine emits BEGIN itself (not oslo.db)."""

    def setUp(self) -> None:
        super().setUp()
        url, conf = test_process_engine.scratch_sqlite(self)
        self.engine = db.process_engine(url, conf)
        migrations.upgrade(self.engine)

    def _rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(db.RATES)).scalar())

    def test_oslo_db_listener_replaced(self) -> None:
        names = [getattr(f, "__name__", "")
                 for f in self.engine.dispatch.begin]
        self.assertEqual(["_sqlite_begin"], names)

    def test_transactions_stay_whole(self) -> None:
        statements: list[str] = []

        @sa.event.listens_for(self.engine, "checkout")
        def trace(dbapi_conn: object, _rec: object, _proxy: object) -> None:
            dbapi_conn.set_trace_callback(  # type: ignore[attr-defined]
                statements.append)

        for _ in range(2):
            with self.assertRaises(ZeroDivisionError):
                with self.engine.begin() as conn:
                    conn.execute(db.RATES.insert().values(
                        bucket="b", window=1, count=1))
                    1 / 0  # noqa: B018
            self.assertEqual(0, self._rows())
        self.assertIn("BEGIN", statements)
        # Positive control: the same insert, committed, is there.
        with self.engine.begin() as conn:
            conn.execute(db.RATES.insert().values(bucket="b", window=1,
                                                  count=1))
        self.assertEqual(1, self._rows())



class StoredPolicyTest(base.TestCase):
    """Policy.from_stored: a usual document parsed once, a long one every
    time, both to the same Policy as a fresh parse.
    """

    def test_cached_only_up_to_the_limit(self) -> None:
        def document(count: int) -> str:
            return json.dumps({"tee": "amd-sev-snp", "measurements": [
                hashlib.sha384(str(i).encode()).hexdigest()
                for i in range(count)]}, sort_keys=True)

        short, long = document(2), document(200)
        self.assertLessEqual(len(short), policy_mod.STORED_CACHED_MAX)
        self.assertGreater(len(long), policy_mod.STORED_CACHED_MAX)
        policy_mod._parsed_stored.cache_clear()
        for text in (short, long):
            first = policy_mod.Policy.from_stored(text)
            self.assertEqual(policy_mod.Policy.from_dict(json.loads(text)),
                             first)
            again = policy_mod.Policy.from_stored(text)
            if text is short:
                self.assertIs(first, again)
            else:
                self.assertIsNot(first, again)
                self.assertEqual(first, again)
        self.assertEqual(1, policy_mod._parsed_stored.cache_info().currsize)
