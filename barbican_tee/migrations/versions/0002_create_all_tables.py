"""The tables builds before migrations added with create_all.

tee_sev_sessions (d38a2c5), tee_instance_bindings (fbdc2f7) and
tee_spent_nonces (e18a125), as those builds created them. A database one
of those builds created (without a version table) is stamped here, once
the missing ones are created: see barbican_tee.migrations.upgrade.

Revision ID: tee0002
Revises: tee0001
"""

from __future__ import annotations

from alembic import op

from barbican_tee.migrations import history

revision = "tee0002"
down_revision: str | None = "tee0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, columns in history.CREATE_ALL_ADDED.items():
        op.create_table(name, *columns())


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
