"""Initial schema: transactions, events, temporal read models, contents, tags, store identity.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("lineage", sa.String(36), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_store_identity"),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.Integer, autoincrement=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("command", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transactions"),
    )
    op.create_index("ix_transactions_recorded_at", "transactions", ["recorded_at"], unique=True)
    op.create_index("ix_transactions_actor", "transactions", ["actor", "id"])
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, autoincrement=False),
        sa.Column("tx_id", sa.Integer, nullable=False),
        sa.Column("stream", sa.String(140), nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("type_version", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["tx_id"], ["transactions.id"], name="fk_events_tx_id_transactions"
        ),
        sa.UniqueConstraint("stream", "stream_version", name="uq_events_stream_version"),
    )
    op.create_index("ix_events_tx_id", "events", ["tx_id"])
    op.create_index("ix_events_type_seq", "events", ["type", "seq"])
    op.create_index("ix_events_stream_seq", "events", ["stream", "seq"])
    op.create_table(
        "contents",
        sa.Column("hash", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_contents"),
    )
    op.create_table(
        "entities",
        sa.Column("kind", sa.String(16)),
        sa.Column("key", sa.String(200)),
        sa.PrimaryKeyConstraint("kind", "key", name="pk_entities"),
    )
    op.create_table(
        "component_versions",
        sa.Column("id", sa.Integer),
        sa.Column("component_id", sa.String(140), nullable=False),
        sa.Column("from_seq", sa.Integer, nullable=False),
        sa.Column("to_seq", sa.Integer, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_component_versions"),
    )
    op.create_index(
        "ix_component_versions_lookup", "component_versions", ["component_id", "from_seq"]
    )
    op.create_index("ix_component_versions_to_seq", "component_versions", ["to_seq"])
    op.create_table(
        "setting_versions",
        sa.Column("id", sa.Integer),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("from_seq", sa.Integer, nullable=False),
        sa.Column("to_seq", sa.Integer, nullable=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_setting_versions"),
    )
    op.create_index("ix_setting_versions_lookup", "setting_versions", ["key", "from_seq"])
    op.create_index("ix_setting_versions_to_seq", "setting_versions", ["to_seq"])
    op.create_table(
        "tags",
        sa.Column("name", sa.String(100)),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tags"),
    )


def downgrade() -> None:
    for name in (
        "tags",
        "setting_versions",
        "component_versions",
        "entities",
        "contents",
        "events",
        "transactions",
        "store_identity",
    ):
        op.drop_table(name)
