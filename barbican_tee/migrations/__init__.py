"""Schema migrations of the suite's tables (alembic).

The tables live in Barbican's own database, next to Barbican's tables and
Barbican's ``alembic_version``; the suite keeps its revision in its own
version table, :data:`VERSION_TABLE`, and never reads or writes
Barbican's. Operators run ``openstack-tee db upgrade`` after
``barbican-manage db upgrade``; barbican-api refuses to start with the
suite's filters until the schema is at :func:`head` (:func:`check`).
Nothing creates or alters a table on the request path.

A database whose tables were created without migrations (by ``create_all``
in the workers of a build before migrations existed) has no version
table: :func:`upgrade` recognises it by its tables and their columns (see
:mod:`barbican_tee.migrations.history`), creates the tables those builds
would have created too, stamps it at the matching revision and upgrades it
from there. A database it does not recognise is refused, untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import dataclasses
import hashlib
import os
from typing import Any

from alembic import command
from alembic import config as alembic_config
from alembic.runtime import migration
from alembic import script as alembic_script
import sqlalchemy as sa

from barbican_tee.migrations import history

VERSION_TABLE = "tee_alembic_version"
# The revisions a database without a version table is stamped at.
FIRST_RELEASE = "tee0001"
BEFORE_MIGRATIONS = "tee0002"
# Every build before migrations created these two.
_ALWAYS_CREATED = frozenset({"tee_policies", "tee_rates"})

UPGRADE_HINT = ("run `openstack-tee db upgrade --config-file "
                "/etc/barbican/barbican.conf` (after `barbican-manage db "
                "upgrade`), then start barbican-api again")


# How long `openstack-tee db upgrade` waits for another one to finish.
DEFAULT_LOCK_TIMEOUT = 300.0
# PostgreSQL's advisory lock (a lock of this database: PostgreSQL scopes
# advisory locks by database) and MariaDB/MySQL's named lock (server-wide:
# see _mysql_lock_name) that upgrades hold from reading the schema to
# committing it.
PG_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"openstack-tee db upgrade").digest()[:8], "big",
    signed=True)
_MYSQL_LOCK_PREFIX = "openstack-tee-upgrade-"


class SchemaError(RuntimeError):
    """The suite's tables are not at the schema this release needs."""


class UpgradeLocked(SchemaError):
    """Another upgrade held the database's upgrade lock too long."""


def _config() -> alembic_config.Config:
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", os.path.dirname(__file__))
    return cfg


def _script() -> alembic_script.ScriptDirectory:
    return alembic_script.ScriptDirectory.from_config(_config())


def head() -> str:
    """The revision this release's code needs."""
    rev = _script().get_current_head()
    assert rev is not None
    return rev


def revisions() -> list[str]:
    """Every known revision, oldest first."""
    return [s.revision for s in reversed(list(_script().walk_revisions()))]


@dataclasses.dataclass(frozen=True)
class State:
    """Where a database stands."""

    # The version table's revision; None without one (or with it empty).
    revision: str | None
    # The suite's tables other than the version table.
    tables: frozenset[str]
    head: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    @property
    def before_migrations(self) -> bool:
        """Tables created by a build before migrations (no revision)."""
        return self.revision is None and bool(self.tables)

    def describe(self) -> str:
        if self.at_head:
            return f"at revision {self.revision} (head)"
        if self.revision is not None:
            return (f"at revision {self.revision}; this release needs "
                    f"{self.head}")
        if self.tables:
            return ("created by an earlier release, without migrations "
                    f"(no {VERSION_TABLE} table); this release needs "
                    f"revision {self.head}")
        return ("not created yet (no openstack-tee tables); this release "
                f"needs revision {self.head}")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic's filter: only the suite's tables, not the version table.

    Barbican's tables share the database and are none of our business.
    """
    if type_ == "table":
        return bool(name and name.startswith("tee_")
                    and name != VERSION_TABLE)
    return True


def drift(conn: sa.Connection) -> list[Any]:
    """alembic's differences between the models and the database.

    Empty when the tables in the database are what
    :mod:`barbican_tee.api.db` declares (both of its MetaData).
    """
    from alembic import autogenerate

    from barbican_tee.api import db

    context = migration.MigrationContext.configure(conn, opts={
        "include_name": include_name, "compare_type": True,
        "version_table": VERSION_TABLE})
    return list(autogenerate.compare_metadata(
        context, [db.METADATA, db.LEGACY_METADATA]))  # type: ignore[arg-type]


def _suite_tables(conn: sa.Connection) -> frozenset[str]:
    names = sa.inspect(conn).get_table_names()
    return frozenset(n for n in names
                     if n.startswith("tee_") and n != VERSION_TABLE)


def state(conn: sa.Connection) -> State:
    """The database's :class:`State`; :class:`SchemaError` if unknown."""
    context = migration.MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"{VERSION_TABLE} holds several revisions "
                          f"({', '.join(heads)}); openstack-tee's "
                          "revisions form one line")
    revision = heads[0] if heads else None
    if revision is not None and revision not in revisions():
        raise SchemaError(
            f"openstack-tee's tables are at revision {revision!r}, which "
            "this release of openstack-tee does not know (upgraded by a "
            "newer release?); nothing was changed")
    return State(revision, _suite_tables(conn), head())


def check(engine: sa.Engine) -> State:
    """The state, if at head; else :class:`SchemaError` naming the fix."""
    with engine.connect() as conn:
        st = state(conn)
    if not st.at_head:
        raise SchemaError(f"openstack-tee's database tables are "
                          f"{st.describe()}: {UPGRADE_HINT}")
    return st


def _recognise(conn: sa.Connection, tables: frozenset[str]) -> str:
    """The revision tables created before migrations correspond to.

    Creates the tables of that revision that are missing (builds created
    different subsets; every missing one is empty by definition). Raises
    :class:`SchemaError`, changing nothing, unless every table is one an
    earlier build created, with exactly its columns.
    """
    unknown = sorted(tables - history.BEFORE_MIGRATIONS.keys())
    if unknown:
        raise SchemaError(
            f"tables {', '.join(unknown)} are not tables any openstack-tee "
            f"release created, and there is no {VERSION_TABLE} table: not "
            "upgrading a database it does not recognise; nothing was "
            "changed")
    inspector = sa.inspect(conn)
    for name in sorted(tables):
        found = {c["name"] for c in inspector.get_columns(name)}
        expected = {c.name for c in history.table(name).columns}
        if found != expected:
            raise SchemaError(
                f"table {name} has columns {', '.join(sorted(found))}; "
                "the openstack-tee release that created it had "
                f"{', '.join(sorted(expected))}: not upgrading a database "
                "it does not recognise; nothing was changed")
    if not _ALWAYS_CREATED <= tables:
        raise SchemaError(
            f"tables {', '.join(sorted(_ALWAYS_CREATED - tables))} are "
            f"missing (every earlier release created them) and there is "
            f"no {VERSION_TABLE} table: not upgrading a database it does "
            "not recognise; nothing was changed")
    if tables <= history.FIRST_RELEASE.keys():
        revision, expected_tables = FIRST_RELEASE, history.FIRST_RELEASE
    else:
        revision, expected_tables = (BEFORE_MIGRATIONS,
                                     history.BEFORE_MIGRATIONS)
    md = sa.MetaData()
    for name in sorted(expected_tables.keys() - tables):
        history.table(name, md)
    md.create_all(conn)
    return revision


@dataclasses.dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did."""

    before: State
    # The revision a database created without migrations was stamped at.
    stamped: str | None
    after: str

    def describe(self) -> str:
        if self.before.revision == self.after:
            return f"openstack-tee tables already at revision {self.after}"
        if self.stamped is not None:
            return ("openstack-tee tables created by an earlier release "
                    f"recognised as revision {self.stamped}, upgraded to "
                    f"{self.after}")
        start = self.before.revision or "an empty schema"
        return f"openstack-tee tables upgraded from {start} to {self.after}"


def _mysql_lock_name(conn: sa.Connection) -> str:
    """The named lock of this database (GET_LOCK names are server-wide).

    At most 64 characters, as MySQL requires.
    """
    database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
    digest = hashlib.sha256(str(database).encode()).hexdigest()
    return _MYSQL_LOCK_PREFIX + digest[:32]


def _locked(what: str, timeout: float) -> UpgradeLocked:
    return UpgradeLocked(
        f"another `openstack-tee db upgrade` has held this database's "
        f"upgrade lock ({what}) for more than {timeout:g} s; nothing was "
        "changed. Let it finish, then run this one again: it will find "
        "the tables at the release's schema and do nothing (or wait "
        "longer with --lock-timeout)")


def _is_lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL's lock_not_available (55P03), however oslo.db wraps it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "pgcode", None) == "55P03":
            return True
        orig = getattr(current, "orig", None)
        if orig is not None and getattr(orig, "pgcode", None) == "55P03":
            return True
        current = current.__cause__ or getattr(current, "inner_exception",
                                               None)
    return False


@contextlib.contextmanager
def _server_lock(conn: sa.Connection, timeout: float) -> Iterator[None]:
    """PostgreSQL/MariaDB: the upgrade lock of ``conn``'s session.

    Taken (waiting up to ``timeout`` s, else :class:`UpgradeLocked`) and
    held across transactions: on MariaDB each DDL statement commits. A
    session that ends (process killed, connection lost) releases it.
    sqlite has no such lock: :func:`upgrade` takes its write lock instead.
    """
    kind = conn.dialect.name
    if kind == "postgresql":
        try:
            conn.execute(sa.text("SELECT set_config('lock_timeout', :t, "
                                 "true)"), {"t": str(_ms(timeout))})
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"),
                         {"k": PG_LOCK_KEY})
        except Exception as exc:
            conn.rollback()
            if _is_lock_timeout(exc):
                raise _locked(f"PostgreSQL advisory lock {PG_LOCK_KEY}",
                              timeout) from None
            raise
        conn.commit()
        release = sa.text("SELECT pg_advisory_unlock(:k)")
        params: dict[str, Any] = {"k": PG_LOCK_KEY}
    elif kind in ("mysql", "mariadb"):
        name = _mysql_lock_name(conn)
        got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"),
                           {"n": name, "t": timeout}).scalar()
        conn.commit()
        if got != 1:
            raise _locked(f"GET_LOCK('{name}')", timeout)
        release = sa.text("SELECT RELEASE_LOCK(:n)")
        params = {"n": name}
    else:
        yield
        return
    try:
        yield
    finally:
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(release, params)
            conn.commit()
        except Exception:  # noqa: BLE001 - the upgrade's error matters
            # The session may still hold the lock: end it.
            conn.invalidate()


@contextlib.contextmanager
def _sqlite_busy_timeout(conn: sa.Connection, timeout: float
                         ) -> Iterator[None]:
    """sqlite: wait up to ``timeout`` s for a lock, on this connection."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {_ms(timeout)}")
    conn.commit()
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {before}")
        conn.commit()


def _sqlite_write_lock(conn: sa.Connection, timeout: float) -> None:
    """sqlite: take the database's write lock as the transaction begins.

    BEGIN EXCLUSIVE (under WAL, other connections may still read), waiting
    up to ``timeout`` s for another writer, else :class:`UpgradeLocked`.
    """
    try:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
    except sa.exc.OperationalError as exc:
        if "locked" in str(exc.orig):
            raise _locked("sqlite's write lock", timeout) from None
        raise


@contextlib.contextmanager
def _transaction(conn: sa.Connection, timeout: float) -> Iterator[None]:
    """The upgrade's transaction; on sqlite, under its write lock."""
    if conn.dialect.name != "sqlite":
        with conn.begin():
            yield
        return
    # oslo.db's engines emit a plain (deferred) BEGIN as a transaction
    # begins, unless this marker says one is open: BEGIN EXCLUSIVE instead.
    conn.info["in_transaction"] = True
    try:
        with conn.begin():
            _sqlite_write_lock(conn, timeout)
            yield
    finally:
        conn.info.pop("in_transaction", None)


def _ms(timeout: float) -> int:
    # 0 would mean "no wait" on sqlite but "forever" on PostgreSQL.
    return max(1, int(timeout * 1000))


def upgrade(engine: sa.Engine, revision: str = "head",
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Upgrade:
    """Bring the suite's tables to :func:`head`, keeping their rows.

    ``revision``, an earlier one, is for tests of the revisions.

    Under the database's upgrade lock, from reading where the schema
    stands to committing it: a concurrent upgrade (another host, a
    config-management run) waits up to ``lock_timeout`` s for this one,
    then finds the tables at head and does nothing, or gives up with
    :class:`UpgradeLocked`. PostgreSQL: a session advisory lock
    (:data:`PG_LOCK_KEY`); MariaDB/MySQL: ``GET_LOCK``; sqlite: ``BEGIN
    EXCLUSIVE``. One transaction where the database has transactional DDL
    (PostgreSQL, sqlite); MariaDB commits each DDL statement.
    """
    with (engine.connect() as conn, _server_lock(conn, lock_timeout),
          _sqlite_busy_timeout(conn, lock_timeout)):
        with _transaction(conn, lock_timeout):
            before = state(conn)
            stamped = None
            cfg = _config()
            cfg.attributes["connection"] = conn
            if before.before_migrations:
                stamped = _recognise(conn, before.tables)
                command.stamp(cfg, stamped)
            if not before.at_head:
                command.upgrade(cfg, revision)
            after = state(conn)
    assert after.revision is not None
    return Upgrade(before, stamped, after.revision)
