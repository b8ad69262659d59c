"""The suite's tables as earlier builds created them, frozen.

Before migrations, each barbican-api worker ran ``create_all`` on first
use, so a database holds the tables of every build that ever ran against
it (``create_all`` adds missing tables, never changes or drops one). No
column of these tables ever changed, so a table is recognised by its name
and column names. The revisions create the first released schema and the
tables later builds added from these definitions, and
:func:`barbican_tee.migrations.upgrade` recognises (and completes) a
database created without migrations with them.

Never edit a definition here: a change to the schema is a new revision.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

Columns = Callable[[], list[sa.Column[object]]]


def _policies() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(255), nullable=False, index=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("mac_kek", sa.String(32), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False)]


def _bindings() -> list[sa.Column[object]]:
    return [
        sa.Column("secret_id", sa.String(36), primary_key=True),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("mac_kek", sa.String(32), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False)]


def _nonces() -> list[sa.Column[object]]:
    return [
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("secret_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False, index=True)]


def _rates() -> list[sa.Column[object]]:
    return [
        sa.Column("bucket", sa.String(300), primary_key=True),
        sa.Column("window", sa.Integer, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False)]


def _sev_sessions() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("secret_id", sa.String(36), nullable=False),
        sa.Column("instance_uuid", sa.String(36), nullable=False),
        sa.Column("policy", sa.Integer, nullable=False),
        sa.Column("sealed_state", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False)]


def _instance_bindings() -> list[sa.Column[object]]:
    return [
        sa.Column("secret_id", sa.String(36), primary_key=True),
        sa.Column("instance_uuid", sa.String(36), nullable=False,
                  index=True),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("retired", sa.Boolean, nullable=False, default=False),
        sa.Column("mac_kek", sa.String(32), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False)]


def _spent_nonces() -> list[sa.Column[object]]:
    return [
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True)]


# The first schema that landed on main: commit f43a069 ("Sealed secret
# store (tee_sealed) and the /v1/tee API filter, first cut").
FIRST_RELEASE: dict[str, Columns] = {
    "tee_policies": _policies,
    "tee_bindings": _bindings,
    "tee_nonces": _nonces,
    "tee_rates": _rates,
}

# The tables later builds added through create_all: tee_sev_sessions
# (d38a2c5), tee_instance_bindings (fbdc2f7), tee_spent_nonces (e18a125).
CREATE_ALL_ADDED: dict[str, Columns] = {
    "tee_sev_sessions": _sev_sessions,
    "tee_instance_bindings": _instance_bindings,
    "tee_spent_nonces": _spent_nonces,
}

# Every table a build without migrations could have created.
BEFORE_MIGRATIONS: dict[str, Columns] = {**FIRST_RELEASE,
                                         **CREATE_ALL_ADDED}


def table(name: str, md: sa.MetaData | None = None) -> sa.Table:
    """Table ``name`` as created before migrations, in ``md``."""
    return sa.Table(name, md if md is not None else sa.MetaData(),
                    *BEFORE_MIGRATIONS[name]())
