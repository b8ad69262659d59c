"""This process's engine (barbican_tee.api.db.process_engine): one per
database URL, shared by the /v1/tee filters; a forked child opens its own
connections."""

from __future__ import annotations

import os
import shutil
import tempfile

from oslo_config import cfg
from oslo_db import options as db_options
import sqlalchemy as sa

from barbican_tee.api import db
from tests import base


def forget(url: str) -> None:
    """Drop this process's engine on ``url`` (a test's own database)."""
    engine = db._ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


def scratch_sqlite(test: base.TestCase) -> tuple[str, cfg.ConfigOpts]:
    """A new sqlite database's URL, and a configuration that names it."""
    tmp = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
    url = f"sqlite:///{os.path.join(tmp, 'barbican.sqlite')}"
    conf = cfg.ConfigOpts()
    conf.register_opts(db_options.database_opts, group="database")
    conf.set_override("connection", url, group="database")
    test.addCleanup(forget, url)
    return url, conf


class ProcessEngineTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.url, self.conf = scratch_sqlite(self)

    def test_one_engine_per_url(self) -> None:
        engine = db.process_engine(self.url, self.conf)
        self.assertIs(engine, db.process_engine(self.url, self.conf))
        other = self.url + ".other"
        self.addCleanup(forget, other)
        self.assertIsNot(engine, db.process_engine(other, self.conf))

    def test_a_forked_child_does_not_use_the_parents_connections(
            self) -> None:
        # A pooling engine, as on MariaDB and PostgreSQL (oslo.db gives a
        # sqlite file no pool).
        engine = sa.create_engine(self.url, poolclass=sa.pool.QueuePool)
        db._ENGINES[self.url] = engine
        self.assertIs(engine, db.process_engine(self.url, self.conf))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            parents = conn.connection.dbapi_connection
        pool = engine.pool
        self.assertEqual(1, pool.checkedin())  # type: ignore[attr-defined]
        # What os.fork() runs in the child (os.register_at_fork).
        db._forget_parent_connections()
        self.assertIsNot(pool, engine.pool)
        with engine.connect() as conn:
            self.assertIsNot(parents, conn.connection.dbapi_connection)
        # Not closed: the parent still has it in its pool.
        assert parents is not None
        parents.execute("SELECT 1")

    def test_a_real_fork(self) -> None:
        engine = db.process_engine(self.url, self.conf)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        pool = engine.pool
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether its pool is new, and go
            try:
                os.write(write, b"new" if engine.pool is not pool
                         else b"old")
            finally:
                os._exit(0)
        os.close(write)
        self.addCleanup(os.close, read)
        self.assertEqual(0, os.waitpid(pid, 0)[1])
        self.assertEqual(b"new", os.read(read, 3))
        self.assertIs(pool, engine.pool)  # the parent keeps its own
