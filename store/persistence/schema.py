"""SQLAlchemy Core tables. The Alembic revisions in `migrations/` create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# Ids and seqs are BIGINT on PostgreSQL (revision 0004); SQLite's INTEGER is 64-bit already, and
# an INTEGER PRIMARY KEY stays the rowid there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The command line as typed has no length bound: TEXT on PostgreSQL (revision 0004), which,
# unlike SQLite, enforces VARCHAR lengths.
CommandText = String(200).with_variant(Text(), "postgresql")

# One row: who this store is. The lineage travels in exports so an import can name its source.
store_identity = Table(
    "store_identity",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lineage", String(36), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The log's last seq and hash, written by every append (revision 0002): a log cut short
    # no longer matches it.
    Column("head_seq", BigId, nullable=False, server_default="0"),
    Column("head_hash", String(64), nullable=True),
    # The first seq hashed with chain v2 (revision 0003): earlier events keep v1.
    Column("chain_v2_from", BigId, nullable=False, server_default="1"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("recorded_at", BigInteger, nullable=False),  # UTC microseconds, strictly increasing
    Column("actor", String(200), nullable=False),
    Column("command", CommandText, nullable=False),
    Column("kind", String(16), nullable=False),  # change | import | rollback | sync
    Column("reason", Text, nullable=True),
    Column("details", Text, nullable=False),  # JSON object
    Index("ix_transactions_recorded_at", "recorded_at", unique=True),
    Index("ix_transactions_actor", "actor", "id"),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),  # gap-free, global order
    Column("tx_id", BigId, ForeignKey("transactions.id"), nullable=False),
    Column("stream", String(140), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("type_version", Integer, nullable=False),
    Column("data", Text, nullable=False),  # canonical JSON
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream", "stream_version", name="uq_events_stream_version"),
    Index("ix_events_tx_id", "tx_id"),
    Index("ix_events_type_seq", "type", "seq"),
    Index("ix_events_stream_seq", "stream", "seq"),
)

# Large immutable values (component metadata, policy text) stored once, referenced by sha256.
contents = Table(
    "contents",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("body", Text, nullable=False),
)

# Every entity the read models have ever seen, so "state as of S" costs O(entities).
entities = Table(
    "entities",
    metadata,
    Column("kind", String(16), primary_key=True),  # component | setting
    Column("key", String(200), primary_key=True),
)

component_versions = Table(
    "component_versions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("component_id", String(140), nullable=False),
    Column("from_seq", BigId, nullable=False),
    Column("to_seq", BigId, nullable=True),
    Column("state", Text, nullable=False),  # small JSON; metadata/policy by content hash
    Index("ix_component_versions_lookup", "component_id", "from_seq"),
    Index("ix_component_versions_to_seq", "to_seq"),
)

setting_versions = Table(
    "setting_versions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("key", String(200), nullable=False),  # env:<NAME> | paths
    Column("from_seq", BigId, nullable=False),
    Column("to_seq", BigId, nullable=True),
    Column("value", Text, nullable=False),  # JSON
    Index("ix_setting_versions_lookup", "key", "from_seq"),
    Index("ix_setting_versions_to_seq", "to_seq"),
)

tags = Table(
    "tags",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("seq", BigId, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
)
