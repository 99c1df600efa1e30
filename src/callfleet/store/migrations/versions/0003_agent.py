"""the agent on the call: model, measured latency, post-call state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("model", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("latency", callfleet.store.tables.JSONType, nullable=True))
        batch.add_column(sa.Column("postcall_state", sa.String(length=12), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("postcall_state")
        batch.drop_column("latency")
        batch.drop_column("model")
