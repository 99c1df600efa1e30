"""rehearsal: a batch marked as a rehearsal; each of its calls names the row it stood in for

Revision ID: 0010_rehearsal
Revises: 0006_control
Create Date: 2026-12-07 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0010_rehearsal"
down_revision = "0009_storage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(
            sa.Column("rehearsal", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("rehearsal_of", callfleet.store.tables.JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("rehearsal_of")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("rehearsal")
