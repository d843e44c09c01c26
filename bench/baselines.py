"""What the figures are compared with, in the same run.

* The limit — raw `sqlite3` from the standard library writing and reading the very same rows:
  the project's schema (databases are created by the project), the project's pragmas (WAL,
  `synchronous=FULL`, foreign keys, `BEGIN IMMEDIATE` for writes), the same read-model rows.
  Everything that is not SQLite is done before the clock starts: events are serialized, version
  rows and content blobs derived, no validation, no hashing (a constant 64-char placeholder
  stands in for the hash). It is the floor any implementation on this schema pays.
* The peer — the `eventsourcing` library's SQLite persistence module (the `bench` extra),
  through its application recorder: `insert_events` of `StoredEvent`s (one call = one
  transaction) and `select_events(originator_id)`. Each stream becomes a UUID5 originator,
  `stream_version` its `originator_version`, the event type the topic and the event's JSON
  its state. SQLite's default `synchronous` is FULL, so its commits are durable too (checked).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDER_HASH = "0" * 64
NAMESPACE = uuid.UUID("6f1b7b1e-8a6e-4a53-9d3a-5e1f2b0c7a11")


# --------------------------------------------------------------------------- prepared rows


@dataclass
class RawEvent:
    """One event as rows, ready to write: nothing left to compute but seq and ids."""

    stream: str
    type: str
    type_version: int
    data: str  # the stored JSON
    change: tuple[str, str, str | None] | None  # (component|setting, key, state JSON or None)
    blobs: list[tuple[str, str]] = field(default_factory=list)  # new content (hash, body)


def prepare(events: Sequence[Any], base: Any) -> list[RawEvent]:
    """Serialize events and derive their read-model rows with the project's own deriver (this
    runs before the clock starts; the raw writer only writes what it is given)."""
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.state import compact
    from wassette_state.store.persistence import readmodel

    d = readmodel.deriver_for(base)
    recording = _Recording(d.encoder.blobs)
    d.encoder.blobs = recording
    out: list[RawEvent] = []
    for i, e in enumerate(events, 1):
        recording.new = []
        change = d.feed(i, e)
        blobs = recording.new
        out.append(
            RawEvent(
                stream=ev.stream_of(e),
                type=e.type,
                type_version=ev.TYPE_VERSIONS[e.type],
                data=compact(ev.to_data(e)),
                change=None if change is None else (change.kind, change.key, change.state),
                blobs=blobs,
            )
        )
    return out


class _Recording(dict[str, str]):
    """The encoder's blob map, noting which contents each event adds."""

    new: list[tuple[str, str]]

    def setdefault(self, key: str, default: str) -> str:  # type: ignore[override]
        if key not in self:
            self.new.append((key, default))
        return super().setdefault(key, default)


def _table(kind: str) -> tuple[str, str, str]:
    if kind == "component":
        return "component_versions", "component_id", "state"
    return "setting_versions", "key", "value"


# --------------------------------------------------------------------------- raw sqlite3


def connect(path: Path | str) -> sqlite3.Connection:
    """The project's pragmas (store/persistence/db.py), on a plain stdlib connection in
    autocommit mode."""
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class RawWriter:
    """Appends with plain SQL: the same rows, reads and constraints as `log.append` +
    `readmodel.apply`, minus validation, hashing and SQLAlchemy."""

    def __init__(self, path: Path | str, actor: str = "bench@raw") -> None:
        self.conn = connect(path)
        self.actor = actor

    def close(self) -> None:
        self.conn.close()

    def _head(self, cur: sqlite3.Cursor) -> tuple[int, int, int]:
        row = cur.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        tx = cur.execute(
            "SELECT id, recorded_at FROM transactions ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return (row[0] if row else 0, tx[0] if tx else 0, tx[1] if tx else 0)

    def append_one(self, e: RawEvent, command: str = "bench append") -> None:
        """One event, one transaction: head, version check, tx row, event row, read models."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            seq, tx_id, last_at = self._head(cur)
            version = cur.execute(
                "SELECT max(stream_version) FROM events WHERE stream = ?", (e.stream,)
            ).fetchone()[0]
            seq, tx_id = seq + 1, tx_id + 1
            now = max(time.time_ns() // 1000, last_at + 1)
            cur.execute(
                "INSERT INTO transactions (id, recorded_at, actor, command, kind, reason, details)"
                " VALUES (?, ?, ?, ?, 'change', NULL, '{}')",
                (tx_id, now, self.actor, command),
            )
            cur.execute(
                "INSERT INTO events (seq, tx_id, stream, stream_version, type, type_version, "
                "data, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    tx_id,
                    e.stream,
                    (version or 0) + 1,
                    e.type,
                    e.type_version,
                    e.data,
                    PLACEHOLDER_HASH,
                ),
            )
            if e.change is not None:
                kind, key, state = e.change
                table, key_col, state_col = _table(kind)
                cur.execute(
                    f"UPDATE {table} SET to_seq = ? WHERE {key_col} = ? AND to_seq IS NULL",
                    (seq, key),
                )
                if state is not None:
                    cur.execute(
                        f"INSERT INTO {table} ({key_col}, from_seq, {state_col}) VALUES (?, ?, ?)",
                        (key, seq, state),
                    )
                if e.blobs:
                    cur.executemany(
                        "INSERT OR IGNORE INTO contents (hash, body) VALUES (?, ?)", e.blobs
                    )
                cur.execute("INSERT OR IGNORE INTO entities (kind, key) VALUES (?, ?)", (kind, key))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def append_batch(self, events: Sequence[RawEvent], command: str = "bench import") -> None:
        """Many events, one transaction, every table written with `executemany`."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            seq, tx_id, last_at = self._head(cur)
            tx_id += 1
            now = max(time.time_ns() // 1000, last_at + 1)
            streams = sorted({e.stream for e in events})
            versions: dict[str, int] = dict.fromkeys(streams, 0)
            for i in range(0, len(streams), 500):
                chunk = streams[i : i + 500]
                marks = ",".join("?" * len(chunk))
                versions.update(
                    cur.execute(
                        "SELECT stream, max(stream_version) FROM events "
                        f"WHERE stream IN ({marks}) GROUP BY stream",
                        chunk,
                    ).fetchall()
                )
            cur.execute(
                "INSERT INTO transactions (id, recorded_at, actor, command, kind, reason, details)"
                " VALUES (?, ?, ?, ?, 'import', NULL, '{}')",
                (tx_id, now, self.actor, command),
            )
            event_rows = []
            opened: dict[tuple[str, str], list[Any]] = {}
            rows: dict[str, list[list[Any]]] = {"component": [], "setting": []}
            closes: dict[str, list[tuple[int, str]]] = {"component": [], "setting": []}
            blobs: dict[str, str] = {}
            entities: set[tuple[str, str]] = set()
            for e in events:
                seq += 1
                versions[e.stream] += 1
                event_rows.append(
                    (
                        seq,
                        tx_id,
                        e.stream,
                        versions[e.stream],
                        e.type,
                        e.type_version,
                        e.data,
                        PLACEHOLDER_HASH,
                    )
                )
                if e.change is None:
                    continue
                kind, key, state = e.change
                prev = opened.pop((kind, key), None)
                if prev is not None:
                    prev[2] = seq
                else:
                    closes[kind].append((seq, key))
                if state is not None:
                    row = [key, seq, None, state]
                    opened[(kind, key)] = row
                    rows[kind].append(row)
                blobs.update(e.blobs)
                entities.add((kind, key))
            cur.executemany(
                "INSERT INTO events (seq, tx_id, stream, stream_version, type, type_version, "
                "data, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                event_rows,
            )
            for kind in ("component", "setting"):
                table, key_col, state_col = _table(kind)
                cur.executemany(
                    f"UPDATE {table} SET to_seq = ? WHERE {key_col} = ? AND to_seq IS NULL",
                    closes[kind],
                )
                cur.executemany(
                    f"INSERT INTO {table} ({key_col}, from_seq, to_seq, {state_col}) "
                    "VALUES (?, ?, ?, ?)",
                    rows[kind],
                )
            cur.executemany(
                "INSERT OR IGNORE INTO contents (hash, body) VALUES (?, ?)", list(blobs.items())
            )
            cur.executemany(
                "INSERT OR IGNORE INTO entities (kind, key) VALUES (?, ?)", sorted(entities)
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise


# --------------------------------------------------------------------------- raw reads


_LATEST = {
    kind: (
        f"SELECT t.{key_col}, t.{state_col} FROM entities e JOIN {table} t ON t.id = ("
        f"  SELECT v.id FROM {table} v WHERE v.{key_col} = e.key AND v.from_seq <= ?"
        "  ORDER BY v.from_seq DESC LIMIT 1) "
        "WHERE e.kind = ? AND (t.to_seq IS NULL OR t.to_seq > ?)"
    )
    for kind, (table, key_col, state_col) in (
        ("component", _table("component")),
        ("setting", _table("setting")),
    )
}


def raw_state_at(conn: sqlite3.Connection, seq: int, bodies: bool = False) -> tuple[int, int]:
    """The same two as-of queries as `readmodel.state_at` (same indexes); version rows decoded.
    With `bodies`, the content texts too (as the project fetches them when a state's metadata
    and policies are first used). Returns (components, settings)."""
    cur = conn.cursor()
    cur.execute("BEGIN")
    try:
        comps = [
            (k, json.loads(s))
            for k, s in cur.execute(_LATEST["component"], (seq, "component", seq))
        ]
        if bodies:
            refs = {s["metadata"] for _, s in comps} | {
                s["policy"]["content"] for _, s in comps if s["policy"]
            }
            ordered = sorted(refs)
            texts: dict[str, str] = {}
            for i in range(0, len(ordered), 500):
                chunk = ordered[i : i + 500]
                texts.update(
                    cur.execute(
                        "SELECT hash, body FROM contents "
                        f"WHERE hash IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
        settings = [
            (k, json.loads(v)) for k, v in cur.execute(_LATEST["setting"], (seq, "setting", seq))
        ]
    finally:
        cur.execute("COMMIT")
    return len(comps), len(settings)


_HISTORY = (
    "SELECT e.seq, e.tx_id, t.recorded_at, t.actor, t.kind, t.command, e.stream, "
    "e.stream_version, e.type, e.type_version, e.data, e.hash "
    "FROM events e JOIN transactions t ON t.id = e.tx_id WHERE e.stream = ? ORDER BY e.seq"
)


def raw_history(conn: sqlite3.Connection, stream: str) -> int:
    """`state history --component X`'s query, rows fetched and their JSON decoded."""
    rows = conn.execute(_HISTORY, (stream,)).fetchall()
    decoded = [json.loads(r[10]) for r in rows]
    return len(decoded)


def read_model_rows(conn: sqlite3.Connection) -> dict[str, Any]:
    """The current read-model rows (what a rebuild must write), loaded before the clock."""
    return {
        "component_versions": conn.execute(
            "SELECT component_id, from_seq, to_seq, state FROM component_versions"
        ).fetchall(),
        "setting_versions": conn.execute(
            "SELECT key, from_seq, to_seq, value FROM setting_versions"
        ).fetchall(),
        "entities": conn.execute("SELECT kind, key FROM entities").fetchall(),
    }


def raw_rebuild(conn: sqlite3.Connection, rows: dict[str, Any]) -> int:
    """The I/O of a rebuild: read and decode every event, replace the read-model rows."""
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        n = 0
        for _seq, _stream, _type, data in cur.execute(
            "SELECT seq, stream, type, data FROM events ORDER BY seq"
        ):
            json.loads(data)
            n += 1
        cur.execute("DELETE FROM component_versions")
        cur.execute("DELETE FROM setting_versions")
        cur.execute("DELETE FROM entities")
        cur.executemany(
            "INSERT INTO component_versions (component_id, from_seq, to_seq, state) "
            "VALUES (?, ?, ?, ?)",
            rows["component_versions"],
        )
        cur.executemany(
            "INSERT INTO setting_versions (key, from_seq, to_seq, value) VALUES (?, ?, ?, ?)",
            rows["setting_versions"],
        )
        cur.executemany("INSERT INTO entities (kind, key) VALUES (?, ?)", rows["entities"])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return n


# --------------------------------------------------------------------------- the peer


def peer_available() -> bool:
    try:
        import eventsourcing.sqlite  # noqa: F401
    except ImportError:
        return False
    return True


def originator(stream: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, stream)


class Peer:
    """eventsourcing's SQLite application recorder on its own database file."""

    def __init__(self, path: Path | str) -> None:
        from eventsourcing.persistence import InfrastructureFactory

        self.factory = InfrastructureFactory.construct(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "CREATE_TABLE": "y",
            }
        )
        self.recorder: Any = self.factory.application_recorder()
        with self.factory.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
            c.execute("PRAGMA synchronous")
            self.synchronous = int(c.fetchone()[0])
            c.execute("PRAGMA journal_mode")
            self.journal_mode = str(c.fetchone()[0])

    def close(self) -> None:
        self.factory.close()

    @staticmethod
    def stored(stream: str, version: int, type_: str, data: str) -> Any:
        from eventsourcing.persistence import StoredEvent

        return StoredEvent(
            originator_id=originator(stream),
            originator_version=version,
            topic=f"wassette:{type_}",
            state=data.encode(),
        )

    def append(self, stored: Sequence[Any]) -> None:
        """One `insert_events` call: one transaction."""
        self.recorder.insert_events(stored)

    def history(self, stream: str) -> int:
        events = self.recorder.select_events(originator(stream))
        decoded = [json.loads(e.state) for e in events]
        return len(decoded)

    def prefill(self, rows: Iterable[tuple[str, int, str, str]], chunk: int = 20_000) -> int:
        """Load (stream, version, type, data) rows in large transactions."""
        batch: list[Any] = []
        n = 0
        for stream, version, type_, data in rows:
            batch.append(self.stored(stream, version, type_, data))
            if len(batch) >= chunk:
                self.append(batch)
                n += len(batch)
                batch = []
        if batch:
            self.append(batch)
            n += len(batch)
        return n


class StreamVersions:
    """The peer's version counter per stream (its callers track versions themselves)."""

    def __init__(self, initial: dict[str, int] | None = None) -> None:
        self.versions: dict[str, int] = dict(initial or {})

    def next(self, stream: str) -> int:
        v = self.versions.get(stream, 0) + 1
        self.versions[stream] = v
        return v
