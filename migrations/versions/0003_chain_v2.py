"""Version the hash chain: events from `chain_v2_from` on hash the stored data text as is.

Chain v1 hashed a sorted re-serialization of every event's data, which for an attach means
sorting and encoding tens of kilobytes of tool schemas once more per event. v2 hashes the exact
bytes stored (so any edit of them is detected, even a reformatting). Existing stores keep v1
for the events they hold and switch at their next event.

Revision ID: 0003_chain_v2
Revises: 0002_head_anchor
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_chain_v2"
down_revision: str | None = "0002_head_anchor"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("store_identity") as batch:
        batch.add_column(sa.Column("chain_v2_from", sa.Integer, nullable=False, server_default="1"))
    op.execute("UPDATE store_identity SET chain_v2_from = head_seq + 1")


def downgrade() -> None:
    # Events hashed with v2 would no longer verify under v1: refuse rather than corrupt.
    bind = op.get_bind()
    head, v2_from = bind.execute(
        sa.text("SELECT head_seq, chain_v2_from FROM store_identity")
    ).one_or_none() or (0, 1)
    if head >= v2_from:
        raise RuntimeError("this store holds v2-hashed events; it cannot go back to 0002")
    with op.batch_alter_table("store_identity") as batch:
        batch.drop_column("chain_v2_from")
