"""Anchor the head of the log: the store records its last seq and hash on every append, so
cutting whole transactions off the end is detected by `state verify`.

Revision ID: 0002_head_anchor
Revises: 0001_initial
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_head_anchor"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("store_identity") as batch:
        batch.add_column(sa.Column("head_seq", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("head_hash", sa.String(64), nullable=True))
    # Existing stores: the head is whatever the log ends with now.
    op.execute(
        "UPDATE store_identity SET "
        "head_seq = COALESCE((SELECT MAX(seq) FROM events), 0), "
        "head_hash = (SELECT hash FROM events ORDER BY seq DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("store_identity") as batch:
        batch.drop_column("head_hash")
        batch.drop_column("head_seq")
