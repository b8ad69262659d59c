"""A real barbican-api (Barbican 23.0.0) under gunicorn, for tests."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import os
import secrets
import shutil
import signal
import tempfile
from typing import Any

import fixtures
import sqlalchemy as sa

from barbican_tee import server
from tests.functional.barbican import db_template

# Which database the functional servers use: sqlite (the default, a file in
# the server's data directory), mysql (MariaDB) or postgresql, the latter
# two on the servers tools/with-databases.sh starts.
ENV_DB = "TEE_FUNCTIONAL_DB"
DB_KINDS = ("sqlite", "mysql", "postgresql")
ENV_URLS = {"mysql": "TEE_TEST_MYSQL_URL",
            "postgresql": "TEE_TEST_POSTGRESQL_URL"}


def db_kind() -> str:
    """The database kind the functional suite runs on (``ENV_DB``)."""
    kind = os.environ.get(ENV_DB) or "sqlite"
    if kind not in DB_KINDS:
        raise ValueError(f"{ENV_DB}={kind!r}: not one of {DB_KINDS}")
    return kind


def admin_url(kind: str) -> sa.URL:
    """The URL tools/with-databases.sh gives for ``kind``; fails if unset.

    Not a skip: a run that asked for a database and did not get one must
    not pass.
    """
    value = os.environ.get(ENV_URLS[kind])
    if not value:
        raise RuntimeError(
            f"{ENV_DB}={kind} needs {ENV_URLS[kind]}: run the tests under "
            "tools/with-databases.sh")
    return sa.make_url(value)


class Database(fixtures.Fixture):
    """A new database of ``kind`` with a random name, dropped after.

    ``url`` is its SQLAlchemy URL; ``query`` adds connection arguments
    (say a MariaDB ``init_command``). For sqlite, ``url`` is None: each
    server makes its own file.

    Empty, unless ``migrated``: then a copy of this process's template
    (:mod:`db_template`), which the real upgrade commands and a preflight
    with ``stores`` made, so a server on it runs neither again. On
    PostgreSQL the template has the install guide's workaround for
    Barbican's own bug there, unless ``postgresql_workaround`` is False
    (for the test that shows the bug).
    """

    def __init__(self, kind: str | None = None,
                 query: Mapping[str, str] | None = None,
                 migrated: bool = False,
                 stores: Sequence[server.Store] = server.DEFAULT_STORES,
                 postgresql_workaround: bool = True) -> None:
        super().__init__()
        self.kind = kind or db_kind()
        self.query = dict(query or {})
        self.migrated = migrated
        self.stores = tuple(stores)
        self.postgresql_workaround = postgresql_workaround
        self.url: str | None = None
        self.name: str | None = None

    def _setUp(self) -> None:
        if self.kind == "sqlite":
            return
        admin = admin_url(self.kind)
        self.name = "tee_" + secrets.token_hex(8)
        create = f"CREATE DATABASE {self.name}"
        if self.kind == "mysql":
            create += " CHARACTER SET utf8mb4"
        if self.migrated:
            template = db_template.get(
                self.kind, self.stores, self._new_empty,
                postgresql_workaround=self.postgresql_workaround)
            self.addCleanup(self._drop, admin)
            db_template.create_copy(template, admin, self.name, create)
        else:
            self._execute(admin, create)
            self.addCleanup(self._drop, admin)
        self.url = admin.set(
            database=self.name,
            query={**admin.query, **self.query}).render_as_string(
            hide_password=False)
        if self.migrated:
            db_template.register(self.url, self.stores)
            self.addCleanup(db_template.forget, self.url)

    def _new_empty(self) -> tuple[str, Callable[[], None]]:
        empty = Database(self.kind)
        empty.setUp()
        assert empty.url is not None
        return empty.url, empty.cleanUp

    def _drop(self, admin: sa.URL) -> None:
        drop = f"DROP DATABASE IF EXISTS {self.name}"
        if self.kind == "postgresql":
            drop += " WITH (FORCE)"
        self._execute(admin, drop)

    @staticmethod
    def _execute(admin: sa.URL, statement: str) -> None:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT",
                                  poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(statement))
        finally:
            engine.dispose()


def _no_server() -> tuple[str, Callable[[], None]]:
    raise AssertionError("sqlite needs no database server")


class BarbicanServer(fixtures.Fixture):
    """gunicorn + barbican-api on sqlite in a temporary directory.

    ``paste_filters`` is the /v1 pipeline (default: the full one, with the
    ``tee_api`` filter); ``stores`` the secret store backends (default:
    store_crypto + simple_crypto, and tee_sealed); ``extra_conf`` extra
    ``barbican.conf`` options, ``{section: {option: value}}``. With
    ``preflight`` the app is built once before gunicorn starts; without,
    a failure shows up as gunicorn exiting. By default (None) it runs
    unless the database is a template copy (see below): its secret store
    rows are there already, and each worker checks the plugins again.

    Startup failures raise :class:`barbican_tee.server.ServerError` (the
    plugin check's :class:`~barbican_tee.server.PluginLoadError` message
    included) from ``setUp``.

    The database is the one ``TEE_FUNCTIONAL_DB`` names (see
    :func:`db_kind`): a fresh one per server, dropped at cleanup, unless
    ``db_url`` (say another server's, to share it) or a ``[database]
    connection`` in ``extra_conf`` names one. A fresh one is a copy of a
    template that ``barbican-manage db upgrade``, ``openstack-tee db
    upgrade`` and the preflight made once in this process
    (:mod:`db_template`); a named one is upgraded, unless it is such a
    copy (:class:`Database` ``migrated``). A second API node of the same
    deployment also needs the first one's keys: ``keys_from`` is that
    server's data directory.

    On PostgreSQL, Barbican 23.0.0 itself cannot read its secrets back
    (it stores bytes in text columns): every database the fixture upgrades
    or copies gets the install guide's workaround after ``barbican-manage
    db upgrade``, as an operator applies it
    (:func:`db_template.apply_postgresql_workaround`), unless
    ``postgresql_workaround`` is False: Barbican as it is, bug included.
    """

    def __init__(self, workers: int = 2,
                 extra_conf: Mapping[str, Mapping[str, str]] | None = None,
                 paste_filters: Sequence[str] = server.DEFAULT_PIPELINE,
                 stores: Sequence[server.Store] = server.DEFAULT_STORES,
                 trust_root: str | None = None,
                 preflight: bool | None = None,
                 db_url: str | None = None,
                 keys_from: str | None = None,
                 postgresql_workaround: bool = True) -> None:
        super().__init__()
        self.postgresql_workaround = postgresql_workaround
        self.db_url = db_url
        self.keys_from = keys_from
        self.workers = workers
        self.extra_conf = extra_conf
        self.paste_filters = tuple(paste_filters)
        self.stores = tuple(stores)
        self.trust_root = trust_root
        self.preflight = preflight
        self.server: server.Server | None = None

    def setUp(self) -> None:
        # fixtures wraps a failing _setUp in MultipleExceptions (with a
        # SetupError): give callers the ServerError and its message.
        try:
            super().setUp()
        except fixtures.MultipleExceptions as exc:
            first = exc.args[0][1]
            # A template that failed to build: one level further down.
            while isinstance(first, fixtures.MultipleExceptions):
                first = first.args[0][1]
            if isinstance(first, server.ServerError):
                raise first from None
            raise

    def _setUp(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="openstack-tee-barbican-")
        self.addCleanup(shutil.rmtree, self.data_dir, ignore_errors=True)
        self.port = server.free_port()
        if self.keys_from:
            for name in (server.TEE_KEK_NAME, server.SIMPLE_KEK_NAME):
                shutil.copy2(os.path.join(self.keys_from, name),
                             os.path.join(self.data_dir, name))
        fresh = server.database_url(self.db_url, self.extra_conf) is None
        kind = db_kind()
        # Without a preflight, gunicorn's workers must be the first to
        # build the app (the template's preflight would be): no template.
        copy = fresh and self.preflight is not False
        if fresh and kind != "sqlite":
            self.db_url = self.useFixture(Database(
                kind, migrated=copy, stores=self.stores,
                postgresql_workaround=self.postgresql_workaround)).url
        self.layout = server.write_config(
            self.data_dir, self.port, stores=self.stores,
            pipeline=self.paste_filters, trust_root=self.trust_root,
            extra_conf=self.extra_conf, db_url=self.db_url)
        if copy and kind == "sqlite":
            db_template.copy_sqlite(
                db_template.get(kind, self.stores, _no_server),
                self.layout.db_path)
            db_template.register(self.layout.db_url, self.stores)
            self.addCleanup(db_template.forget, self.layout.db_url)
        at_head = db_template.at_head(self.layout.db_url, self.stores)
        if not at_head:
            server.db_upgrade(self.layout)
            if (self.postgresql_workaround
                    and self.layout.db_url.startswith("postgresql")):
                db_template.apply_postgresql_workaround(self.layout.db_url)
        if self.preflight or (self.preflight is None and not at_head):
            server.preflight(self.layout)
        self.server = server.Server(self.layout, self.port, self.workers)
        self.addCleanup(self.server.stop)
        self.server.start()

    @property
    def _srv(self) -> server.Server:
        assert self.server is not None, "BarbicanServer is not set up"
        return self.server

    @property
    def url(self) -> str:
        return self._srv.url

    @property
    def pid(self) -> int | None:
        return self._srv.pid

    @property
    def conf_path(self) -> str:
        return self.layout.conf_path

    @property
    def log_path(self) -> str:
        return self.layout.log_path

    def sql(self, statement: str,
            params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One SQL statement on the server's database, committed.

        What an attacker with database access does, on whichever database
        the server uses (``:name`` parameters); the rows, if any.
        """
        engine = sa.create_engine(self.layout.db_url,
                                  poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(statement), dict(params or {}))
                if not result.returns_rows:
                    return []
                return [dict(r) for r in result.mappings().all()]
        finally:
            engine.dispose()

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert ``row`` (as :meth:`sql` read it) into ``table``.

        Column names are quoted as the database needs (``key`` is reserved
        in MariaDB); values go to the driver untyped, as they came.
        """
        engine = sa.create_engine(self.layout.db_url,
                                  poolclass=sa.pool.NullPool)
        try:
            target = sa.table(table, *(sa.column(k) for k in row))
            with engine.begin() as conn:
                conn.execute(sa.insert(target).values(**row))
        finally:
            engine.dispose()

    def table_names(self) -> list[str]:
        """The tables of the server's database."""
        engine = sa.create_engine(self.layout.db_url,
                                  poolclass=sa.pool.NullPool)
        try:
            return sorted(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to gunicorn's master and workers (our process group)."""
        self._srv.kill(sig)

    def restart(self) -> None:
        """Stop (if still running) and start again on the same port."""
        self._srv.stop()
        self._srv.start()

    def headers(self, project: str, roles: str = "member",
                user: str = "user") -> dict[str, str]:
        """The headers that stand for a token (no Keystone here)."""
        return {"X-Project-Id": project, "X-Roles": roles,
                "X-User-Id": user}
