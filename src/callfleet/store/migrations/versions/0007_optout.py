"""optout: a call's `opted_out` flag, and the call an opt-out came from on the DNC list

Revision ID: 0007_optout
Revises: 0006_control
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_optout"
down_revision = "0006_control"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("opted_out", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("dnc") as batch:
        batch.add_column(sa.Column("call_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dnc") as batch:
        batch.drop_column("call_id")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("opted_out")
