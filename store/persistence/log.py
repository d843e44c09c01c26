"""The event log: the only writer of `transactions` and `events`, and their readers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, and_, bindparam, func, insert, select, update

from wassette_state.store.domain.errors import ConflictError, ValidationError
from wassette_state.store.domain.state import INSTANCE_STREAM, Metadata, compact
from wassette_state.store.persistence import db
from wassette_state.store.persistence.schema import events, store_identity, transactions

if TYPE_CHECKING:  # the event models (pydantic) load only when a command writes or replays
    from wassette_state.store.domain import events as ev

GENESIS_HASH = "0" * 64
TX_KINDS = ("change", "import", "rollback", "sync")
# A clock reading at most this far behind the last transaction is a small correction (NTP):
# the transaction is pinned just after the last one, so times stay in order. Further behind,
# one of the two readings is wrong, and a glitch must not pin every later transaction to it.
CLOCK_STEP_TOLERANCE_US = 60 * 1_000_000


# Built once: json.dumps with options constructs a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical(obj: Any) -> str:
    """Sorted keys: the form that is hashed, independent of how a dict was built."""
    return _CANONICAL(obj)


def tx_digest(command: str, reason: str | None, details: Any) -> str:
    return hashlib.sha256(
        canonical({"command": command, "reason": reason, "details": details}).encode()
    ).hexdigest()


def _position(row: Mapping[str, Any]) -> dict[str, Any]:
    """What both chain versions hash besides the data: where the event is, and its tx."""
    return {
        "seq": row["seq"],
        "tx": row["tx_id"],
        "recorded_at": row["recorded_at"],
        "actor": row["actor"],
        "kind": row["kind"],
        "stream": row["stream"],
        "stream_version": row["stream_version"],
        "type": row["type"],
        "type_version": row["type_version"],
        # The transaction's command, reason and details, so editing them breaks the chain.
        "txd": row.get("tx_digest"),
    }


def chain_hash(prev: str, row: Mapping[str, Any]) -> str:
    """sha256(prev ‖ canonical JSON of the event with its position and transaction)."""
    body = canonical({**_position(row), "data": row["data"]})
    return hashlib.sha256((prev + body).encode()).hexdigest()


def chain_hash_v2(prev: str, row: Mapping[str, Any], data_text: str) -> str:
    """sha256(prev ‖ canonical JSON of the position and transaction ‖ the stored data text).

    The data is hashed as the exact text stored, so a large attach is not re-serialized (v1
    sorted and re-encoded it) and any edit of the stored bytes breaks the chain.
    """
    header = canonical(_position(row))
    return hashlib.sha256(f"{prev}\n{header}\n{data_text}".encode()).hexdigest()


def event_hash(prev: str, row: Mapping[str, Any], data_text: str, v2_from: int) -> str:
    """The chain link of one event, in the chain version its seq was written with."""
    if row["seq"] >= v2_from:
        return chain_hash_v2(prev, row, data_text)
    return chain_hash(prev, row)


def stream_of(event: Any) -> str:
    """Component events go to the component's stream, settings to the instance stream."""
    return getattr(event, "component_id", None) or INSTANCE_STREAM


@dataclass(frozen=True)
class TxInfo:
    actor: str
    command: str
    kind: str = "change"
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    tx_id: int
    recorded_at: int
    actor: str
    kind: str
    command: str
    stream: str
    stream_version: int
    type: str
    type_version: int
    data: dict[str, Any]
    hash: str
    reason: str | None = None
    # The data exactly as stored (chain v2 hashes it; rebuild reuses the metadata text in it).
    data_text: str | None = field(default=None, repr=False, compare=False)

    def event(self) -> ev.Event:
        from wassette_state.store.domain import events as ev

        return ev.from_data(self.type, self.type_version, self.data)

    def trusted_event(self) -> ev.Event:
        """The event without re-validation: for replays of a log whose every event was
        validated on its way in (and whose chain `verify` checks)."""
        from wassette_state.store.domain import events as ev

        return ev.from_data_trusted(self.type, self.type_version, self.data)

    @property
    def component_id(self) -> str | None:
        return None if self.stream == INSTANCE_STREAM else self.stream


@dataclass(frozen=True)
class Appended:
    tx_id: int
    recorded_at: int
    events: list[StoredEvent]
    # seq -> the attach's metadata with its JSON text already made (the read models reuse it).
    metadata: dict[int, Metadata] = field(default_factory=dict)


def stream_versions(conn: Connection, streams: Sequence[str]) -> dict[str, int]:
    """Current version of each stream (0 for a stream with no events)."""
    found: dict[str, int] = dict.fromkeys(streams, 0)
    for chunk in _chunks(sorted(set(streams)), 500):
        rows = conn.execute(
            select(events.c.stream, func.max(events.c.stream_version))
            .where(events.c.stream.in_(chunk))
            .group_by(events.c.stream)
        )
        for stream, version in rows:
            found[stream] = version
    return found


def head(conn: Connection) -> tuple[int, str, int, int]:
    """(last seq, last hash, last tx id, last recorded_at); zeros for an empty log."""
    return _head(conn)[:4]  # type: ignore[return-value]


def _head(conn: Connection) -> tuple[int, str, int, int, int, int]:
    """`head` plus the chain's v2 start and the latest recorded_at of any transaction."""
    row = conn.execute(_HEAD).one()
    return (
        row[0] or 0,
        row[1] or GENESIS_HASH,
        row[2] or 0,
        row[3] or 0,
        row[4] or 1,
        row[5] or 0,
    )


def _head_statement() -> Select[Any]:
    # One statement (five index lookups): this runs in every command, twice; on PostgreSQL
    # each statement saved is a round trip saved under the write lock.
    def last(col: Any, order: Any) -> Any:
        return select(col).order_by(order.desc()).limit(1).scalar_subquery()

    return select(
        last(events.c.seq, events.c.seq),
        last(events.c.hash, events.c.seq),
        last(transactions.c.id, transactions.c.id),
        last(transactions.c.recorded_at, transactions.c.id),
        select(store_identity.c.chain_v2_from).limit(1).scalar_subquery(),
        last(transactions.c.recorded_at, transactions.c.recorded_at),
    )


_HEAD = _head_statement()


def append(
    conn: Connection,
    tx: TxInfo,
    new_events: Sequence[ev.Event],
    expected: Mapping[str, int] | None = None,
    *,
    now_us: int | None = None,
) -> Appended:
    """Append one transaction atomically; call inside a write transaction (BEGIN IMMEDIATE).

    `expected` maps streams to the version the decision was based on: a mismatch means another
    writer changed the stream in between, and nothing is written.
    """
    if tx.kind not in TX_KINDS:
        raise ValueError(f"unknown transaction kind {tx.kind!r}")
    if not new_events:
        raise ValueError("a transaction needs at least one event")
    _check_utf8("the actor, command or reason", [tx.actor, tx.command, tx.reason, tx.details])
    from wassette_state.store.domain import events as ev

    streams = [stream_of(e) for e in new_events]
    # Every stream the decision read is checked, also those this transaction does not write.
    current = stream_versions(conn, [*streams, *(expected or {})])
    for stream, version in (expected or {}).items():
        if current.get(stream, version) != version:
            raise ConflictError(
                f"concurrent change: {_stream_label(stream)} moved from version {version} "
                f"to {current[stream]} while this command was deciding; try again"
            )
    last_seq, prev_hash, last_tx, last_at, v2_from, latest_at = _head(conn)
    if now_us is None:
        from wassette_state.store.persistence.clock import now_us as clock

        now_us = clock()
    recorded_at = _recorded_at(conn, now_us, last_at, latest_at)
    tx_id = last_tx + 1
    conn.execute(
        insert(transactions).values(
            id=tx_id,
            recorded_at=recorded_at,
            actor=tx.actor,
            command=tx.command,
            kind=tx.kind,
            reason=tx.reason,
            details=canonical(tx.details),
        )
    )
    rows: list[tuple[Any, ...]] = []
    stored: list[StoredEvent] = []
    metadata: dict[int, Metadata] = {}
    seq = last_seq
    try:
        digest = tx_digest(tx.command, tx.reason, json.loads(canonical(tx.details)))
    except UnicodeEncodeError:
        raise ValidationError("command text is not valid UTF-8") from None
    type_versions = ev.TYPE_VERSIONS
    for event, stream in zip(new_events, streams, strict=True):
        seq += 1
        current[stream] += 1
        data = ev.to_data(event)
        if event.type == "component.attached":
            # The tool schemas are encoded once: for the stored text, the hash and the read
            # models alike (`metadata` is the last field, so the text is spliced).
            meta = Metadata(doc=data["metadata"])
            head_text = compact({k: v for k, v in data.items() if k != "metadata"})
            data_text = f'{head_text[:-1]},"metadata":{meta.raw}}}'
            metadata[seq] = meta
        else:
            data_text = compact(data)
        row: dict[str, Any] = {
            "seq": seq,
            "tx_id": tx_id,
            "recorded_at": recorded_at,
            "actor": tx.actor,
            "kind": tx.kind,
            "stream": stream,
            "stream_version": current[stream],
            "type": event.type,
            "type_version": type_versions[event.type],
            "data": data,
            "tx_digest": digest,
        }
        try:
            prev_hash = event_hash(prev_hash, row, data_text, v2_from)
        except UnicodeEncodeError:  # e.g. undecodable bytes from the command line
            raise ValidationError(f"{event.type}: text is not valid UTF-8") from None
        row["hash"] = prev_hash
        del row["tx_digest"]
        stored.append(StoredEvent(command=tx.command, reason=tx.reason, data_text=data_text, **row))
        rows.append(
            (
                seq,
                tx_id,
                stream,
                row["stream_version"],
                event.type,
                row["type_version"],
                data_text,
                prev_hash,
            )
        )
    if rows:
        db.bulk_insert(conn, events, _EVENT_COLUMNS, rows)
        conn.execute(
            update(store_identity)
            .where(store_identity.c.id == 1)
            .values(head_seq=seq, head_hash=prev_hash)
        )
    return Appended(tx_id=tx_id, recorded_at=recorded_at, events=stored, metadata=metadata)


def _recorded_at(conn: Connection, now: int, last_at: int, latest_at: int | None = None) -> int:
    """The transaction's time: the clock's reading, with two exceptions.

    - A reading up to `CLOCK_STEP_TOLERANCE_US` behind the last transaction is pinned just
      after it (times stay in order through small clock corrections).
    - A reading further behind means one of the two readings was wrong. If the log holds a
      transaction recorded at or before the reading, the present clock agrees with earlier
      history and the transactions since were stamped ahead of time (a clock that ran years
      ahead for a while, then was fixed): the reading is kept, so one glitch does not pin every
      later transaction to its future instant. If no transaction is that old, the clock is
      before the whole log (a reset RTC): it is the wrong one, and the time is pinned.

    Times are unique (one instant per transaction); `seq_at_time` says how a point in time is
    resolved when they are not in log order. A time after `latest_at` (the latest recorded_at
    of any transaction, when the caller read it) is free without asking the database.
    """
    if now <= last_at and (
        last_at - now <= CLOCK_STEP_TOLERANCE_US
        or conn.execute(
            select(transactions.c.id).where(transactions.c.recorded_at <= now).limit(1)
        ).first()
        is None
    ):
        now = last_at + 1
    if latest_at is not None and now > latest_at:
        return now
    taken = select(transactions.c.id).where(transactions.c.recorded_at == bindparam("at"))
    while conn.execute(taken, {"at": now}).first() is not None:  # only after a step back
        now += 1
    return now


_EVENT_COLUMNS = (
    "seq",
    "tx_id",
    "stream",
    "stream_version",
    "type",
    "type_version",
    "data",
    "hash",
)


def _check_utf8(what: str, value: Any) -> None:
    try:
        canonical(value).encode()
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid UTF-8 text") from None


def _stream_label(stream: str) -> str:
    return "the instance settings" if stream == INSTANCE_STREAM else f"component {stream!r}"


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Query:
    """Filters for reading the log; every filter is served by an index."""

    from_seq: int | None = None  # inclusive
    to_seq: int | None = None  # inclusive
    stream: str | None = None
    type_prefix: str | None = None
    actor: str | None = None
    tx_id: int | None = None
    limit: int | None = None
    reverse: bool = False


def _select() -> Select[Any]:
    return select(
        events.c.seq,
        events.c.tx_id,
        transactions.c.recorded_at,
        transactions.c.actor,
        transactions.c.kind,
        transactions.c.command,
        events.c.stream,
        events.c.stream_version,
        events.c.type,
        events.c.type_version,
        events.c.data,
        events.c.hash,
        transactions.c.reason,
    ).join(transactions, transactions.c.id == events.c.tx_id)


def read(conn: Connection, q: Query = Query()) -> list[StoredEvent]:
    stmt = _select()
    conds = []
    if q.from_seq is not None:
        conds.append(events.c.seq >= q.from_seq)
    if q.to_seq is not None:
        conds.append(events.c.seq <= q.to_seq)
    if q.stream is not None:
        conds.append(events.c.stream == q.stream)
    if q.type_prefix:
        # A prefix (`policy.`, `secret.keys`, `env`) as a range the (type, seq) index serves.
        upper = q.type_prefix[:-1] + chr(ord(q.type_prefix[-1]) + 1)
        conds.append(events.c.type >= q.type_prefix)
        conds.append(events.c.type < upper)
    if q.actor is not None:
        conds.append(transactions.c.actor == q.actor)
    if q.tx_id is not None:
        conds.append(events.c.tx_id == q.tx_id)
    if conds:
        stmt = stmt.where(and_(*conds))
    stmt = stmt.order_by(events.c.seq.desc() if q.reverse else events.c.seq)
    if q.limit is not None:
        stmt = stmt.limit(q.limit)
    return [_row(r) for r in conn.execute(stmt)]


def iter_all(conn: Connection, batch: int = 20000) -> Any:
    """Every event in seq order, in batches (for verify and rebuild)."""
    last = 0
    while True:
        rows = conn.execute(
            _select().where(events.c.seq > last).order_by(events.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        for r in rows:
            yield _row(r)
        last = rows[-1][0]


def _row(r: Any) -> StoredEvent:
    return StoredEvent(
        seq=r[0],
        tx_id=r[1],
        recorded_at=r[2],
        actor=r[3],
        kind=r[4],
        command=r[5],
        stream=r[6],
        stream_version=r[7],
        type=r[8],
        type_version=r[9],
        data=json.loads(r[10]),
        hash=r[11],
        reason=r[12],
        data_text=r[10],
    )


def seq_at_time(conn: Connection, recorded_at_us: int) -> int:
    """The state as of a time: after the last transaction (in log order) recorded at or before
    it, and so after everything logged before that one (0 = before the first event).

    Times are in log order except across a clock glitch (`_recorded_at`); there a transaction
    stamped ahead of its time counts from the first later transaction recorded by a correct
    clock, so a glitch never moves the meaning of the transactions after it. The query walks
    the transactions back from the newest until one is old enough (the primary key serves it):
    a recent point in time, the usual question, costs a few rows.
    """
    tx_id = conn.execute(
        select(func.max(transactions.c.id)).where(transactions.c.recorded_at <= recorded_at_us)
    ).scalar()
    if tx_id is None:
        return 0
    return tx_last_seq(conn, tx_id)


def streams_between(conn: Connection, after: int, upto: int) -> set[str]:
    """The streams with events in seq (after, upto]: what changed since a point."""
    rows = conn.execute(
        select(events.c.stream).where(events.c.seq > after, events.c.seq <= upto).distinct()
    )
    return {r[0] for r in rows}


def tx_last_seq(conn: Connection, tx_id: int) -> int:
    """Every transaction holds at least one event, so its last seq is the state after it."""
    seq = conn.execute(select(func.max(events.c.seq)).where(events.c.tx_id == tx_id)).scalar()
    return int(seq or 0)


def transaction(conn: Connection, tx_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(transactions).where(transactions.c.id == tx_id)).mappings().first()
    if row is None:
        return None
    return {**row, "details": json.loads(row["details"])}


def time_of_seq(conn: Connection, seq: int) -> int | None:
    return conn.execute(
        select(transactions.c.recorded_at)
        .join(events, events.c.tx_id == transactions.c.id)
        .where(events.c.seq == seq)
    ).scalar()
