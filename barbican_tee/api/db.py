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
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

from oslo_config import cfg
from oslo_db import exception as db_exc
from oslo_db import options as db_options
from oslo_db.sqlalchemy import engines
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from barbican_tee.plugin import keyring as keyring_mod

# The schema comes from the migrations (barbican_tee.migrations); these
# tables must stay what the migrations create (a test compares them).
METADATA = sa.MetaData()


def _exact(length: int) -> sa.types.TypeEngine[str]:
    """A string column compared byte for byte on every database.

    MariaDB's and MySQL's default collations ignore case; their binary
    collation does not (PostgreSQL's and sqlite's defaults are exact).
    """
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


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
    sa.Column("policy", sa.Integer, nullable=False),
    # The guest owner's TEK/TIK, sealed under the KEK like a secret.
    sa.Column("sealed_state", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
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


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def make_engine(url: str, conf: cfg.ConfigOpts | None = None) -> sa.Engine:
    """An engine on ``url`` built as Barbican builds its own.

    oslo.db's engine factory with Barbican's ``[database]`` options from
    ``conf`` (pool sizes, ``max_retries``, ``connection_recycle_time``,
    ``mysql_sql_mode`` ...; oslo.db's defaults without ``conf``): pooled
    connections are checked before use and one that died with a database
    restart or failover is replaced, and errors are oslo.db's (say
    ``DBDuplicateEntry``, ``DBDeadlock``). Creates no table: the schema
    comes from ``openstack-tee db upgrade`` (:mod:`barbican_tee.migrations`).
    """
    options: dict[str, Any] = {"mysql_sql_mode": "TRADITIONAL"}
    if conf is not None:
        conf.register_opts(db_options.database_opts, group="database")
        options = {name: getattr(conf.database, name)
                   for name in _ENGINE_OPTIONS}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite and "timeout=" not in url:
        # Several gunicorn workers share one file: wait for the lock.
        extra = "timeout=30"
        current = options.get("connection_parameters")
        options["connection_parameters"] = (
            f"{current}&{extra}" if current else extra)
    engine: sa.Engine = engines.create_engine(url, **options)
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# A duplicate key: oslo.db's engine raises DBDuplicateEntry (an engine
# built otherwise, sqlalchemy's IntegrityError).
DUPLICATE_KEY = (db_exc.DBDuplicateEntry, sa.exc.IntegrityError)

# oslo.db's [database] options that its engine factory takes, as
# oslo.db's enginefacade (Barbican's engine) passes them.
_ENGINE_OPTIONS = (
    "mysql_sql_mode", "mysql_wsrep_sync_wait", "connection_recycle_time",
    "connection_debug", "max_pool_size", "max_overflow", "pool_timeout",
    "sqlite_synchronous", "connection_trace", "max_retries",
    "retry_interval", "connection_parameters")


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


class Store:
    """Queries of the attestation API; each call is its own transaction."""

    def __init__(self, engine: sa.Engine,
                 keyring: keyring_mod.Keyring) -> None:
        self.engine = engine
        self.keyring = keyring

    # -- policies -------------------------------------------------------
    def create_policy(self, policy_id: str, project_id: str,
                      document: dict[str, Any]) -> None:
        row = {"id": policy_id, "project_id": project_id,
               "document": json.dumps(document, sort_keys=True),
               "created_at": utcnow()}
        kid = self.keyring.current.kid
        row["mac_kek"] = kid
        row["mac"] = self.keyring.mac(kid, _policy_mac_input(row)).hex()
        with self.engine.begin() as conn:
            conn.execute(POLICIES.insert().values(**row))

    def list_policies(self, project_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(POLICIES.select().where(
                POLICIES.c.project_id == project_id).order_by(
                POLICIES.c.created_at)).mappings().all()
        return [dict(r) for r in rows]

    def get_policy(self, policy_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(POLICIES.select().where(
                POLICIES.c.id == policy_id)).mappings().first()
        return dict(row) if row else None

    def policy_intact(self, row: dict[str, Any]) -> bool:
        return self.keyring.check_mac(row["mac_kek"],
                                      _policy_mac_input(row),
                                      bytes.fromhex(row["mac"]))

    def delete_policy(self, policy_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(POLICIES.delete().where(
                POLICIES.c.id == policy_id))
        return bool(result.rowcount)

    def remac_rows(self) -> tuple[int, int]:
        """Re-MAC policy rows under the current KEK.

        Only rows that authenticate under their recorded key are
        re-MACed: a tampered row stays tampered. Returns (re-MACed,
        refused).
        """
        kid = self.keyring.current.kid
        done = refused = 0
        with self.engine.begin() as conn:
            rows = conn.execute(POLICIES.select().where(
                POLICIES.c.mac_kek != kid)).mappings().all()
            for row in rows:
                data = _policy_mac_input(dict(row))
                if not self.keyring.check_mac(
                        row["mac_kek"], data, bytes.fromhex(row["mac"])):
                    refused += 1
                    continue
                conn.execute(POLICIES.update().where(
                    POLICIES.c.id == row["id"]).values(
                    mac_kek=kid, mac=self.keyring.mac(kid, data).hex()))
                done += 1
        return done, refused

    # -- bindings of earlier releases (read by rewrap only) ----------------
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
                if row is not None and self.keyring.check_mac(
                        row["mac_kek"], _binding_mac_input(dict(row)),
                        bytes.fromhex(row["mac"])):
                    policy_id = str(row["policy_id"])
            if inspector.has_table(INSTANCE_BINDINGS.name):
                row = conn.execute(INSTANCE_BINDINGS.select().where(
                    INSTANCE_BINDINGS.c.secret_id == secret_id)
                ).mappings().first()
                if row is not None and self.keyring.check_mac(
                        row["mac_kek"], _instance_mac_input(dict(row)),
                        bytes.fromhex(row["mac"])):
                    instance = str(row["instance_uuid"])
                    retired = bool(row["retired"])
        return policy_id, instance, retired

    # -- nonces ---------------------------------------------------------
    def spend_nonce(self, digest: str, expires_at: int,
                    prune_before: int) -> bool:
        """Record a verified nonce as spent; False if it already was.

        One ``INSERT`` on the primary key: of concurrent releases of one
        nonce, in any worker, exactly one inserts the row. Rows of nonces
        that expired before ``prune_before`` go in the same transaction
        (an index range; an expired nonce is refused before this table is
        read, so its row is no longer needed).
        """
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(SPENT_NONCES.insert().values(
                        digest=digest, expires_at=expires_at))
            except DUPLICATE_KEY:
                return False
            conn.execute(SPENT_NONCES.delete().where(
                SPENT_NONCES.c.expires_at < prune_before))
        return True

    # -- SEV launch sessions ---------------------------------------------
    def add_sev_session(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(SEV_SESSIONS.delete().where(
                SEV_SESSIONS.c.expires_at < utcnow()))
            conn.execute(SEV_SESSIONS.insert().values(**row))

    def take_sev_session(self, session_id: str) -> dict[str, Any] | None:
        """The session row, removed: a measurement is answered once."""
        with self.engine.begin() as conn:
            row = conn.execute(SEV_SESSIONS.select().where(
                SEV_SESSIONS.c.id == session_id)).mappings().first()
            if row is None:
                return None
            result = conn.execute(SEV_SESSIONS.delete().where(
                SEV_SESSIONS.c.id == session_id))
            if result.rowcount != 1:
                return None
        return dict(row)

    # -- rate limits ----------------------------------------------------
    def hit(self, bucket: str, window: int, limit: int) -> bool:
        """Count one request in ``bucket``; False once over ``limit``."""
        return self.hit_many([(bucket, limit)], window)

    def hit_many(self, buckets: list[tuple[str, int]], window: int) -> bool:
        """Count one request in each (bucket, limit), in one transaction.

        False if any bucket is over its limit.
        """
        ok = True
        with self.engine.begin() as conn:
            for bucket, limit in buckets:
                where = (RATES.c.bucket == bucket) & (RATES.c.window == window)
                updated = conn.execute(RATES.update().where(where).values(
                    count=RATES.c.count + 1))
                if not updated.rowcount:
                    conn.execute(RATES.delete().where(
                        (RATES.c.bucket == bucket)
                        & (RATES.c.window < window)))
                    try:
                        # A savepoint, so that losing an insert race to
                        # another worker (other databases than sqlite,
                        # which serialises writers) only retries the update.
                        with conn.begin_nested():
                            conn.execute(RATES.insert().values(
                                bucket=bucket, window=window, count=1))
                    except DUPLICATE_KEY:
                        conn.execute(RATES.update().where(where).values(
                            count=RATES.c.count + 1))
                count = conn.execute(sa.select(RATES.c.count).where(
                    where)).scalar_one()
                ok = ok and count <= limit
        return ok

    # -- Barbican's secrets ---------------------------------------------
    def secret_project(self, secret_id: str) -> str | None:
        """The Keystone project owning a live secret, if it exists."""
        query = sa.select(_PROJECTS.c.external_id).select_from(
            _SECRETS.join(_PROJECTS, _SECRETS.c.project_id == _PROJECTS.c.id)
        ).where((_SECRETS.c.id == secret_id)
                & (_SECRETS.c.deleted == sa.false()))
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        return str(value) if value is not None else None

    def sealed_secret_ids(self, plugin_path: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_STORE_META.c.secret_id).where(
                (_STORE_META.c.key == "plugin_name")
                & (_STORE_META.c.value == plugin_path)
                & (_STORE_META.c.deleted == sa.false()))).all()
        return [str(r[0]) for r in rows]

    def secrets_with_metadata(self, key: str, value: str) -> list[str]:
        """Live secrets whose store metadata has ``key`` = ``value``.

        An index only: every caller opens each record and checks what it
        says before acting on it.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_STORE_META.c.secret_id).where(
                (_STORE_META.c.key == key)
                & (_STORE_META.c.value == value)
                & (_STORE_META.c.deleted == sa.false()))).all()
        return sorted({str(r[0]) for r in rows})

    def replace_store_metadata(self, secret_id: str,
                               old: dict[str, str],
                               new: dict[str, str]) -> bool:
        """Swap a sealed record's values in one transaction.

        Only keys present in both are written (a re-sealed record has the
        same keys), and only if every old value is still in place, so a
        concurrent writer makes this a no-op instead of a mix.
        """
        if set(new) - set(old):
            raise ValueError("re-sealed record has different keys")
        with self.engine.begin() as conn:
            for key, value in new.items():
                result = conn.execute(_STORE_META.update().where(
                    (_STORE_META.c.secret_id == secret_id)
                    & (_STORE_META.c.key == key)
                    & (_STORE_META.c.value == old[key])
                    & (_STORE_META.c.deleted == sa.false())
                ).values(value=value))
                if result.rowcount != 1:
                    conn.rollback()
                    return False
        return True

    def store_metadata(self, secret_id: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(
                _STORE_META.c.key, _STORE_META.c.value).where(
                (_STORE_META.c.secret_id == secret_id)
                & (_STORE_META.c.deleted == sa.false()))).all()
        return {str(k): str(v) for k, v in rows}
