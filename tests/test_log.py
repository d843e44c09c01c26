"""The event log on a real SQLite file: append, ordering, concurrency control, reads, hashes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import ConflictError, ValidationError
from wassette_state.store.persistence import db, log, migrate, readmodel
from wassette_state.store.persistence.schema import events as events_table
from wassette_state.store.persistence.schema import transactions
from wassette_state.store.usecases.verify import verify

T0 = 1_764_000_000_000_000  # 2025-11-24, in microseconds


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    eng = db.make_engine(url)
    migrate.ensure_schema(eng, url)
    yield eng
    eng.dispose()


def append(
    engine: Engine,
    events: list[Any],
    *,
    actor: str = "alice@host",
    command: str = "test",
    kind: str = "change",
    expected: dict[str, int] | None = None,
    now_us: int | None = None,
) -> log.Appended:
    """One transaction, read models updated in it (as the service does)."""
    with db.write_tx(engine) as conn:
        base = readmodel.state_at(conn)
        appended = log.append(
            conn,
            log.TxInfo(actor=actor, command=command, kind=kind),
            events,
            expected,
            now_us=now_us,
        )
        readmodel.apply(conn, appended.events, base)
        return appended


def read(engine: Engine, **query: Any) -> list[log.StoredEvent]:
    with db.read_tx(engine) as conn:
        return log.read(conn, log.Query(**query))


def counts(engine: Engine) -> tuple[int, int]:
    with db.read_tx(engine) as conn:
        return (
            conn.execute(select(func.count()).select_from(events_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(transactions)).scalar_one(),
        )


def attached(cid: str) -> ev.ComponentAttached:
    return ev.ComponentAttached(
        component_id=cid, source_uri=f"file:///{cid}.wasm", wasm_sha256="a" * 64, metadata={}
    )


def policy(cid: str, content: str = "version: '1.0'") -> ev.PolicyAttached:
    return ev.PolicyAttached(
        component_id=cid, source_uri="file:///p.yaml", policy_content=content, attached_at=1
    )


def sample_log(engine: Engine) -> None:
    """tx1 alice: paths, env A; tx2 bob: attach w + policy w; tx3 alice: attach f, keys w;
    tx4 carol (import): policy change w, env B; tx5 bob: detach f, policy detach w."""
    append(
        engine,
        [ev.PathsSet(component_dir="/c", secrets_dir="/s"), ev.EnvSet(key="A", value="1")],
        now_us=T0,
    )
    append(engine, [attached("w"), policy("w")], actor="bob@host", now_us=T0 + 10)
    append(engine, [attached("f"), ev.SecretKeysSet(component_id="w", keys=["K"])], now_us=T0 + 20)
    append(
        engine,
        [
            ev.PolicyChanged(component_id="w", policy_content="v2", change={"op": "grant"}),
            ev.EnvSet(key="B", value="2"),
        ],
        actor="carol@host",
        kind="import",
        now_us=T0 + 30,
    )
    append(
        engine,
        [ev.ComponentDetached(component_id="f"), ev.PolicyDetached(component_id="w")],
        actor="bob@host",
        now_us=T0 + 40,
    )


# ---------------------------------------------------------------- append


def test_one_transaction_with_many_events(engine: Engine) -> None:
    batch = [attached("w"), policy("w"), *(ev.EnvSet(key=f"K{i}", value=str(i)) for i in range(8))]
    result = append(engine, batch, actor="alice@host", command="import x", kind="import")
    assert result.tx_id == 1
    stored = read(engine)
    assert [s.seq for s in stored] == list(range(1, 11))
    assert {s.tx_id for s in stored} == {1}
    assert {s.recorded_at for s in stored} == {result.recorded_at}
    assert {(s.actor, s.kind, s.command) for s in stored} == {("alice@host", "import", "import x")}
    assert [s.event() for s in stored] == batch
    assert stored == result.events
    # Stream versions count per stream inside the transaction.
    assert [(s.stream, s.stream_version) for s in stored[:3]] == [
        ("w", 1),
        ("w", 2),
        (ev.INSTANCE_STREAM, 1),
    ]
    assert stored[-1].stream_version == 8
    assert counts(engine) == (10, 1)


def test_a_failure_after_the_transaction_row_rolls_everything_back(engine: Engine) -> None:
    append(engine, [ev.EnvSet(key="A", value="1")])
    before = read(engine)
    # A set is not JSON: serializing the second event fails after the tx row was inserted.
    bad = ev.ComponentAttached(
        component_id="w", source_uri="u", wasm_sha256="b" * 64, metadata={"x": {1, 2}}
    )
    with pytest.raises(TypeError):
        append(engine, [ev.EnvSet(key="B", value="2"), bad])
    assert read(engine) == before
    assert counts(engine) == (1, 1)
    # The log carries on without a gap.
    nxt = append(engine, [ev.EnvSet(key="C", value="3")])
    assert nxt.tx_id == 2 and [e.seq for e in nxt.events] == [2]


def test_an_exception_in_the_caller_rolls_the_append_back(engine: Engine) -> None:
    with pytest.raises(RuntimeError), db.write_tx(engine) as conn:
        log.append(conn, log.TxInfo("a", "c"), [ev.EnvSet(key="A", value="1")])
        raise RuntimeError("crash before commit")
    assert counts(engine) == (0, 0)


def test_seq_and_tx_are_gap_free_across_transactions(engine: Engine) -> None:
    sizes = [1, 3, 1, 5, 2]
    for i, n in enumerate(sizes):
        append(engine, [ev.EnvSet(key=f"T{i}_{j}", value="v") for j in range(n)])
    stored = read(engine)
    assert [s.seq for s in stored] == list(range(1, sum(sizes) + 1))
    expected_tx = [i + 1 for i, n in enumerate(sizes) for _ in range(n)]
    assert [s.tx_id for s in stored] == expected_tx
    assert [s.stream_version for s in stored] == list(range(1, sum(sizes) + 1))


def test_empty_transaction_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="at least one event"):
        append(engine, [])
    assert counts(engine) == (0, 0)


def test_unknown_transaction_kind_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="kind"):
        append(engine, [ev.EnvSet(key="A", value="1")], kind="oops")
    assert counts(engine) == (0, 0)


def test_recorded_at_strictly_increases_even_when_the_clock_steps_back(engine: Engine) -> None:
    clock = [T0, T0 - 5_000_000, T0 - 5_000_000, T0, T0 + 100, T0 + 100, T0 + 1_000_000]
    got = [
        append(engine, [ev.EnvSet(key="A", value=str(i))], now_us=t).recorded_at
        for i, t in enumerate(clock)
    ]
    assert got == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 100, T0 + 101, T0 + 1_000_000]
    with db.read_tx(engine) as conn:
        stored = (
            conn.execute(select(transactions.c.recorded_at).order_by(transactions.c.id))
            .scalars()
            .all()
        )
    assert stored == got


def test_recorded_at_defaults_to_the_wall_clock(engine: Engine) -> None:
    import time

    before = time.time_ns() // 1000
    got = append(engine, [ev.EnvSet(key="A", value="1")]).recorded_at
    after = time.time_ns() // 1000
    assert before <= got <= after


# ---------------------------------------------------------------- optimistic concurrency


def test_expected_version_matches_then_conflicts(engine: Engine) -> None:
    append(engine, [attached("w")], expected={"w": 0})
    append(engine, [policy("w")], expected={"w": 1})
    before = read(engine)
    with pytest.raises(ConflictError, match="component 'w' moved from version 1 to 2"):
        append(engine, [ev.SecretKeysSet(component_id="w", keys=["K"])], expected={"w": 1})
    with pytest.raises(ConflictError, match="instance settings"):
        append(
            engine,
            [ev.EnvSet(key="A", value="1"), ev.EnvSet(key="B", value="1")],
            expected={ev.INSTANCE_STREAM: 3},
        )
    assert read(engine) == before
    assert counts(engine) == (2, 2)


def test_conflict_on_one_stream_writes_nothing_for_the_others(engine: Engine) -> None:
    append(engine, [attached("w"), attached("f")])
    with pytest.raises(ConflictError):
        append(
            engine,
            [ev.EnvSet(key="A", value="1"), policy("f"), policy("w")],
            expected={ev.INSTANCE_STREAM: 0, "f": 1, "w": 0},
        )
    assert counts(engine) == (2, 1)


def test_expected_version_of_a_stream_not_written_is_still_checked(engine: Engine) -> None:
    """A decision based on stream `w` at version 0 is stale once `w` moved, whatever it writes."""
    append(engine, [attached("w")])
    with pytest.raises(ConflictError):
        append(engine, [ev.EnvSet(key="A", value="1")], expected={"w": 0})
    assert counts(engine) == (1, 1)
    append(engine, [ev.EnvSet(key="A", value="1")], expected={"w": 1, ev.INSTANCE_STREAM: 0})
    assert counts(engine) == (2, 2)


def test_stream_versions(engine: Engine) -> None:
    sample_log(engine)
    with db.read_tx(engine) as conn:
        assert log.stream_versions(conn, ["w", "f", ev.INSTANCE_STREAM, "nope"]) == {
            "w": 5,
            "f": 2,
            ev.INSTANCE_STREAM: 3,
            "nope": 0,
        }


def test_duplicate_stream_version_is_a_conflict_not_a_crash(engine: Engine) -> None:
    """The unique (stream, stream_version) constraint is the last line of defence."""
    append(engine, [attached("w")])
    with pytest.raises(ConflictError), db.write_tx(engine) as conn:
        conn.execute(
            events_table.insert().values(
                seq=2,
                tx_id=1,
                stream="w",
                stream_version=1,
                type="component.detached",
                type_version=1,
                data="{}",
                hash="0" * 64,
            )
        )
    assert counts(engine) == (1, 1)


# ---------------------------------------------------------------- reads


def seqs(items: list[log.StoredEvent]) -> list[int]:
    return [s.seq for s in items]


def test_read_filters(engine: Engine) -> None:
    sample_log(engine)
    assert seqs(read(engine)) == list(range(1, 11))
    assert seqs(read(engine, from_seq=3, to_seq=6)) == [3, 4, 5, 6]
    assert seqs(read(engine, from_seq=9)) == [9, 10]
    assert seqs(read(engine, to_seq=2)) == [1, 2]
    assert seqs(read(engine, from_seq=11)) == []
    assert seqs(read(engine, stream="w")) == [3, 4, 6, 7, 10]
    assert seqs(read(engine, stream=ev.INSTANCE_STREAM)) == [1, 2, 8]
    assert seqs(read(engine, stream="nope")) == []
    assert seqs(read(engine, type_prefix="policy.")) == [4, 7, 10]
    assert seqs(read(engine, type_prefix="policy")) == [4, 7, 10]
    assert seqs(read(engine, type_prefix="policy.attached")) == [4]
    assert seqs(read(engine, type_prefix="component.")) == [3, 5, 9]
    assert seqs(read(engine, type_prefix="env.set")) == [2, 8]
    assert seqs(read(engine, type_prefix="env.se")) == [2, 8]  # a plain string prefix
    assert seqs(read(engine, type_prefix="secret.keys")) == [6]
    assert seqs(read(engine, type_prefix="pol")) == [4, 7, 10]
    assert seqs(read(engine, type_prefix="policy.z")) == []
    assert seqs(read(engine, type_prefix="polic\uffff")) == []
    assert seqs(read(engine, actor="bob@host")) == [3, 4, 9, 10]
    assert seqs(read(engine, actor="carol@host")) == [7, 8]
    assert seqs(read(engine, actor="bob")) == []
    assert seqs(read(engine, tx_id=3)) == [5, 6]
    assert seqs(read(engine, tx_id=99)) == []
    assert seqs(read(engine, limit=3)) == [1, 2, 3]
    assert seqs(read(engine, limit=3, reverse=True)) == [10, 9, 8]
    assert seqs(read(engine, reverse=True)) == list(range(10, 0, -1))
    # Filters combine.
    assert seqs(read(engine, stream="w", type_prefix="policy.", actor="bob@host")) == [4, 10]
    assert seqs(read(engine, stream="w", from_seq=5, limit=2, reverse=True)) == [10, 7]
    carol = read(engine, actor="carol@host")
    assert {(s.kind, s.tx_id) for s in carol} == {("import", 4)}
    assert [s.component_id for s in read(engine, tx_id=4)] == ["w", None]


def test_iter_all_batches_in_order(engine: Engine) -> None:
    sample_log(engine)
    with db.read_tx(engine) as conn:
        assert seqs(list(log.iter_all(conn, batch=3))) == list(range(1, 11))
        assert list(log.iter_all(conn, batch=3)) == log.read(conn)


def test_seq_at_time_and_tx_helpers(engine: Engine) -> None:
    sample_log(engine)
    with db.read_tx(engine) as conn:
        assert log.seq_at_time(conn, T0 - 1) == 0
        assert log.seq_at_time(conn, T0) == 2
        assert log.seq_at_time(conn, T0 + 9) == 2
        assert log.seq_at_time(conn, T0 + 10) == 4
        assert log.seq_at_time(conn, T0 + 35) == 8
        assert log.seq_at_time(conn, T0 + 40) == 10
        assert log.seq_at_time(conn, T0 + 10**12) == 10
        assert log.tx_last_seq(conn, 3) == 6
        assert log.tx_last_seq(conn, 42) == 0
        assert log.time_of_seq(conn, 5) == T0 + 20
        assert log.time_of_seq(conn, 11) is None
        assert log.head(conn)[0] == 10 and log.head(conn)[2:] == (5, T0 + 40)
        tx = log.transaction(conn, 4)
        assert tx is not None
        assert (tx["actor"], tx["kind"], tx["details"]) == ("carol@host", "import", {})
        assert log.transaction(conn, 6) is None


def test_empty_log(engine: Engine) -> None:
    with db.read_tx(engine) as conn:
        assert log.read(conn) == []
        assert log.head(conn) == (0, log.GENESIS_HASH, 0, 0)
        assert log.seq_at_time(conn, T0) == 0


def test_transaction_details_and_reason_are_stored(engine: Engine) -> None:
    with db.write_tx(engine) as conn:
        log.append(
            conn,
            log.TxInfo("a", "state import x.yaml", "import", "restore", {"sha256": "f" * 64}),
            [ev.EnvSet(key="A", value="1")],
        )
    with db.read_tx(engine) as conn:
        tx = log.transaction(conn, 1)
    assert tx is not None
    assert (tx["command"], tx["reason"], tx["details"]) == (
        "state import x.yaml",
        "restore",
        {"sha256": "f" * 64},
    )


# ---------------------------------------------------------------- hash chain


def test_hash_chain_is_recomputable_from_the_documented_fields(
    engine: Engine, tmp_path: Path
) -> None:
    sample_log(engine)
    engine.dispose()
    raw = sqlite3.connect(tmp_path / "state.db")
    rows = raw.execute(
        "SELECT e.seq, e.tx_id, t.recorded_at, t.actor, t.kind, e.stream, e.stream_version,"
        " e.type, e.type_version, e.data, e.hash, t.command, t.reason, t.details"
        " FROM events e JOIN transactions t ON t.id = e.tx_id ORDER BY e.seq"
    ).fetchall()
    raw.close()
    assert len(rows) == 10
    prev = "0" * 64
    for seq, tx, at, actor, kind, stream, sv, type_, tv, data, stored, cmd, why, det in rows:
        tx_body = {"command": cmd, "reason": why, "details": json.loads(det)}
        tx_canonical = json.dumps(
            tx_body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        body = {
            "seq": seq,
            "tx": tx,
            "recorded_at": at,
            "actor": actor,
            "kind": kind,
            "stream": stream,
            "stream_version": sv,
            "type": type_,
            "type_version": tv,
            "txd": hashlib.sha256(tx_canonical.encode()).hexdigest(),
        }
        # Chain v2 (every event of a store created at revision 0003): the header as canonical
        # JSON, then the data exactly as stored.
        header = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert stored == hashlib.sha256(f"{prev}\n{header}\n{data}".encode()).hexdigest()
        prev = stored
    with db.read_tx(engine) as conn:
        assert log.head(conn)[1] == prev


def test_hash_depends_on_every_hashed_field() -> None:
    row: dict[str, Any] = {
        "seq": 1,
        "tx_id": 1,
        "recorded_at": T0,
        "actor": "a",
        "kind": "change",
        "stream": "_instance",
        "stream_version": 1,
        "type": "env.set",
        "type_version": 1,
        "data": {"key": "A", "value": "1"},
    }
    base = log.chain_hash(log.GENESIS_HASH, row)
    variants = {
        "seq": 2,
        "tx_id": 2,
        "recorded_at": T0 + 1,
        "actor": "b",
        "kind": "import",
        "stream": "w",
        "stream_version": 2,
        "type": "env.unset",
        "type_version": 2,
        "data": {"key": "A", "value": "2"},
    }
    for key, value in variants.items():
        assert log.chain_hash(log.GENESIS_HASH, {**row, key: value}) != base, key
    assert log.chain_hash("1" * 64, row) != base


def test_chain_v2_depends_on_every_hashed_field_and_the_exact_data_text() -> None:
    row: dict[str, Any] = {
        "seq": 1,
        "tx_id": 1,
        "recorded_at": T0,
        "actor": "a",
        "kind": "change",
        "stream": "_instance",
        "stream_version": 1,
        "type": "env.set",
        "type_version": 1,
        "tx_digest": "d" * 64,
    }
    text = '{"key":"A","value":"1"}'
    base = log.chain_hash_v2(log.GENESIS_HASH, row, text)
    variants = {
        "seq": 2,
        "tx_id": 2,
        "recorded_at": T0 + 1,
        "actor": "b",
        "kind": "import",
        "stream": "w",
        "stream_version": 2,
        "type": "env.unset",
        "type_version": 2,
        "tx_digest": "e" * 64,
    }
    for key, value in variants.items():
        assert log.chain_hash_v2(log.GENESIS_HASH, {**row, key: value}, text) != base, key
    assert log.chain_hash_v2("1" * 64, row, text) != base
    # The same data reformatted is another text: v2 detects even a semantically equal edit.
    assert log.chain_hash_v2(log.GENESIS_HASH, row, '{"value":"1","key":"A"}') != base
    # Which version a seq uses is decided by where the store switched.
    assert log.event_hash(log.GENESIS_HASH, row, text, 1) == base
    assert log.event_hash(
        log.GENESIS_HASH, {**row, "data": {"key": "A", "value": "1"}}, text, 2
    ) == (log.chain_hash(log.GENESIS_HASH, {**row, "data": {"key": "A", "value": "1"}}))


def test_unicode_data_round_trips(engine: Engine) -> None:
    append(engine, [ev.EnvSet(key="GREETING", value="héllo wörld ✓ 日本")])
    (stored,) = read(engine)
    assert stored.event() == ev.EnvSet(key="GREETING", value="héllo wörld ✓ 日本")
    with db.read_tx(engine) as conn:
        assert verify(conn).ok
        assert readmodel.state_at(conn).environment == {"GREETING": "héllo wörld ✓ 日本"}


def test_sample_log_verifies(engine: Engine) -> None:
    sample_log(engine)
    with db.read_tx(engine) as conn:
        report = verify(conn)
    assert report.ok, report.problems
    assert (report.events, report.transactions) == (10, 5)


def test_old_type_versions_are_upcast_on_read_never_rewritten(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(engine, [ev.EnvSet(key="A", value="1")])
    engine.dispose()
    raw = sqlite3.connect(tmp_path / "state.db")
    before = raw.execute("SELECT type_version, data, hash FROM events").fetchall()
    raw.close()
    # This tool now knows env.set v2, which upper-cases values; v1 rows are upcast on read.
    monkeypatch.setitem(ev.TYPE_VERSIONS, "env.set", 2)
    monkeypatch.setitem(
        ev.UPCASTERS, ("env.set", 1), lambda d: {"key": d["key"], "value": d["value"] + "!"}
    )
    (stored,) = read(engine)
    assert stored.type_version == 1
    assert stored.data == {"key": "A", "value": "1"}
    assert stored.event() == ev.EnvSet(key="A", value="1!")
    append(engine, [ev.EnvSet(key="B", value="2")])
    assert [s.type_version for s in read(engine)] == [1, 2]
    engine.dispose()
    raw = sqlite3.connect(tmp_path / "state.db")
    after = raw.execute("SELECT type_version, data, hash FROM events WHERE seq = 1").fetchall()
    raw.close()
    assert after == before


@pytest.mark.parametrize("where", ["data", "actor", "command", "details"])
def test_text_that_is_not_utf8_is_bad_input_and_writes_nothing(engine: Engine, where: str) -> None:
    """Undecodable command-line bytes arrive as lone surrogates; they cannot be stored."""
    bad = "x\udcff"
    event = ev.EnvSet(key="A", value=bad if where == "data" else "1")
    tx = log.TxInfo(
        actor=bad if where == "actor" else "a",
        command=bad if where == "command" else "c",
        details={"file": bad} if where == "details" else {},
    )
    with pytest.raises(ValidationError, match="not valid UTF-8"), db.write_tx(engine) as conn:
        log.append(conn, tx, [ev.EnvSet(key="B", value="ok"), event])
    assert counts(engine) == (0, 0)
