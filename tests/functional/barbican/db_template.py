"""Migrated template databases: each server's database is a copy of one.

A new barbican-api's database is what ``barbican-manage db upgrade``,
``openstack-tee db upgrade`` and the preflight (which adds Barbican's
secret store rows) leave. Those real commands run once per test process,
database kind and set of stores, on a template database; each server then
gets a copy of it instead of running them again (some 10 s of CPU a
server on this machine):

* sqlite: the file, copied with sqlite's backup API;
* PostgreSQL: ``CREATE DATABASE ... TEMPLATE``;
* MariaDB (which has no templates): the template's own ``SHOW CREATE
  TABLE`` statements, then its rows (the version tables, the secret
  stores), ``INSERT ... SELECT`` on the same server.

On PostgreSQL, the template also gets the install guide's workaround for
Barbican 23.0.0's own bug there (it stores bytes in text columns, so a
project's second secret, and every secret read back, fails): the same
file, ``barbican_tee/etc/postgresql-kek-data.sql``, run with ``psql`` after
``barbican-manage db upgrade``, as an operator runs it (see
:func:`apply_postgresql_workaround`). Templates without it exist too, for
the test that shows the bug (``postgresql_workaround=False``).

The migrations themselves are tested from empty and from the first
released schema by test_migrations.py and test_schema_startup.py, on
databases of their own; ``openstack-tee serve`` always runs them.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from collections.abc import Sequence
import contextlib
import dataclasses
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading

import sqlalchemy as sa

from barbican_tee import server


@dataclasses.dataclass
class Template:
    """One migrated database to copy; ``name`` None for sqlite."""

    kind: str
    stores: tuple[server.Store, ...]
    # PostgreSQL: the install guide's workaround applied (always False on
    # the others, which do not need it).
    postgresql_workaround: bool = False
    sqlite_path: str | None = None
    name: str | None = None
    # MariaDB: CREATE TABLE statements, and the tables that have rows.
    ddl: list[str] = dataclasses.field(default_factory=list)
    filled: list[str] = dataclasses.field(default_factory=list)


_TEMPLATES: dict[tuple[str, tuple[server.Store, ...], bool], Template] = {}
_LOCK = threading.Lock()

# Databases (their URLs) made from a template in this process, with the
# stores whose rows they hold: a server on one of them needs no upgrade
# and no preflight.
_AT_HEAD: dict[str, tuple[server.Store, ...]] = {}


def register(url: str, stores: Sequence[server.Store]) -> None:
    _AT_HEAD[url] = tuple(stores)


def forget(url: str) -> None:
    _AT_HEAD.pop(url, None)


def at_head(url: str, stores: Sequence[server.Store]) -> bool:
    """Whether ``url`` is a template copy with rows for ``stores``."""
    return _AT_HEAD.get(url) == tuple(stores)


def get(kind: str, stores: Sequence[server.Store],
        new_database: Callable[[], tuple[str, Callable[[], None]]],
        postgresql_workaround: bool = True) -> Template:
    """This process's template of ``kind`` for ``stores``, made once.

    ``new_database()`` makes an empty database of ``kind`` (not called for
    sqlite): its URL and a function that drops it. On PostgreSQL,
    ``postgresql_workaround`` says whether the install guide's workaround
    is applied (:func:`apply_postgresql_workaround`).
    """
    workaround = postgresql_workaround and kind == "postgresql"
    key = (kind, tuple(stores), workaround)
    with _LOCK:
        if key not in _TEMPLATES:
            _TEMPLATES[key] = _build(kind, tuple(stores), new_database,
                                     workaround)
        return _TEMPLATES[key]


# The install guide's workaround for Barbican 23.0.0 on PostgreSQL
# (doc/source/install.rst, "Known issue: Barbican's own secrets on
# PostgreSQL"): the file the guide includes and tells operators to run.
POSTGRESQL_WORKAROUND = server.POSTGRESQL_WORKAROUND


def _psql() -> str:
    found = shutil.which("psql") or next(iter(sorted(glob.glob(
        "/usr/lib/postgresql/*/bin/psql"), reverse=True)), None)
    if not found:
        raise server.ServerError(
            "psql not found: the PostgreSQL client (Debian: "
            "postgresql-client, tools/install-deps.sh) is needed for the "
            "install guide's workaround")
    return found


def apply_postgresql_workaround(url: str) -> None:
    """The install guide's workaround on the PostgreSQL database ``url``.

    As the guide says, after ``barbican-manage db upgrade`` (the tables
    must exist): ``psql -v ON_ERROR_STOP=1 -d DATABASE -f
    postgresql-kek-data.sql``, the same file. Idempotent, as the guide
    wants it (run again after a restore).
    """
    target = sa.make_url(url)
    env = dict(os.environ)
    env.update({"PGHOST": target.host or "", "PGPORT": str(target.port or
                                                           5432),
                "PGUSER": target.username or "",
                "PGPASSWORD": target.password or ""})
    proc = subprocess.run(  # noqa: S603 - psql, the guide's own command
        [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
         target.database or "", "-f", POSTGRESQL_WORKAROUND],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode:
        raise server.ServerError(
            f"psql -f postgresql-kek-data.sql failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}")


def _build(kind: str, stores: tuple[server.Store, ...],
           new_database: Callable[[], tuple[str, Callable[[], None]]],
           postgresql_workaround: bool) -> Template:
    # In the system's temporary directory, not tempfile's current one:
    # oslotest's NestedTempfile points that at the running test's own
    # directory, removed when the test ends, and the template outlives it.
    tmp = tempfile.mkdtemp(prefix="openstack-tee-template-",
                           dir=os.environ.get("TMPDIR") or "/tmp")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    url = None
    if kind != "sqlite":
        url, drop = new_database()
        atexit.register(_quietly, drop)
    # The real commands, as for any server: barbican-manage db upgrade,
    # openstack-tee db upgrade, (PostgreSQL) the install guide's
    # workaround, the preflight; what server.prepare() does, and the
    # workaround where an operator runs it.
    layout = server.write_config(tmp, server.free_port(), stores=stores,
                                 db_url=url)
    server.db_upgrade(layout)
    if postgresql_workaround:
        assert url is not None
        apply_postgresql_workaround(url)
    server.preflight(layout)
    if kind == "sqlite":
        return Template(kind, stores, sqlite_path=layout.db_path)
    assert url is not None
    name = sa.make_url(url).database
    template = Template(kind, stores, name=name,
                        postgresql_workaround=postgresql_workaround)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if kind == "mysql":
                _read_mysql(conn, template)
            else:
                # CREATE DATABASE ... TEMPLATE wants no one connected to
                # it: say a pool left by the in-process upgrade.
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM "
                    "pg_stat_activity WHERE datname = :n AND "
                    "pid <> pg_backend_pid()"), {"n": name})
    finally:
        engine.dispose()
    return template


def _read_mysql(conn: sa.Connection, template: Template) -> None:
    tables = conn.execute(sa.text("SHOW FULL TABLES")).all()
    others = [t for t, kind in tables if kind != "BASE TABLE"]
    if others:
        raise AssertionError(f"template: cannot copy {others}")
    for (table, _) in tables:
        create = conn.execute(
            sa.text(f"SHOW CREATE TABLE `{table}`")).one()[1]
        template.ddl.append(create)
        if conn.execute(sa.text(
                f"SELECT 1 FROM `{table}` LIMIT 1")).first() is not None:
            template.filled.append(table)


def _quietly(func: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        func()


def copy_sqlite(template: Template, path: str) -> None:
    """The sqlite template into a new file ``path``."""
    assert template.sqlite_path is not None
    if os.path.exists(path):
        raise FileExistsError(path)
    src = sqlite3.connect(template.sqlite_path)
    try:
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def create_copy(template: Template, admin: sa.URL, name: str,
                create: str) -> None:
    """Database ``name`` as a copy of the template, on ``admin``'s server.

    ``create`` is the ``CREATE DATABASE`` statement an empty one would get
    (MariaDB: the copy's tables then come from the template).
    """
    assert template.name is not None
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT",
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if template.kind == "postgresql":
                conn.execute(sa.text(
                    f"CREATE DATABASE {name} TEMPLATE {template.name}"))
                return
            conn.execute(sa.text(create))
            conn.execute(sa.text(f"USE `{name}`"))
            conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
            for statement in template.ddl:
                conn.execute(sa.text(statement.replace(":", r"\:")))
            for table in template.filled:
                conn.execute(sa.text(
                    f"INSERT INTO `{name}`.`{table}` SELECT * FROM "
                    f"`{template.name}`.`{table}`"))
    finally:
        engine.dispose()
