"""The first released schema (commit f43a069).

tee_policies, tee_bindings, tee_nonces and tee_rates, exactly as that
build's create_all made them.

Revision ID: tee0001
Revises: -
"""

from __future__ import annotations

from alembic import op

from barbican_tee.migrations import history

revision = "tee0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, columns in history.FIRST_RELEASE.items():
        op.create_table(name, *columns())


def downgrade() -> None:
    raise NotImplementedError("openstack-tee migrations go forward only")
