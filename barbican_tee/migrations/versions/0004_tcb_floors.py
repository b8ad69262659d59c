"""tee_floors: platform TCB floors set by an administrator.

One row per product (milan, genoa, turin, tdx), with a MAC under a key
derived from the KEK (see :mod:`barbican_tee.api.floors`).

Revision ID: tee0004
Revises: tee0003
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "tee0004"
down_revision: str | None = "tee0003"
branch_labels = None
depends_on = None


def _exact(length: int) -> sa.types.TypeEngine[str]:
    # As tee0003 made every string column: exact on MariaDB/MySQL too.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "tee_floors",
        sa.Column("product", _exact(16), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", _exact(255), nullable=False),
        sa.Column("mac_kek", _exact(32), nullable=False),
        sa.Column("mac", _exact(64), nullable=False))


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
