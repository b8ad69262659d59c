"""alembic environment of openstack-tee's tables.

Run by :func:`barbican_tee.migrations.upgrade` with a connection (in
``config.attributes["connection"]``): the suite's own version table
(``tee_alembic_version``), never Barbican's ``alembic_version``. For
``alembic revision --autogenerate`` only the suite's tables are compared.
"""

from __future__ import annotations

from alembic import context
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee import migrations


def run() -> None:
    conn = context.config.attributes.get("connection")
    if not isinstance(conn, sa.Connection):
        raise RuntimeError("openstack-tee migrations run through "
                           "`openstack-tee db upgrade`, with a connection")
    context.configure(connection=conn,
                      target_metadata=[db.METADATA,
                                       db.LEGACY_METADATA],
                      version_table=migrations.VERSION_TABLE,
                      include_name=migrations.include_name)
    with context.begin_transaction():
        context.run_migrations()


run()
