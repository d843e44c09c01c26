"""`state verify`: hash chain, gap-free order, fold-vs-read-model equality, the database's own
integrity check (its backend's)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select
from sqlalchemy import exc as sa_exc

from wassette_state.store.persistence import backend, db, log, readmodel
from wassette_state.store.persistence.schema import contents, entities, events, transactions


@dataclass
class Report:
    events: int = 0
    transactions: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: Connection, materialized_seq: object = None) -> Report:
    """Check everything in one read snapshot; `materialized_seq` is the seq the files were last
    written for (the data dir's marker, read BEFORE this snapshot was taken: files are written
    after their commit, so a marker read first never names a seq that a later snapshot lacks,
    whatever other processes do meanwhile).

    One damage, one finding: checks stop at the first problem that would make later checks
    report its consequences (an edited event makes the read models differ too, a damaged page
    makes every query fail).
    """
    report = Report()
    try:
        _verify(conn, report, materialized_seq)
    except sa_exc.DatabaseError as e:  # a damaged page met by a query: damage, not a crash
        if backend.of(conn).is_busy(e):
            raise
        report.problems.append(
            f"the database is damaged ({db.first_line(e.orig)}); restore it from a backup"
        )
    return report


def _verify(conn: Connection, report: Report, materialized_seq: object) -> None:
    report.problems.extend(backend.of(conn).integrity_problems(conn))
    if not report.ok:
        return
    builder = readmodel.RowBuilder()
    # A log cut short is named as such before its read models look merely stale; a rewritten
    # chain is named by the read models first (they say where).
    _check_chain(conn, report, builder)
    if report.ok:
        _check_transactions(conn, report)
    if report.ok:
        _check_head(conn, report, rewritten=False)
    if report.ok:
        _check_read_models(conn, builder.result(), report)
    if report.ok:
        _check_head(conn, report, rewritten=True)
    if not report.ok:
        return
    if isinstance(materialized_seq, int):
        # The head anchor is lost with the events when a whole commit is (a truncated WAL, an
        # older copy of the database): only the files say more was committed.
        last_seq = log.head(conn)[0]
        if materialized_seq > last_seq:
            report.problems.append(
                f"seq {last_seq + 1}: missing: the files were materialized at seq "
                f"{materialized_seq} but the log ends at seq {last_seq} (truncated WAL or an "
                "older copy of the database)"
            )


def _check_head(conn: Connection, report: Report, rewritten: bool) -> None:
    """The store records where its log ends: a log cut short (or grown behind its back)
    disagrees with that anchor."""
    from wassette_state.store.persistence.schema import store_identity

    anchor = conn.execute(select(store_identity.c.head_seq, store_identity.c.head_hash)).first()
    last_seq, last_hash, _, _ = log.head(conn)
    if anchor is None:
        return
    head_seq, head_hash = anchor
    if rewritten and head_seq == last_seq and head_seq and head_hash != last_hash:
        report.problems.append(
            f"seq {last_seq}: the last event's hash is not the head the store recorded: "
            "the log was rewritten"
        )
    elif not rewritten and head_seq != last_seq:
        first_bad = min(head_seq, last_seq) + 1
        what = (
            "missing: events were cut off the end"
            if last_seq < head_seq
            else "appended behind the store's back"
        )
        report.problems.append(
            f"seq {first_bad}: {what} (the log ends at seq {last_seq}, the store recorded its "
            f"head at seq {head_seq})"
        )


def _check_chain(conn: Connection, report: Report, builder: readmodel.RowBuilder) -> None:
    prev_hash = log.GENESIS_HASH
    expected_seq = 1
    digests = {
        tx_id: log.tx_digest(command, reason, json.loads(details))
        for tx_id, command, reason, details in conn.execute(
            select(
                transactions.c.id,
                transactions.c.command,
                transactions.c.reason,
                transactions.c.details,
            )
        )
    }
    from wassette_state.store.persistence.schema import store_identity

    v2_from = conn.execute(select(store_identity.c.chain_v2_from)).scalar() or 1
    stream_versions: dict[str, int] = {}
    for se in log.iter_all(conn):
        report.events += 1
        if se.seq != expected_seq:
            report.problems.append(
                f"seq {expected_seq}: missing (next event found is seq {se.seq}): "
                "an event was deleted"
            )
            return
        row = {
            "seq": se.seq,
            "tx_id": se.tx_id,
            "recorded_at": se.recorded_at,
            "actor": se.actor,
            "kind": se.kind,
            "stream": se.stream,
            "stream_version": se.stream_version,
            "type": se.type,
            "type_version": se.type_version,
            "data": se.data,
            "tx_digest": digests.get(se.tx_id),
        }
        assert se.data_text is not None
        computed = log.event_hash(prev_hash, row, se.data_text, v2_from)
        if computed != se.hash:
            report.problems.append(
                f"seq {se.seq}: hash mismatch: the event or its transaction was edited, "
                "reordered, or an earlier event was removed"
            )
            return
        version = stream_versions.get(se.stream, 0) + 1
        if se.stream_version != version:
            report.problems.append(
                f"seq {se.seq}: stream {se.stream!r} version {se.stream_version}, "
                f"expected {version}"
            )
            return
        stream_versions[se.stream] = version
        try:
            builder.feed(se)
        except Exception as e:  # an unreadable event is a verification failure, not a crash
            first = str(e).split("\n")[0]
            report.problems.append(f"seq {se.seq}: event data does not validate: {first}")
            return
        prev_hash = se.hash
        expected_seq += 1


def _duration(us: int) -> str:
    seconds = us // 1_000_000
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def _check_transactions(conn: Connection, report: Report) -> None:
    last_at = lowest_at = -(2**63)
    # Every transaction holds at least one event and ids count up from 1: a transaction left
    # without events (or a missing id) means events were deleted, also at the end of the log.
    last_seqs = {
        tx: seq
        for tx, seq in conn.execute(
            select(events.c.tx_id, func.max(events.c.seq)).group_by(events.c.tx_id)
        )
    }
    seq_before = 0
    for expected_id, (tx_id, recorded_at) in enumerate(
        conn.execute(
            select(transactions.c.id, transactions.c.recorded_at).order_by(transactions.c.id)
        ),
        1,
    ):
        report.transactions += 1
        if tx_id != expected_id or tx_id not in last_seqs:
            missing = expected_id if tx_id != expected_id else tx_id
            report.problems.append(
                f"seq {seq_before + 1}: transaction {missing} "
                + ("is missing" if tx_id != expected_id else "has no events")
                + ": events were deleted"
            )
            return
        seq_before = last_seqs[tx_id]
        if recorded_at <= last_at:
            # In order, but for a clock that stepped back further than a correction (log.
            # _recorded_at): then the reading was kept, so one glitch does not move the rest.
            if last_at - recorded_at <= log.CLOCK_STEP_TOLERANCE_US or recorded_at < lowest_at:
                report.problems.append(
                    f"seq {seq_before}: tx {tx_id}: recorded_at is not after the previous "
                    "transaction"
                )
                return
            report.warnings.append(
                f"tx {tx_id}: recorded {_duration(last_at - recorded_at)} before tx {tx_id - 1}: "
                "the clock stepped back (a transaction around it was stamped by a wrong clock; "
                "times are shown as the clock read them)"
            )
        lowest_at = min(lowest_at, recorded_at)
        last_at = recorded_at


def _check_read_models(conn: Connection, derived: readmodel.Rows, report: Report) -> None:
    actual = readmodel.read_all(conn)
    for label, want, have in (
        ("component", derived.components, actual.components),
        ("setting", derived.settings, actual.settings),
    ):
        want_sorted = sorted(want, key=lambda r: (r[1], r[0]))
        have_sorted = sorted(have, key=lambda r: (r[1], r[0]))
        for w, h in zip(want_sorted, have_sorted, strict=False):
            if w != h:
                seq = min(w[1], h[1])
                report.problems.append(
                    f"seq {seq}: read model differs from the log ({label} {w[0]!r}); "
                    "run 'wassette-state state rebuild'"
                )
                return
        if len(want_sorted) != len(have_sorted):
            longer = want_sorted if len(want_sorted) > len(have_sorted) else have_sorted
            extra = longer[min(len(want_sorted), len(have_sorted))]
            report.problems.append(
                f"seq {extra[1]}: read model has {len(have_sorted)} {label} versions, the log "
                f"gives {len(want_sorted)}; run 'wassette-state state rebuild'"
            )
            return
    # The entity list drives point-in-time reads: a missing entry hides an entity's past.
    first_seen: dict[tuple[str, str], int] = {}
    for label, rows in (("component", derived.components), ("setting", derived.settings)):
        for r in rows:
            first_seen.setdefault((label, r[0]), r[1])
    listed = {(k, v) for k, v in conn.execute(select(entities.c.kind, entities.c.key))}
    for kind, key in sorted(set(first_seen) - listed, key=lambda e: first_seen[e]):
        report.problems.append(
            f"seq {first_seen[(kind, key)]}: read model entity list lacks {kind} {key!r}; "
            "run 'wassette-state state rebuild'"
        )
        return
    for kind, key in sorted(listed - set(first_seen)):
        report.problems.append(
            f"read model entity list has {kind} {key!r}, which the log never created; "
            "run 'wassette-state state rebuild'"
        )
        return
    for h, body in conn.execute(select(contents.c.hash, contents.c.body)):
        if hashlib.sha256(body.encode()).hexdigest() != h:
            report.problems.append(f"content {h[:12]}…: body does not match its hash")
            return
    missing = set(derived.blobs) - set(conn.execute(select(contents.c.hash)).scalars())
    if missing:
        report.problems.append(f"content {sorted(missing)[0][:12]}…: referenced but missing")
