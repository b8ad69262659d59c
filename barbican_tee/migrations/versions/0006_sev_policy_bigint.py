"""tee_sev_sessions.policy: a 64-bit integer.

A SEV guest policy is an unsigned 32-bit value: one with bit 31 set (a
minimum firmware API minor of 128 or more) did not fit the signed 32-bit
column on MariaDB/MySQL and PostgreSQL (sqlite stored it).

Revision ID: tee0006
Revises: tee0005
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = "tee0006"
down_revision: str | None = "tee0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tee_sev_sessions") as batch:
        batch.alter_column("policy", type_=sa.BigInteger,
                           existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
