"""tee_endorsements: the endorsement cache (VCEKs, AMD CAs and CRLs, TDX
collateral), imported by an administrator or a service.

Nothing in it is trusted: every entry is verified against the pinned roots
on import and again on use; CRL rows carry a MAC under a key derived from
the KEK (see :mod:`barbican_tee.api.endorsements`).

Revision ID: tee0005
Revises: tee0004
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = "tee0005"
down_revision: str | None = "tee0004"
branch_labels = None
depends_on = None


def _exact(length: int) -> sa.types.TypeEngine[str]:
    # As tee0003 made every string column: exact on MariaDB/MySQL too.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "tee_endorsements",
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
        sa.Column("mac", _exact(64), nullable=True))
    op.create_index("ix_tee_endorsements_lookup", "tee_endorsements",
                    ["kind", "lookup"])


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
