"""reach: caller-ID pools, pauses and health; why a queued call waits

Revision ID: 0011_reach
Revises: 0010_rehearsal
Create Date: 2026-12-07 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0011_reach"
down_revision = "0010_rehearsal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("numbers") as batch:
        batch.add_column(sa.Column("pool", sa.String(15), nullable=True))
        batch.add_column(
            sa.Column("paused_at", callfleet.store.tables.UTCDateTime(), nullable=True)
        )
        batch.add_column(sa.Column("paused_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("webhook", sa.String(2048), nullable=True))
        batch.add_column(
            sa.Column("last_used_at", callfleet.store.tables.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("health_from", callfleet.store.tables.UTCDateTime(), nullable=True)
        )
        batch.create_index("ix_numbers_account_id_pool", ["account_id", "pool"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("waiting_reason", sa.Text, nullable=True))
        batch.create_index(
            "ix_calls_account_id_from_number_admitted_at",
            ["account_id", "from_number", "admitted_at"],
        )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_account_id_from_number_admitted_at")
        batch.drop_column("waiting_reason")
    with op.batch_alter_table("numbers") as batch:
        batch.drop_index("ix_numbers_account_id_pool")
        for name in (
            "health_from",
            "last_used_at",
            "webhook",
            "paused_reason",
            "paused_at",
            "pool",
        ):
            batch.drop_column(name)
