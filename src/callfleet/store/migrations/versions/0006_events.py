"""events: live progress (call and batch events) for the Server-Sent Events streams

Revision ID: 0006_events
Revises: 0004_keys
Create Date: 2026-12-07 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import callfleet.store.tables

revision = "0006_events"
down_revision = "0004_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("call_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", callfleet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events") as batch:
        batch.create_index(batch.f("ix_events_account_id_id"), ["account_id", "id"], unique=False)
        batch.create_index(batch.f("ix_events_batch_id_id"), ["batch_id", "id"], unique=False)
        batch.create_index(batch.f("ix_events_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("events")
