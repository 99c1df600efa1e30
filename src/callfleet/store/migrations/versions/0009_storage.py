"""storage: recordings' life on calls, the upload outbox, the erasure audit

Revision ID: 0009_storage
Revises: 0006_control
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import callfleet.store.tables

revision = "0009_storage"
down_revision = "0007_optout"
branch_labels = None
depends_on = None

UTC = callfleet.store.tables.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recording_state", sa.String(12), nullable=True))
        batch.add_column(sa.Column("recording_expires_at", UTC(), nullable=True))
        batch.add_column(sa.Column("recording_removed_at", UTC(), nullable=True))
        batch.create_index("ix_calls_account_id_to_number", ["account_id", "to_number"])
        batch.create_index(
            "ix_calls_recording_state_recording_expires_at",
            ["recording_state", "recording_expires_at"],
        )
    # Recordings written before this revision are files the API already serves.
    op.execute(
        "UPDATE calls SET recording_state = 'stored' "
        "WHERE recording_path IS NOT NULL AND recording_state IS NULL"
    )
    op.create_table(
        "recording_uploads",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("local_path", sa.String(1000), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTC(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_recording_uploads_call_id_calls"
        ),
        sa.PrimaryKeyConstraint("key", name="pk_recording_uploads"),
    )
    op.create_index("ix_recording_uploads_call_id", "recording_uploads", ["call_id"])
    op.create_index(
        "ix_recording_uploads_node_next_attempt_at",
        "recording_uploads",
        ["node", "next_attempt_at"],
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=True),
        sa.Column("number_hash", sa.String(64), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("recordings", sa.Integer(), nullable=False),
        sa.Column("transcript_turns", sa.Integer(), nullable=False),
        sa.Column("analyses", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_erasures_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    op.create_index("ix_erasures_account_id", "erasures", ["account_id"])
    op.create_index("ix_erasures_account_id_created_at", "erasures", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("recording_uploads")
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_recording_state_recording_expires_at")
        batch.drop_index("ix_calls_account_id_to_number")
        batch.drop_column("recording_removed_at")
        batch.drop_column("recording_expires_at")
        batch.drop_column("recording_state")
