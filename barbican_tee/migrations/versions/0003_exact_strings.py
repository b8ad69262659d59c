"""Exact string compares on MariaDB/MySQL; tee_nonces dropped.

MariaDB's and MySQL's default collations ignore case (and trailing
spaces), so a nonce digest, secret id or policy id differing only in case
matched the stored one. Every string column of the suite's tables gets
the binary collation utf8mb4_bin there (which still pads with spaces on
MariaDB: the suite compares every row it reads exactly); PostgreSQL's and
sqlite's default compares are already exact. tee_nonces has been unused
since e18a125 (nonces are stateless; spent ones are in tee_spent_nonces).

tee_bindings and tee_instance_bindings stay: ``openstack-tee rewrap``
reads them to upgrade the sealed records of earlier releases.

Revision ID: tee0003
Revises: tee0002
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from barbican_tee.migrations import history

revision = "tee0003"
down_revision: str | None = "tee0002"
branch_labels = None
depends_on = None

COLLATION = "utf8mb4_bin"


def upgrade() -> None:
    op.drop_table("tee_nonces")
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for name in history.BEFORE_MIGRATIONS:
        if name == "tee_nonces":
            continue
        for column in history.table(name).columns:
            # Text is a String too, and stays as it is.
            if type(column.type) is not sa.String:
                continue
            length = column.type.length
            op.alter_column(
                name, column.name,
                existing_type=sa.String(length),
                type_=mysql.VARCHAR(length, collation=COLLATION),
                existing_nullable=column.nullable)


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
