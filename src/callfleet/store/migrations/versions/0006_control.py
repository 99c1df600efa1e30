"""control: a batch's row columns in input order (for its export)

Revision ID: 0006_control
Revises: 0004_keys
Create Date: 2026-12-07 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0006_control"
down_revision = "0006_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("row_columns", callfleet.store.tables.JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("row_columns")
