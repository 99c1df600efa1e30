"""keys: API keys' last use, the webhook secret before a rotation, expiring idempotency keys

Revision ID: 0004_keys
Revises: 0003
Create Date: 2026-12-07 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0004_keys"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column(
                "last_used_at", callfleet.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )

    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("previous_webhook_secret", sa.String(length=100), nullable=True))
        batch.add_column(
            sa.Column(
                "previous_webhook_secret_expires_at",
                callfleet.store.tables.UTCDateTime(timezone=True),
                nullable=True,
            )
        )

    with op.batch_alter_table("idempotency_keys") as batch:
        batch.create_index(batch.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index(batch.f("ix_idempotency_keys_created_at"))
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("previous_webhook_secret_expires_at")
        batch.drop_column("previous_webhook_secret")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
