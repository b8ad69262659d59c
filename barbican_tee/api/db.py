"""The attestation tables, in Barbican's own database.

Policies, spent nonces and rate counters live next to Barbican's tables
(same ``[database] connection``), so every API worker sees the same state.
Policy rows carry an HMAC (key derived from the sealed store's KEK) over
their content, and the sealed record of every secret pins the exact policy
it is bound to: a row edited in the database makes release fail, never
succeed. Which policy and which instance a secret is bound to is kept in the
secret's own sealed record (Barbican's secret store metadata, see
:mod:`barbican_tee.plugin.store`), never in a row that could be deleted or
rolled back on its own. A challenge writes no row (its nonce authenticates
itself, see :mod:`barbican_tee.api.nonce`); a release spends its nonce with
one ``INSERT`` keyed by the nonce's digest, whose primary key is the
single-use guarantee across workers.

On MariaDB/MySQL and PostgreSQL, a transaction the database chose as a
deadlock victim (or a serialisation failure, a lock wait timeout or a
dropped connection) is run again whole, as oslo.db's ``wrap_db_retry``
does; no savepoint is used (a deadlock rolls back the whole transaction,
savepoints included). MariaDB's default collations ignore case and
trailing spaces, so every lookup by id or value is compared again, exactly,
in Python: a case-swapped id finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import contextvars
import dataclasses
import datetime
import functools
import hashlib
import hmac
import json
import logging as std_logging
import os
import re
import threading
import time
from typing import Any
from typing import cast
from typing import TypeVar
import uuid

from oslo_config import cfg
from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from oslo_db import options as db_options
from oslo_db.sqlalchemy import engines
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite

from barbican_tee.plugin import keyring as keyring_mod

# The schema comes from the migrations (barbican_tee.migrations); these
# tables must stay what the migrations create (a test compares them).
METADATA = sa.MetaData()


def _exact(length: int) -> sa.types.TypeEngine[str]:
    """A string column compared by its bytes on every database.

    MariaDB's and MySQL's default collations ignore case; their binary
    collation does not (PostgreSQL's and sqlite's defaults are exact).
    MariaDB's ``utf8mb4_bin`` still pads with spaces (``'a '`` equals
    ``'a'``), so every read of the suite compares what the database
    returned with what it asked for, exactly, before using a row.
    """
    return sa.String(length).with_variant(
        sa_mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql",
        "mariadb")


POLICIES = sa.Table(
    "tee_policies", METADATA,
    sa.Column("id", _exact(36), primary_key=True),
    sa.Column("project_id", _exact(255), nullable=False, index=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("mac_kek", _exact(32), nullable=False),
    sa.Column("mac", _exact(64), nullable=False),
)

# The binding tables of earlier releases: only `openstack-tee rewrap` reads
# them, once, to carry their bindings into the sealed records.
LEGACY_METADATA = sa.MetaData()

BINDINGS = sa.Table(
    "tee_bindings", LEGACY_METADATA,
    sa.Column("secret_id", _exact(36), primary_key=True),
    sa.Column("policy_id", _exact(36), nullable=False),
    sa.Column("project_id", _exact(255), nullable=False),
    sa.Column("mac_kek", _exact(32), nullable=False),
    sa.Column("mac", _exact(64), nullable=False),
)

INSTANCE_BINDINGS = sa.Table(
    "tee_instance_bindings", LEGACY_METADATA,
    sa.Column("secret_id", _exact(36), primary_key=True),
    sa.Column("instance_uuid", _exact(36), nullable=False, index=True),
    sa.Column("project_id", _exact(255), nullable=False),
    # Set when the instance is deleted: the secret is then released to no
    # one until its owner binds it to a policy again.
    sa.Column("retired", sa.Boolean, nullable=False, default=False),
    sa.Column("mac_kek", _exact(32), nullable=False),
    sa.Column("mac", _exact(64), nullable=False),
)

# Nonces that a release has spent, until they expire (the nonce itself is
# stateless: see barbican_tee.api.nonce). The digest is lowercase hex, so
# comparisons are exact under any collation.
SPENT_NONCES = sa.Table(
    "tee_spent_nonces", METADATA,
    sa.Column("digest", _exact(64), primary_key=True),
    # Unix seconds: the nonce's own expiry, after which it is refused
    # before this table is consulted.
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

SEV_SESSIONS = sa.Table(
    "tee_sev_sessions", METADATA,
    sa.Column("id", _exact(36), primary_key=True),
    sa.Column("secret_id", _exact(36), nullable=False),
    sa.Column("instance_uuid", _exact(36), nullable=False),
    sa.Column("policy", sa.BigInteger, nullable=False),
    # The guest owner's TEK/TIK, sealed under the KEK like a secret.
    sa.Column("sealed_state", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)

# Platform TCB floors an administrator set through the API (one row per
# product), MACed like policy rows: see barbican_tee.api.floors.
FLOORS = sa.Table(
    "tee_floors", METADATA,
    sa.Column("product", _exact(16), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("updated_by", _exact(255), nullable=False),
    sa.Column("mac_kek", _exact(32), nullable=False),
    sa.Column("mac", _exact(64), nullable=False),
)

# The endorsement cache (barbican_tee.api.endorsements): VCEKs, AMD CAs
# and CRLs, TDX collateral; verified on import and on use, CRL rows MACed.
ENDORSEMENTS = sa.Table(
    "tee_endorsements", METADATA,
    sa.Column("id", _exact(64), primary_key=True),
    sa.Column("kind", _exact(16), nullable=False),
    sa.Column("product", _exact(16), nullable=False),
    sa.Column("lookup", _exact(160), nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("crl_number", _exact(64), nullable=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("imported_at", sa.DateTime, nullable=False),
    sa.Column("imported_by", _exact(255), nullable=False),
    sa.Column("mac_kek", _exact(32), nullable=True),
    sa.Column("mac", _exact(64), nullable=True),
    sa.Index("ix_tee_endorsements_lookup", "kind", "lookup"),
)

RATES = sa.Table(
    "tee_rates", METADATA,
    sa.Column("bucket", _exact(300), primary_key=True),
    sa.Column("window", sa.Integer, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# Barbican's own tables, read only.
_SECRETS = sa.Table(
    "secrets", sa.MetaData(),
    sa.Column("id", sa.String(36)), sa.Column("project_id", sa.String(36)),
    sa.Column("deleted", sa.Boolean))
_PROJECTS = sa.Table(
    "projects", sa.MetaData(),
    sa.Column("id", sa.String(36)), sa.Column("external_id", sa.String(255)))
_STORE_META = sa.Table(
    "secret_store_metadata", sa.MetaData(),
    sa.Column("secret_id", sa.String(36)), sa.Column("key", sa.String(255)),
    sa.Column("value", sa.String(255)), sa.Column("deleted", sa.Boolean))
# A sealed record's store metadata keys (barbican_tee.plugin.store); any
# other key of a secret's store metadata is Barbican's.
RECORD_KEY_PREFIX = "tee_"
# The same table with every column Barbican's model has (barbican.model.
# models.SecretStoreMetadatum): to add and soft-delete rows as it does.
# Barbican's table, made and migrated by barbican-manage: a description
# of its columns for our statements, no schema of ours (no migration).
_STORE_META_ROWS = sa.Table(
    "secret_store_metadata", sa.MetaData(),
    sa.Column("id", sa.String(36)), sa.Column("created_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("deleted_at", sa.DateTime), sa.Column("deleted", sa.Boolean),
    sa.Column("status", sa.String(20)), sa.Column("secret_id", sa.String(36)),
    sa.Column("key", sa.String(255)), sa.Column("value", sa.String(255)))


LOG = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

# MySQL/MariaDB: ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT. PostgreSQL:
# deadlock_detected, serialization_failure.
_MYSQL_RETRY_ERRNOS = frozenset({1213, 1205})
_PG_RETRY_CODES = frozenset({"40P01", "40001"})

# A duplicate primary key: SQLAlchemy's error, or oslo.db's when the engine
# is oslo.db's (its filters translate it).
DUPLICATE = (sa.exc.IntegrityError, db_exc.DBDuplicateEntry)


def retryable(exc: BaseException) -> bool:
    """True for an error after which the whole transaction may run again.

    A deadlock victim, a serialisation failure, a lock wait timeout or a
    connection the pool has invalidated (dropped, the server restarted),
    as SQLAlchemy reports them; oslo.db's own ``DBDeadlock`` and
    ``DBConnectionError`` are retried by ``wrap_db_retry`` itself.
    """
    if isinstance(exc, db_exc.DBError) and isinstance(
            exc.inner_exception, sa.exc.DBAPIError):
        # oslo.db's engine wraps what it does not translate itself (a
        # PostgreSQL serialisation failure, say).
        exc = exc.inner_exception
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_ERRNOS:
        return True
    return getattr(orig, "pgcode", None) in _PG_RETRY_CODES


def again_on_duplicate(func: _F) -> _F:
    """Run ``func`` again (up to twice more) when it meets a duplicate key.

    For writes that read what is there first and insert the rest: a
    concurrent writer inserted the same row between the read and the
    insert (two nova-computes publishing the same ASK, two floors set at
    once under READ COMMITTED); the next attempt reads it and goes on.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for _ in range(2):
            try:
                return func(*args, **kwargs)
            except DUPLICATE:
                continue
        return func(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def unavailable(exc: BaseException) -> bool:
    """True for a database that did not serve a request (503, not 500).

    A dropped or refused connection, a deadlock or lock wait that
    outlasted :func:`_retry`, an exhausted connection pool, a table gone
    (a restore or migration half done): any database error but a
    constraint's, which is the request's (a duplicate key, say).
    """
    return isinstance(exc, (sa.exc.SQLAlchemyError, db_exc.DBError)) and (
        not isinstance(exc, (sa.exc.IntegrityError, db_exc.DBDuplicateEntry,
                             db_exc.DBReferenceError,
                             db_exc.DBConstraintError)))


def _retry(func: _F) -> _F:
    """Run ``func`` (its own whole transaction) again on :func:`retryable`.

    At most 10 more times, about 5 s in all, with jittered growing pauses
    (oslo.db's ``wrap_db_retry``).
    """
    wrapped: _F = oslo_db_api.wrap_db_retry(
        retry_interval=0.02, max_retries=10, inc_retry_interval=True,
        max_retry_interval=1.0, retry_on_deadlock=True,
        retry_on_disconnect=True, exception_checker=retryable,
        jitter=True)(func)
    return wrapped


@dataclasses.dataclass(frozen=True)
class Read:
    """A read-only query another step of a release runs, run earlier.

    The release's admission (:meth:`Store.admit_release`) runs the reads
    the filter expects the verification to make (the platform floor and
    the CRLs of the product the report names) on its own connection,
    right after its transaction committed, so that they cost no
    connection of their own. The step that needs them asks
    :func:`prefetched` with the very statement and parameters it would
    run: a read the admission did not make (another product, another
    engine, or one that failed) is made as before. A prefetched answer
    is what the same query said a few milliseconds earlier and serves
    one request, once.
    """

    engine: sa.Engine
    statement: sa.Select[Any]
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, engine: sa.Engine, statement: sa.Select[Any],
           params: Mapping[str, Any]) -> Read:
        return cls(engine, statement, tuple(sorted(params.items())))

    @property
    def key(self) -> tuple[int, int, tuple[tuple[str, Any], ...]]:
        # Identity, not equality: SQLAlchemy's ``==`` builds an
        # expression. The Read (and so the statement) stays referenced
        # while its answer is held, so no other object can take its id.
        return (id(self.engine), id(self.statement), self.params)


# This request's prefetched answers (contextvars: a greenlet or thread of
# its own per request under gevent or threads alike).
_PREFETCHED: contextvars.ContextVar[
    dict[tuple[Any, ...], tuple[Read, Sequence[Any]]] | None] = (
        contextvars.ContextVar("openstack_tee_prefetched", default=None))


def prefetched(engine: sa.Engine, statement: sa.Select[Any],
               params: Mapping[str, Any]) -> Sequence[Any] | None:
    """Rows the admission read for exactly this query, or None.

    Each answer is handed out once: a second identical read in the same
    request goes to the database.
    """
    held = _PREFETCHED.get()
    if not held:
        return None
    found = held.pop(Read.of(engine, statement, params).key, None)
    return None if found is None else found[1]


@contextlib.contextmanager
def using_prefetched(answers: Mapping[tuple[Any, ...],
                                      tuple[Read, Sequence[Any]]]
                     ) -> Iterator[None]:
    """Serve ``answers`` (an :class:`Admission`'s) to :func:`prefetched`."""
    token = _PREFETCHED.set(dict(answers))
    try:
        yield
    finally:
        _PREFETCHED.reset(token)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def make_engine(url: str, conf: cfg.ConfigOpts | None = None, *,
                pool_sqlite: bool = False) -> sa.Engine:
    """An engine on ``url`` built as Barbican builds its own.

    oslo.db's engine factory with Barbican's ``[database]`` options from
    ``conf`` (pool sizes, ``max_retries``, ``connection_recycle_time``,
    ``mysql_sql_mode`` ...; oslo.db's defaults without ``conf``): pooled
    connections are checked before use and one that died with a database
    restart or failover is replaced, and errors are oslo.db's (say
    ``DBDuplicateEntry``, ``DBDeadlock``). Creates no table: the schema
    comes from ``openstack-tee db upgrade`` (:mod:`barbican_tee.migrations`).

    With ``pool_sqlite`` (the API's request path), a sqlite file's
    connections are pooled (:class:`_SqlitePool`) instead of oslo.db's one
    connection per transaction.
    """
    options: dict[str, Any] = {"mysql_sql_mode": "TRADITIONAL"}
    if conf is not None:
        conf.register_opts(db_options.database_opts, group="database")
        options = {name: getattr(conf.database, name)
                   for name in _ENGINE_OPTIONS}
    is_sqlite = url.startswith("sqlite")
    extras = []
    if is_sqlite and "timeout=" not in url:
        # Several gunicorn workers share one file: wait for the lock.
        extras.append("timeout=30")
    if is_sqlite and pool_sqlite and "check_same_thread=" not in url:
        # A pooled connection serves whichever thread checks it out (one
        # at a time), as SQLAlchemy's own pool for sqlite files does.
        extras.append("check_same_thread=false")
    pooled = is_sqlite and pool_sqlite and ":memory:" not in url and (
        url not in ("sqlite://", "sqlite:///"))
    if pooled:
        # A file's connections kept in a pool (_SqlitePool).
        extras.append(f"plugin={_SQLITE_POOL_PLUGIN}")
        for name, option in zip(_POOL_PARAMS, (
                "max_pool_size", "max_overflow", "pool_timeout"),
                strict=True):
            value = options.get(option)
            if value:
                extras.append(f"{name}={int(value)}")
    if extras:
        current = options.get("connection_parameters")
        options["connection_parameters"] = "&".join(
            ([current] if current else []) + extras)
    # No thread_checkin: oslo.db's sleep(0) at every check-in is for
    # eventlet's fairness; a request here yields on its own I/O.
    engine: sa.Engine = engines.create_engine(url, thread_checkin=False,
                                              **options)
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if pooled:
        # The connection oslo.db opened to test the database predates that
        # listener: the pool must not keep it.
        engine.pool.dispose()
    return engine


_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def process_engine(url: str, conf: cfg.ConfigOpts) -> sa.Engine:
    """This process's engine on ``url`` (:func:`make_engine`), built once.

    Both /v1/tee filters of barbican-api's pipeline (and their schema
    check at startup) share it: one pool per worker, not one per filter.
    """
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = make_engine(url, conf,
                                                   pool_sqlite=True)
            if engine.dialect.name == "sqlite":
                _light_sqlite_begin(engine)
        return engine


def _forget_parent_connections() -> None:
    # A server that loads the app before forking its workers: a child
    # must not use (nor close, which would end the parent's) the
    # connections pooled before the fork; it opens its own.
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


# The SQLAlchemy engine plugin (CreateEnginePlugin, SQLAlchemy's public
# hook into create_engine) that gives a sqlite file a pool: registered in
# process, named in the URL by make_engine(pool_sqlite=True).
_SQLITE_POOL_PLUGIN = "openstack_tee_sqlite_pool"
# Its URL parameters (removed from the URL before sqlite sees it).
_POOL_PARAMS = ("tee_pool_size", "tee_max_overflow", "tee_pool_timeout")


class _SqlitePool(sa.engine.CreateEnginePlugin):
    """Keep a sqlite file's connections open between transactions.

    oslo.db gives a sqlite file a ``NullPool``: every transaction opens the
    file, sets its pragmas and closes it again, and the close of the last
    connection checkpoints the WAL, with an fsync. On the release path
    (seven transactions per challenge and release) that was most of the
    API's CPU time. This plugin asks SQLAlchemy for a ``QueuePool``
    instead, sized from ``[database]`` (``max_pool_size``,
    ``max_overflow``, ``pool_timeout``), while oslo.db builds the engine
    as always: its connection events (pragmas, its BEGIN handling, the
    fork guard) and recycle apply to that pool as they would to any. A
    connection comes back from the pool rolled back; oslo.db's mark of an
    open transaction is cleared on checkout, so that each transaction
    emits its own ``BEGIN``. Without oslo.db's pre-ping: a ``SELECT 1`` on
    every checkout finds a database server gone after a restart or
    failover, and a file opened by this process has no server to lose.
    """

    def __init__(self, url: sa.engine.URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        query = url.query

        def number(name: str, default: int) -> int:
            value = query.get(name)
            return int(value) if isinstance(value, str) else default

        kwargs["poolclass"] = sa.pool.QueuePool
        kwargs["pool_size"] = number("tee_pool_size", 5)
        kwargs["max_overflow"] = number("tee_max_overflow", 10)
        kwargs["pool_timeout"] = number("tee_pool_timeout", 30)
        kwargs["pool_pre_ping"] = False

    def update_url(self, url: sa.engine.URL) -> sa.engine.URL:
        return url.difference_update_query(_POOL_PARAMS)

    def engine_created(self, engine: sa.Engine) -> None:
        sa.event.listen(engine, "checkout", _clear_transaction_mark)


sa.dialects.plugins.register(_SQLITE_POOL_PLUGIN, __name__, "_SqlitePool")


def _clear_transaction_mark(_dbapi_conn: Any, record: Any,
                            _proxy: Any) -> None:
    record.info.pop("in_transaction", None)


# oslo.db's [database] options that its engine factory takes, as
# oslo.db's enginefacade (Barbican's engine) passes them.
_ENGINE_OPTIONS = (
    "mysql_sql_mode", "mysql_wsrep_sync_wait", "connection_recycle_time",
    "connection_debug", "max_pool_size", "max_overflow", "pool_timeout",
    "sqlite_synchronous", "connection_trace", "max_retries",
    "retry_interval", "connection_parameters")


def _light_sqlite_begin(engine: sa.Engine) -> None:
    """:func:`_sqlite_begin` in place of oslo.db's own "begin" listener.

    oslo.db's is found by its name; should a later oslo.db rename it, both
    run, and its own finds the mark and emits nothing.
    """
    sa.event.listen(engine, "begin", _sqlite_begin)
    for listener in list(engine.dispatch.begin):
        if getattr(listener, "__name__", "") == "_sqlite_emit_begin":
            sa.event.remove(engine, "begin", listener)


def _sqlite_begin(conn: sa.Connection) -> None:
    """Emit a sqlite transaction's ``BEGIN`` on the driver's connection.

    What oslo.db's "begin" listener does (its sqlite connections run in
    autocommit mode, ``isolation_level = None``, and each transaction
    emits its own ``BEGIN``), without running the ``BEGIN`` through
    SQLAlchemy's whole statement machinery: that was a fifth of each
    short transaction's CPU time. It sets the same mark oslo.db's does,
    which oslo.db's "commit"/"rollback" listeners clear.
    """
    driver = conn.connection.driver_connection
    if "in_transaction" not in conn.info and driver is not None:
        driver.execute("BEGIN")
        conn.info["in_transaction"] = True


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers in other workers proceed during a write, and with
    # synchronous=NORMAL a commit is durable against a killed process
    # (what a crashed API worker is) without an fsync per commit.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _policy_mac_input(row: dict[str, Any]) -> bytes:
    return json.dumps(["policy", row["id"], row["project_id"],
                       row["document"]], separators=(",", ":")).encode()


def policy_pin(row: dict[str, Any]) -> str:
    """What a sealed record pins of its policy: hex SHA-256 of its content.

    The same bytes as the row's MAC input (id, project, document), so a
    row that authenticates and matches the pin is the very policy the
    owner bound, not a restored or replaced one.
    """
    return hashlib.sha256(_policy_mac_input(row)).hexdigest()


def _instance_mac_input(row: dict[str, Any]) -> bytes:
    return json.dumps(["instance", row["secret_id"], row["instance_uuid"],
                       row["project_id"], bool(row["retired"])],
                      separators=(",", ":")).encode()


def _binding_mac_input(row: dict[str, Any]) -> bytes:
    return json.dumps(["binding", row["secret_id"], row["policy_id"],
                       row["project_id"]], separators=(",", ":")).encode()


# How often (seconds) a process prunes expired spent-nonce rows on the
# release path: an expired nonce is refused before the table is read, so
# the rows left meanwhile are only storage, never a second use.
PRUNE_INTERVAL = 60


def _read_ahead(conn: sa.Connection, reads: tuple[Read, ...]
                ) -> dict[tuple[Any, ...], tuple[Read, Sequence[Any]]]:
    """The answers of ``reads`` on ``conn``; none if any of them fails.

    In a read-only transaction of their own, on the driver's cursor
    (:func:`_driver_transaction`), each row as SQLAlchemy's ``mappings``
    would give it. A read that fails here (a table gone, the connection
    dropped, a statement not for the driver path) is made again by the
    step that needs it, which answers with its own error code, as it
    would have without reading ahead.
    """
    if not reads:
        return {}
    dialect = conn.dialect

    def read_all(execute: _Execute) -> dict[tuple[Any, ...],
                                            tuple[Read, Sequence[Any]]]:
        return {read.key: (read, _driver_statement(
            dialect, read.statement).rows(execute(read.statement,
                                                  dict(read.params))))
                for read in reads}

    try:
        return _driver_transaction(conn, read_all)
    except (sa.exc.SQLAlchemyError, db_exc.DBError, NotForDriver) as exc:
        LOG.debug("openstack-tee: reading ahead failed (%s); each read "
                  "is made when needed", type(exc).__name__)
        return {}


@dataclasses.dataclass(frozen=True)
class Admission:
    """What :meth:`Store.admit_release` found, in one transaction.

    Its reads ahead (``reads``) apart: they run after it committed.
    """

    # The client's count in this window (over its limit: refuse, 429).
    count: int
    # True only if this call spent the nonce (its row was inserted now).
    spent: bool = False
    # The secret's live store metadata, read after the nonce was spent.
    meta: dict[str, str] | None = None
    # (id, row or None) of the policy its ``tee_policy`` index names, if
    # it names one: a hint, checked against the authenticated record.
    policy: tuple[str, dict[str, Any] | None] | None = None
    # The answers of the reads asked for (:class:`Read`), for
    # :func:`using_prefetched`.
    reads: Mapping[tuple[Any, ...], tuple[Read, Sequence[Any]]] = (
        dataclasses.field(default_factory=dict))


# -- the driver path of the release's hot statements ------------------------

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _DriverStatement:
    """A statement as its dialect's driver runs it: SQL text and parameters.

    Compiled by SQLAlchemy once per dialect (:func:`_driver_statement`).
    """

    sql: str
    # Positional drivers (sqlite's ``?``, PyMySQL's ``%s``): the names of
    # the parameters in the order the text takes them; None for named.
    order: tuple[str, ...] | None
    # The values the statement itself holds (``count = count + 1``).
    fixed: Mapping[str, Any]
    # Held, so that their ids, which key the cache, stay theirs.
    dialect: sa.Dialect
    statement: sa.Executable
    # A SELECT's columns: (name, SQLAlchemy's conversion of the driver's
    # value or None), in order (:meth:`rows`).
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...] = ()

    def rows(self, cursor: Any) -> list[dict[str, Any]]:
        """The cursor's rows as SQLAlchemy would give them (``mappings``).

        Each value converted as the column's type converts it for this
        dialect (sqlite's text datetimes and integer booleans, say).
        """
        columns = self.columns
        return [{name: value if convert is None else convert(value)
                 for (name, convert), value in zip(columns, row,
                                                   strict=True)}
                for row in cursor.fetchall()]

    def params(self, values: Mapping[str, Any]
               ) -> tuple[Any, ...] | dict[str, Any]:
        merged = {**self.fixed, **values}
        if self.order is None:
            return merged
        return tuple(merged[name] for name in self.order)


class NotForDriver(TypeError):
    """A statement whose parameters need SQLAlchemy's conversion."""


_DRIVER_STATEMENTS: dict[tuple[int, int], _DriverStatement] = {}
_DRIVER_LOCK = threading.Lock()


def _driver_statement(dialect: sa.Dialect, statement: sa.Executable
                      ) -> _DriverStatement:
    """``statement`` compiled for ``dialect``'s driver, once.

    Only statements whose parameters the driver takes as they are (no
    SQLAlchemy bind processing: strings and integers on sqlite, PyMySQL
    and psycopg2) qualify; any other is :class:`NotForDriver`. A SELECT's
    values are converted as SQLAlchemy converts them
    (:meth:`_DriverStatement.rows`).
    """
    key = (id(dialect), id(statement))
    found = _DRIVER_STATEMENTS.get(key)
    if found is not None and found.statement is statement and (
            found.dialect is dialect):
        return found
    compiled = cast(sa.sql.compiler.SQLCompiler, cast(
        sa.ClauseElement, statement).compile(dialect=dialect))
    if compiled.escaped_bind_names:
        raise NotForDriver("parameter names the driver must escape")
    if compiled.post_compile_params or compiled.literal_execute_params:
        # IN lists and the like: SQLAlchemy writes them into the text at
        # each execution.
        raise NotForDriver("parameters rendered at execution")
    required = set()
    for name, bind in compiled.binds.items():
        if bind.type.dialect_impl(dialect).bind_processor(dialect):
            raise NotForDriver(f"parameter {name} needs SQLAlchemy's bind "
                               "processing: not for the driver path")
        if bind.required:
            required.add(name)
    columns = tuple(
        (str(column.name), column.type.dialect_impl(dialect).result_processor(
            dialect, None))
        for column in getattr(statement, "selected_columns", ()))
    fixed = {name: value for name, value in (compiled.construct_params(
        dict.fromkeys(required)) or {}).items() if name not in required}
    found = _DriverStatement(
        compiled.string,
        tuple(compiled.positiontup or ()) if compiled.positional else None,
        fixed, dialect, statement, columns)
    with _DRIVER_LOCK:
        if len(_DRIVER_STATEMENTS) > 256:
            # Engines come and go in tests: never an unbounded cache.
            _DRIVER_STATEMENTS.clear()
        _DRIVER_STATEMENTS[key] = found
    return found


# SQLAlchemy's statement log (oslo.db's [database] connection_debug turns
# it on).
_SQL_LOG = std_logging.getLogger("sqlalchemy.engine.Engine")

# Runs one of the hot statements in a driver transaction; returns the
# driver's cursor, to fetch from before the next statement.
_Execute = Callable[[sa.Executable, Mapping[str, Any]], Any]


def _driver_transaction(conn: sa.Connection,
                        work: Callable[[_Execute], _T]) -> _T:
    """Run ``work`` in one transaction on the driver's own cursor.

    The release's hot statements (the rate-limit upsert, the nonce's
    spend, the admission's reads) cost SQLAlchemy's execution machinery
    (an execution context, events and a result object per statement, a
    transaction object per transaction) more CPU than the database's own
    work: here they run as the SQL text SQLAlchemy compiled for this
    dialect (:func:`_driver_statement`), on the connection ``conn``
    checked out of the engine's pool (so oslo.db's connection checks,
    pings and recycling still apply). ``BEGIN`` on sqlite (oslo.db runs
    its connections in autocommit mode); the drivers of MariaDB and
    PostgreSQL begin one themselves. Whatever ``work`` returns is committed;
    anything it raises rolls the transaction back.

    A driver error becomes SQLAlchemy's, as SQLAlchemy's own execution
    would raise it (:meth:`sqlalchemy.exc.DBAPIError.instance`: an
    ``IntegrityError``, an ``OperationalError`` ...), without the
    statement's parameters; a connection the dialect finds lost is
    invalidated (the pool replaces it) and the error says so
    (``connection_invalidated``), so that :func:`retryable` runs the
    whole transaction again, and :func:`unavailable` answers 503 in the
    end, as for any statement.
    """
    dialect = conn.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    driver = conn.connection.dbapi_connection
    assert driver is not None
    cursor = driver.cursor()
    running = ["BEGIN"]

    def execute(statement: sa.Executable, params: Mapping[str, Any]) -> Any:
        compiled = _driver_statement(dialect, statement)
        running[0] = compiled.sql
        if _SQL_LOG.isEnabledFor(std_logging.INFO):
            # [database] connection_debug, as SQLAlchemy logs its own
            # statements (their parameters left out).
            _SQL_LOG.info("%s [openstack-tee, driver path]", compiled.sql)
        cursor.execute(compiled.sql, compiled.params(params))
        return cursor

    try:
        if dialect.name == "sqlite":
            cursor.execute("BEGIN")
        result = work(execute)
        running[0] = "COMMIT"
        driver.commit()
        return result
    except dbapi_error as exc:
        lost = bool(dialect.is_disconnect(exc, driver, cursor))
        _abandon(conn, driver, dbapi_error, exc if lost else None)
        raise sa.exc.DBAPIError.instance(
            running[0], None, exc, dbapi_error, hide_parameters=True,
            connection_invalidated=lost, dialect=dialect) from exc
    except BaseException:
        _abandon(conn, driver, dbapi_error, None)
        raise
    finally:
        with contextlib.suppress(dbapi_error):
            cursor.close()


def _abandon(conn: sa.Connection, driver: Any, dbapi_error: type[Exception],
             lost: BaseException | None) -> None:
    """Roll the driver's transaction back; invalidate a lost connection.

    A connection whose rollback fails too is invalidated: the pool must
    not hand out a connection in an unknown state.
    """
    if lost is None:
        try:
            driver.rollback()
            return
        except dbapi_error as exc:
            lost = exc
    conn.invalidate(lost)


class Store:
    """Queries of the attestation API; each call is its own transaction."""

    def __init__(self, engine: sa.Engine,
                 keyring: keyring_mod.Keyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self._pruned_at = float("-inf")
        self._rates_pruned_at = float("-inf")

    # -- policies -------------------------------------------------------
    def create_policy(self, policy_id: str, project_id: str,
                      document: dict[str, Any]) -> None:
        row = {"id": policy_id, "project_id": project_id,
               "document": json.dumps(document, sort_keys=True),
               "created_at": utcnow()}
        kid = self.keyring.current.kid
        row["mac_kek"] = kid
        row["mac"] = self.keyring.mac(kid, _policy_mac_input(row)).hex()
        self._insert_policy(row, [])

    @_retry
    def _insert_policy(self, row: dict[str, Any],
                       attempts: list[int]) -> None:
        """Insert ``row``, its whole transaction retried (:func:`_retry`).

        If an earlier attempt committed but its acknowledgement was lost
        (the connection dropped), the retry hits the duplicate id: the
        row with exactly that id is then ours only if it holds the same
        project, document and MAC (computed once, before the first
        attempt); anything else stays an error.
        """
        attempts.append(1)
        try:
            with self.engine.begin() as conn:
                conn.execute(POLICIES.insert().values(**row))
        except DUPLICATE:
            if len(attempts) == 1:
                raise
            found = self.get_policy(row["id"])
            if found is None or not (
                    found["project_id"] == row["project_id"]
                    and found["document"] == row["document"]
                    and found["mac_kek"] == row["mac_kek"]
                    and hmac.compare_digest(found["mac"], row["mac"])):
                raise

    @_retry
    def list_policies(self, project_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(POLICIES.select().where(
                POLICIES.c.project_id == project_id).order_by(
                POLICIES.c.created_at)).mappings().all()
        # Exactly this project, whatever the collation matched.
        return [dict(r) for r in rows if r["project_id"] == project_id]

    @_retry
    def get_policy(self, policy_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            rows = conn.execute(_POLICY_BY_ID,
                                {"p": policy_id}).mappings().all()
        for row in rows:
            if row["id"] == policy_id:
                return dict(row)
        return None

    def policy_intact(self, row: dict[str, Any]) -> bool:
        return self.keyring.check_mac(row["mac_kek"],
                                      _policy_mac_input(row),
                                      row["mac"])

    def delete_policy(self, policy_id: str) -> bool:
        # Collations that ignore case would delete a case-swapped id's row
        # too: delete by the exact id found.
        row = self.get_policy(policy_id)
        if row is None:
            return False
        return self._delete_policy_row(row["id"])

    @_retry
    def _delete_policy_row(self, policy_id: str) -> bool:
        # Retried whole; after a lost acknowledgement of a committed
        # delete, the retry deletes nothing (False): the row is gone
        # either way.
        with self.engine.begin() as conn:
            result = conn.execute(POLICIES.delete().where(
                POLICIES.c.id == policy_id))
        return bool(result.rowcount)

    @_retry
    def remac_rows(self) -> tuple[int, int]:
        """Re-MAC policy rows under the current KEK.

        Only rows that authenticate under their recorded key are
        re-MACed: a tampered row stays tampered. Returns (re-MACed,
        refused). One transaction, run again whole on :func:`retryable`
        (a retry after a lost acknowledgement finds the rows done and
        counts only what it did itself).
        """
        kid = self.keyring.current.kid
        done = refused = 0
        with self.engine.begin() as conn:
            rows = conn.execute(POLICIES.select().where(
                POLICIES.c.mac_kek != kid)).mappings().all()
            for row in rows:
                data = _policy_mac_input(dict(row))
                if not self.keyring.check_mac(
                        row["mac_kek"], data, row["mac"]):
                    refused += 1
                    continue
                conn.execute(POLICIES.update().where(
                    POLICIES.c.id == row["id"]).values(
                    mac_kek=kid, mac=self.keyring.mac(kid, data).hex()))
                done += 1
        return done, refused

    # -- bindings of earlier releases (read by rewrap only) ----------------
    @_retry
    def legacy_binding(self, secret_id: str
                       ) -> tuple[str | None, str | None, bool]:
        """(policy id, instance uuid, retired) from the old tables.

        Only rows that still authenticate count; no tables, no binding.
        """
        inspector = sa.inspect(self.engine)
        policy_id = instance = None
        retired = False
        with self.engine.connect() as conn:
            if inspector.has_table(BINDINGS.name):
                row = conn.execute(BINDINGS.select().where(
                    BINDINGS.c.secret_id == secret_id)).mappings().first()
                if row is not None and row["secret_id"] == secret_id and (
                        self.keyring.check_mac(
                        row["mac_kek"], _binding_mac_input(dict(row)),
                        row["mac"])):
                    policy_id = str(row["policy_id"])
            if inspector.has_table(INSTANCE_BINDINGS.name):
                row = conn.execute(INSTANCE_BINDINGS.select().where(
                    INSTANCE_BINDINGS.c.secret_id == secret_id)
                ).mappings().first()
                if row is not None and row["secret_id"] == secret_id and (
                        self.keyring.check_mac(
                            row["mac_kek"], _instance_mac_input(dict(row)),
                            row["mac"])):
                    instance = str(row["instance_uuid"])
                    retired = bool(row["retired"])
        return policy_id, instance, retired

    # -- nonces ---------------------------------------------------------
    def spend_nonce(self, digest: str, expires_at: int,
                    prune_before: int) -> bool:
        """Record a verified nonce as spent; False if it already was.

        One ``INSERT`` on the primary key, committed on its own: of
        concurrent releases of one nonce, in any worker, exactly one
        inserts the row. A deadlock or a dropped connection runs the
        insert again; if the first attempt did commit after all, the
        retry finds the row and refuses (never a second release). Then,
        in a transaction of their own, the rows of nonces that expired
        before ``prune_before`` go (an expired nonce is refused before
        this table is read).
        """
        if not self._insert_spent(digest, expires_at):
            return False
        self._housekeeping(SPENT_NONCES.delete().where(
            SPENT_NONCES.c.expires_at < prune_before))
        return True

    @_retry
    def _insert_spent(self, digest: str, expires_at: int) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(_SPEND, {"digest": digest,
                                      "expires_at": expires_at})
        except DUPLICATE:
            return False
        return True

    def admit_release(self, bucket: str, window: int, limit: int,
                      secret_id: str, digest: str | None = None,
                      expires_at: int = 0,
                      prune_before: int | None = None,
                      reads: tuple[Read, ...] = ()) -> Admission:
        """A release's database work before verification, in one transaction.

        Counts one request in the client's ``bucket`` (as :meth:`hit`);
        unless that is over ``limit`` or ``digest`` is None (the request
        was refused before its nonce could be spent: counted, nothing
        more), spends the nonce as :meth:`spend_nonce` does, with one
        ``INSERT`` on the digest that inserts nothing if the row exists
        (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``; of concurrent
        releases of one nonce, in any worker, exactly one inserts it);
        only then reads the secret's store metadata and the policy row its
        index names. Once that committed, runs ``reads`` (:class:`Read`:
        queries of this engine that the verification would run; those of
        another engine are left to it) on the same connection, in a
        read-only transaction of their own. The count commits with the
        spend: a refused nonce is counted too. A deadlock or a dropped
        connection runs the whole transaction again (:func:`_retry`); if
        the first attempt committed after all, the retry finds the nonce
        spent and refuses.

        The rate counts' and the spent nonces' pruning run afterwards in
        transactions of their own (the nonces' at most every
        ``PRUNE_INTERVAL`` seconds per process), never failing the request.
        """
        admission = self._admit(bucket, window, limit, secret_id, digest,
                                expires_at, tuple(
                                    r for r in reads
                                    if r.engine is self.engine))
        if admission.count == 1:
            self._housekeeping(RATES.delete().where(
                (RATES.c.bucket == bucket) & (RATES.c.window < window)))
        self._prune_rates(window)
        if admission.spent and prune_before is not None:
            now = time.monotonic()
            if now - self._pruned_at >= PRUNE_INTERVAL:
                self._pruned_at = now
                self._housekeeping(SPENT_NONCES.delete().where(
                    SPENT_NONCES.c.expires_at < prune_before))
        return admission

    @_retry
    def _admit(self, bucket: str, window: int, limit: int, secret_id: str,
               digest: str | None, expires_at: int,
               reads: tuple[Read, ...]) -> Admission:
        with self.engine.connect() as conn:
            dialect = conn.dialect.name

            def admit(execute: _Execute) -> Admission:
                count = _hit(execute, dialect, bucket, window)
                if count > limit or digest is None:
                    return Admission(count)
                spent = execute(_spend_once_statement(dialect),
                                {"digest": digest, "expires_at": expires_at})
                if spent.rowcount != 1:
                    return Admission(count)
                rows = execute(_STORE_META_OF, {"s": secret_id}).fetchall()
                meta = {str(k): str(v) for s, k, v in rows
                        if s == secret_id}
                policy_id = meta.get("tee_policy")
                policy = None
                if policy_id is not None and _UUID_TEXT.fullmatch(policy_id):
                    found = execute(_POLICY_PIN_BY_ID,
                                    {"p": policy_id}).fetchall()
                    policy = (policy_id, next(
                        (dict(zip(_POLICY_PIN_COLUMNS, r, strict=True))
                         for r in found if r[0] == policy_id), None))
                return Admission(count, True, meta, policy)

            admission = _driver_transaction(conn, admit)
            if not admission.spent:
                return admission
            # Committed: the reads ahead run on the same connection, in a
            # transaction of their own that can only fail itself.
            return dataclasses.replace(admission,
                                       reads=_read_ahead(conn, reads))

    def _housekeeping(self, statement: sa.Executable) -> None:
        """Run a pruning ``DELETE``; retried, and never the request's fail.

        Rows it leaves are only removed later: the request's own
        transaction has committed already.
        """
        try:
            self._execute_retried(statement)
        except (sa.exc.DBAPIError, db_exc.DBError) as exc:
            LOG.warning("openstack-tee: pruning %s deferred: %s",
                        getattr(statement, "table", "?"),
                        type(exc).__name__)

    @_retry
    def _execute_retried(self, statement: sa.Executable) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement)

    # -- SEV launch sessions ---------------------------------------------
    def add_sev_session(self, row: dict[str, Any]) -> None:
        self._housekeeping(SEV_SESSIONS.delete().where(
            SEV_SESSIONS.c.expires_at < utcnow()))
        self._execute_retried(SEV_SESSIONS.insert().values(**row))

    @_retry
    def take_sev_session(self, session_id: str) -> dict[str, Any] | None:
        """The session row, removed: a measurement is answered once.

        Only the row whose id is exactly ``session_id`` (not one a
        collation that ignores case matched); of concurrent takers, only
        the one whose ``DELETE`` removed it gets it.
        """
        with self.engine.begin() as conn:
            rows = conn.execute(SEV_SESSIONS.select().where(
                SEV_SESSIONS.c.id == session_id)).mappings().all()
            found = [r for r in rows if r["id"] == session_id]
            if not found:
                return None
            result = conn.execute(SEV_SESSIONS.delete().where(
                SEV_SESSIONS.c.id == session_id))
            if result.rowcount != 1:
                return None
        return dict(found[0])

    # -- rate limits ----------------------------------------------------
    def hit(self, bucket: str, window: int, limit: int) -> bool:
        """Count one request in ``bucket``; False once over ``limit``."""
        return self.hit_many([(bucket, limit)], window)

    def hit_many(self, buckets: list[tuple[str, int]], window: int) -> bool:
        """Count one request in each (bucket, limit), in one transaction.

        False if any bucket is over its limit. Each bucket's row is
        counted with one upsert (``INSERT ... ON DUPLICATE KEY UPDATE`` /
        ``ON CONFLICT DO UPDATE``), in bucket order, so that concurrent
        requests lock rows in the same order; a deadlock victim runs the
        whole transaction again (:func:`_retry`): no savepoint, which a
        deadlock's rollback would have destroyed. The first hit of a
        window removes its bucket's earlier windows afterwards, in a
        transaction of its own.
        """
        counts = self._count_hits(sorted({b for b, _ in buckets}), window)
        for bucket, count in counts.items():
            if count == 1:
                self._housekeeping(RATES.delete().where(
                    (RATES.c.bucket == bucket) & (RATES.c.window < window)))
        self._prune_rates(window)
        return all(counts[bucket] <= limit for bucket, limit in buckets)

    def _prune_rates(self, window: int) -> None:
        """Remove every bucket's windows before the previous one.

        A bucket that never comes back (one row per address and minute,
        through the token-less challenge) would stay otherwise. At most
        every ``PRUNE_INTERVAL`` seconds per process; never the request's
        fail.
        """
        now = time.monotonic()
        if now - self._rates_pruned_at < PRUNE_INTERVAL:
            return
        self._rates_pruned_at = now
        self._housekeeping(RATES.delete().where(RATES.c.window < window - 1))

    @_retry
    def _count_hits(self, buckets: list[str], window: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            dialect = conn.dialect.name
            return _driver_transaction(conn, lambda execute: {
                bucket: _hit(execute, dialect, bucket, window)
                for bucket in buckets})

    # -- Barbican's secrets ---------------------------------------------
    @_retry
    def secret_project(self, secret_id: str) -> str | None:
        """The Keystone project owning a live secret, if it exists.

        Only a secret whose id is exactly ``secret_id``.
        """
        query = sa.select(_SECRETS.c.id, _PROJECTS.c.external_id).select_from(
            _SECRETS.join(_PROJECTS, _SECRETS.c.project_id == _PROJECTS.c.id)
        ).where((_SECRETS.c.id == secret_id)
                & (_SECRETS.c.deleted == sa.false()))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for found_id, project in rows:
            if found_id == secret_id and project is not None:
                return str(project)
        return None

    @_retry
    def sealed_secret_ids(self, plugin_path: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(
                _STORE_META.c.secret_id, _STORE_META.c.key,
                _STORE_META.c.value).where(
                (_STORE_META.c.key == "plugin_name")
                & (_STORE_META.c.value == plugin_path)
                & (_STORE_META.c.deleted == sa.false()))).all()
        return [str(r[0]) for r in rows
                if r[1] == "plugin_name" and r[2] == plugin_path]

    @_retry
    def secrets_with_metadata(self, key: str, value: str) -> list[str]:
        """Live secrets whose store metadata has ``key`` = ``value``.

        An index only: every caller opens each record and checks what it
        says before acting on it. Compared exactly, whatever the
        database's collation.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(
                _STORE_META.c.secret_id, _STORE_META.c.key,
                _STORE_META.c.value).where(
                (_STORE_META.c.key == key)
                & (_STORE_META.c.value == value)
                & (_STORE_META.c.deleted == sa.false()))).all()
        return sorted({str(r[0]) for r in rows
                       if r[1] == key and r[2] == value})

    def replace_store_metadata(self, secret_id: str,
                               old: dict[str, str],
                               new: dict[str, str]) -> bool:
        """Swap a sealed record's rows in one transaction.

        Keys in both get ``new``'s value, keys only in ``new`` a row of
        their own (a record of an earlier version upgraded: more keys),
        the record's keys (``tee_``) only in ``old`` are soft-deleted as
        Barbican deletes metadata (its own keys, say ``plugin_name``, are
        left as they are); and only if every old value written over or
        deleted is still in place, so a concurrent writer makes this a
        no-op instead of a mix.
        """
        return self._swap_store_metadata(secret_id, old, new, [])

    @_retry
    def _swap_store_metadata(self, secret_id: str, old: dict[str, str],
                             new: dict[str, str],
                             attempts: list[int]) -> bool:
        """The compare-and-swap, its whole transaction retried.

        A deadlock, a lock wait timeout (a Galera certification failure)
        or a dropped connection rolls the transaction back, or, if the
        connection dropped after the commit, leaves it committed without
        an acknowledgement. A retry therefore first reads the rows: if
        they already hold exactly ``new``, the earlier attempt committed
        and this is a success, never a second write. That is safe because
        ``new`` is a fresh seal (a random nonce per record), so no other
        writer can have put those very values there; and a record that
        holds neither ``old`` nor ``new`` is a failed swap (False), after
        which the caller re-reads and re-checks the record, as after any
        concurrent change. Nothing is ever written unless every value of
        ``old`` is still in place, so a retry cannot mix two records.
        """
        attempts.append(1)
        # Only the record's own keys: Barbican's (plugin_name) stay.
        removed = sorted(k for k in set(old) - set(new)
                         if k.startswith(RECORD_KEY_PREFIX))
        with self.engine.begin() as conn:
            if len(attempts) > 1:
                rows = conn.execute(_STORE_META_OF, {"s": secret_id}).all()
                current = {str(k): str(v) for s, k, v in rows
                           if s == secret_id}
                if all(current.get(k) == v for k, v in new.items()) and (
                        not set(removed) & set(current)):
                    return True
            now = utcnow()
            # The compare-and-swap of every old row first, in the order of
            # ``new`` (as before records could change keys): a concurrent
            # writer's change fails it before anything is added.
            for key in [k for k in new if k in old] + removed:
                where = ((_STORE_META.c.secret_id == secret_id)
                         & (_STORE_META.c.key == key)
                         & (_STORE_META.c.value == old[key])
                         & (_STORE_META.c.deleted == sa.false()))
                if key in new:
                    statement = _STORE_META.update().where(where).values(
                        value=new[key])
                else:
                    statement = _STORE_META_ROWS.update().where(
                        (_STORE_META_ROWS.c.secret_id == secret_id)
                        & (_STORE_META_ROWS.c.key == key)
                        & (_STORE_META_ROWS.c.value == old[key])
                        & (_STORE_META_ROWS.c.deleted == sa.false())
                    ).values(deleted=True, deleted_at=now, updated_at=now)
                if conn.execute(statement).rowcount != 1:
                    conn.rollback()
                    return False
            for key in sorted(set(new) - set(old)):
                # As Barbican writes a store metadatum.
                conn.execute(_STORE_META_ROWS.insert().values(
                    id=str(uuid.uuid4()), created_at=now, updated_at=now,
                    deleted=False, status="ACTIVE", secret_id=secret_id,
                    key=key, value=new[key]))
        return True

    @_retry
    def store_metadata(self, secret_id: str) -> dict[str, str]:
        """The live store metadata of exactly ``secret_id``."""
        with self.engine.connect() as conn:
            rows = conn.execute(_STORE_META_OF, {"s": secret_id}).all()
        return {str(k): str(v) for s, k, v in rows if s == secret_id}


_STORE_META_OF = sa.select(
    _STORE_META.c.secret_id, _STORE_META.c.key, _STORE_META.c.value).where(
    (_STORE_META.c.secret_id == sa.bindparam("s"))
    & (_STORE_META.c.deleted == sa.false()))
_POLICY_BY_ID = POLICIES.select().where(POLICIES.c.id == sa.bindparam("p"))
# What a release reads of its policy (:meth:`Store.policy_intact`,
# :func:`policy_pin`, the document): strings only, for the driver path.
_POLICY_PIN_COLUMNS = ("id", "project_id", "document", "mac_kek", "mac")
_POLICY_PIN_BY_ID = sa.select(
    *(POLICIES.c[name] for name in _POLICY_PIN_COLUMNS)).where(
    POLICIES.c.id == sa.bindparam("p"))
_SPEND = SPENT_NONCES.insert()
# The statements of the request path are built once, with bound
# parameters: building one (SQLAlchemy's coercions) cost more CPU than
# running it. The rate-limit count of (:b, :w) after an upsert:
_HIT_COUNT = sa.select(RATES.c.count).where(
    (RATES.c.bucket == sa.bindparam("b"))
    & (RATES.c.window == sa.bindparam("w")))


_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                        r"[0-9a-f]{12}")


@functools.cache
def _spend_once_statement(dialect: str) -> sa.Executable:
    """``INSERT`` of a spent nonce (:digest, :expires_at) that inserts
    nothing, and raises nothing, if its digest is there already.

    Its row count says whether this statement spent it. MariaDB/MySQL:
    ``INSERT IGNORE`` (both values are well-formed, so the only error it
    can ignore is the duplicate key); PostgreSQL and sqlite: ``ON CONFLICT
    DO NOTHING``. A concurrent inserter of the same digest waits for the
    first one's transaction, and inserts only if that rolled back.
    """
    if dialect in ("mysql", "mariadb"):
        return sa_mysql.insert(SPENT_NONCES).prefix_with("IGNORE")
    if dialect == "postgresql":
        return sa_postgresql.insert(SPENT_NONCES).on_conflict_do_nothing(
            index_elements=[SPENT_NONCES.c.digest])
    if dialect == "sqlite":
        return sa_sqlite.insert(SPENT_NONCES).on_conflict_do_nothing(
            index_elements=[SPENT_NONCES.c.digest])
    raise NotImplementedError(f"nonces on {dialect!r}: MariaDB/MySQL, "
                              "PostgreSQL and sqlite are supported")


@functools.cache
def _hit_statement(dialect: str) -> tuple[sa.Executable, bool]:
    """The statement adding 1 to (:b, :w), creating it at 1.

    And whether it returns the new count itself (``RETURNING``:
    PostgreSQL, sqlite); on MariaDB/MySQL ``_HIT_COUNT`` reads it in the
    same transaction.
    """
    values = {"bucket": sa.bindparam("b"), "window": sa.bindparam("w"),
              "count": 1}
    if dialect in ("mysql", "mariadb"):
        mysql_insert = sa_mysql.insert(RATES).values(**values)
        return mysql_insert.on_duplicate_key_update(
            count=RATES.c.count + 1), False
    if dialect == "postgresql":
        pg_insert = sa_postgresql.insert(RATES).values(**values)
        return pg_insert.on_conflict_do_update(
            index_elements=[RATES.c.bucket, RATES.c.window],
            set_={"count": RATES.c.count + 1}).returning(
            RATES.c.count), True
    if dialect == "sqlite":
        lite_insert = sa_sqlite.insert(RATES).values(**values)
        return lite_insert.on_conflict_do_update(
            index_elements=[RATES.c.bucket, RATES.c.window],
            set_={"count": RATES.c.count + 1}).returning(
            RATES.c.count), True
    raise NotImplementedError(f"rate limits on {dialect!r}: MariaDB/MySQL, "
                              "PostgreSQL and sqlite are supported")


def _hit(execute: _Execute, dialect: str, bucket: str, window: int) -> int:
    """Add 1 to (bucket, window) in the running driver transaction.

    The new count: the upsert's own ``RETURNING``, or on MariaDB/MySQL a
    read of the row in the same transaction.
    """
    upsert, returns = _hit_statement(dialect)
    params = {"b": bucket, "w": window}
    cursor = execute(upsert, params)
    if not returns:
        cursor = execute(_HIT_COUNT, params)
    # Every row fetched: the statement runs to its end before the next.
    (count,), = cursor.fetchall()
    return int(count)
