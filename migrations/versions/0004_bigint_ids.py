"""BIGINT ids and seqs on PostgreSQL (a store shared by a fleet outlives 2^31 events), and the
recorded command line as TEXT there (PostgreSQL enforces VARCHAR(200); SQLite never did, so a
long command line that SQLite kept must fit on PostgreSQL too).

SQLite's INTEGER is already 64-bit (and an INTEGER PRIMARY KEY must stay the rowid), so this
revision changes nothing there. On PostgreSQL it widens every id/seq column and the sequences
behind the read models' surrogate keys.

Revision ID: 0004_bigint_ids
Revises: 0003_chain_v2
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_bigint_ids"
down_revision: str | None = "0003_chain_v2"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "store_identity": ("head_seq", "chain_v2_from"),
    "transactions": ("id",),
    "events": ("seq", "tx_id"),
    "component_versions": ("id", "from_seq", "to_seq"),
    "setting_versions": ("id", "from_seq", "to_seq"),
    "tags": ("seq",),
}
SEQUENCES = ("component_versions_id_seq", "setting_versions_id_seq")


def _alter(to: type[sa.types.TypeEngine[int]], seq_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=to(), existing_nullable=column == "to_seq")
    for name in SEQUENCES:
        op.execute(f"ALTER SEQUENCE {name} AS {seq_type}")


def upgrade() -> None:
    _alter(sa.BigInteger, "bigint")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("transactions", "command", type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("transactions", "command", type_=sa.String(200), existing_nullable=False)
    _alter(sa.Integer, "integer")
