"""`verify` and `rebuild` against real tampering of a real SQLite file (raw SQL, no mocks)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures
from tests.conftest import Env, assert_refused, raw_db, run_verify
from wassette_state.store.domain import events as ev
from wassette_state.store.persistence import log, readmodel
from wassette_state.store.usecases import commands, secret_commands
from wassette_state.store.usecases.service import Decision, Store


def first_problem(store: Store) -> str:
    report = run_verify(store)
    assert not report.ok, "tampering was not detected"
    return report.problems[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with components, a policy, secrets and env vars: 8 transactions, 11 events."""
    root = tmp_path_factory.mktemp("template")
    env = Env(root)
    store: Store = env.store()  # type: ignore[assignment]
    wasm = root / "weather.wasm"
    wasm_fixtures.write_component(wasm, "weather")
    wasm_fixtures.write_component(root / "fetch.wasm", "simple")
    policy = root / "policy.yaml"
    policy.write_text('version: "1.0"\npermissions:\n  network:\n    allow:\n      - host: a.b\n')
    commands.attach(store, str(wasm), policy_file=str(policy))  # tx1: paths, attach, policy
    commands.env_set(store, {"LOG_LEVEL": "info", "REGION": "eu"})  # tx2
    secret_commands.secret_set(store, "weather", {"API_KEY": "s3cr3t"})  # tx3
    commands.attach(store, str(root / "fetch.wasm"))  # tx4
    commands.permission(store, "grant", "weather", "network", "api.example.com")  # tx5
    commands.env_set(store, {"LOG_LEVEL": "debug"})  # tx6
    secret_commands.secret_set(store, "weather", {"API_KEY": "rotated"})  # tx7: rotation, same keys
    commands.detach(store, "fetch")  # tx8
    store.close()
    return root


@pytest.fixture
def populated(template: Path, env: Env) -> Iterator[Store]:
    """A private copy of the template store (same bytes, own directory)."""
    shutil.copytree(template, env.root, dirs_exist_ok=True)
    store: Store = env.store()  # type: ignore[assignment]
    yield store
    store.close()


def seq_of(store: Store, type_: str, nth: int = 0) -> int:
    return store.history(log.Query(type_prefix=type_))[nth].seq


# ---------------------------------------------------------------- healthy


def test_healthy_store_verifies(populated: Store) -> None:
    report = run_verify(populated)
    assert report.ok, report.problems
    assert report.transactions == 8
    assert report.events == len(populated.history(log.Query())) == 11


def test_empty_store_verifies(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    report = run_verify(store)
    assert report.ok and (report.events, report.transactions) == (0, 0)


# ---------------------------------------------------------------- tampered log


def test_edited_event_data(populated: Store, env: Env) -> None:
    seq = seq_of(populated, "env.set")
    with raw_db(env.db) as c:
        c.execute(
            "UPDATE events SET data = json_set(data, '$.value', 'warn') WHERE seq = ?", (seq,)
        )
    assert first_problem(populated).startswith(f"seq {seq}: hash mismatch")


def test_edited_event_type_and_version(populated: Store, env: Env) -> None:
    seq = seq_of(populated, "policy.changed")
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET type = 'policy.attached' WHERE seq = ?", (seq,))
    assert first_problem(populated).startswith(f"seq {seq}: ")
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET type = 'policy.changed' WHERE seq = ?", (seq,))
    assert run_verify(populated).ok
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET stream_version = stream_version + 100 WHERE seq = ?", (seq,))
    assert first_problem(populated).startswith(f"seq {seq}: ")


@pytest.mark.parametrize("which", ["first", "middle"])
def test_deleted_event(populated: Store, env: Env, which: str) -> None:
    seq = 1 if which == "first" else seq_of(populated, "secret.keys_set")
    with raw_db(env.db) as c:
        c.execute("DELETE FROM events WHERE seq = ?", (seq,))
    problem = first_problem(populated)
    assert problem.startswith(f"seq {seq}: missing"), problem


def test_deleted_last_event(populated: Store, env: Env) -> None:
    """The tail has no successor to notice the gap: its transaction, left empty, does."""
    head = populated.head_seq()
    with raw_db(env.db) as c:
        c.execute("DELETE FROM events WHERE seq = ?", (head,))
    assert first_problem(populated).startswith(f"seq {head}: ")


def test_deleted_last_rotation_event(populated: Store, env: Env) -> None:
    """A rotation changes no read model; deleting it still leaves an empty transaction."""
    rotation = populated.history(log.Query(type_prefix="secret.keys_set"))[-1]
    with raw_db(env.db) as c:
        c.execute("DELETE FROM events WHERE seq > ?", (rotation.seq - 1,))
        c.execute("DELETE FROM transactions WHERE id > ?", (rotation.tx_id,))
    assert first_problem(populated).startswith(f"seq {rotation.seq}: transaction")


def test_truncated_tail_of_no_op_transactions(populated: Store, env: Env) -> None:
    rotation = populated.history(log.Query(type_prefix="secret.keys_set"))[-1]
    with raw_db(env.db) as c:
        # Undo the detach's read-model effect, then cut the log after the rotation.
        c.execute("DELETE FROM events WHERE seq > ?", (rotation.seq - 1,))
        c.execute("DELETE FROM transactions WHERE id >= ?", (rotation.tx_id,))
    populated.rebuild()
    assert "were cut off the end" in first_problem(populated)


def test_reordered_pair(populated: Store, env: Env) -> None:
    a, b = 3, 4
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET seq = -1 WHERE seq = ?", (a,))
        c.execute("UPDATE events SET seq = ? WHERE seq = ?", (a, b))
        c.execute("UPDATE events SET seq = ? WHERE seq = -1", (b,))
    assert first_problem(populated).startswith(f"seq {a}: ")


def test_swapped_data_of_two_rows(populated: Store, env: Env) -> None:
    s1 = seq_of(populated, "env.set", 0)
    s2 = seq_of(populated, "env.set", 2)
    with raw_db(env.db) as c:
        (d1,) = c.execute("SELECT data FROM events WHERE seq = ?", (s1,)).fetchone()
        (d2,) = c.execute("SELECT data FROM events WHERE seq = ?", (s2,)).fetchone()
        assert d1 != d2
        c.execute("UPDATE events SET data = ? WHERE seq = ?", (d2, s1))
        c.execute("UPDATE events SET data = ? WHERE seq = ?", (d1, s2))
    assert first_problem(populated).startswith(f"seq {s1}: hash mismatch")


def test_edited_transaction_actor(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("UPDATE transactions SET actor = 'mallory@evil' WHERE id = 5")
    tx5 = populated.history(log.Query(tx_id=5))
    assert first_problem(populated).startswith(f"seq {tx5[0].seq}: hash mismatch")


def test_edited_transaction_time(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("UPDATE transactions SET recorded_at = recorded_at - 1 WHERE id = 2")
    tx2 = populated.history(log.Query(tx_id=2))
    assert first_problem(populated).startswith(f"seq {tx2[0].seq}: hash mismatch")


@pytest.mark.parametrize(
    "edit",
    [
        "command = 'env set HARMLESS'",
        "reason = 'nothing to see'",
        "details = '{\"forged\": true}'",
    ],
)
def test_edited_transaction_command_reason_details(populated: Store, env: Env, edit: str) -> None:
    with raw_db(env.db) as c:
        c.execute(f"UPDATE transactions SET {edit} WHERE id = 5")
    tx5 = populated.history(log.Query(tx_id=5))
    assert first_problem(populated).startswith(f"seq {tx5[0].seq}: hash mismatch")


def test_rehashed_chain_with_invalid_event_data(populated: Store, env: Env) -> None:
    """Someone who recomputes the whole chain still cannot slip in data no event accepts."""
    seq = seq_of(populated, "env.set")
    rewrite_chain(env.db, seq, lambda d: {**d, "value_plain": "x"})
    problem = first_problem(populated)
    assert problem.startswith(f"seq {seq}: event data does not validate"), problem


def test_rehashed_chain_without_matching_read_models(populated: Store, env: Env) -> None:
    seq = seq_of(populated, "env.set", 2)  # LOG_LEVEL=debug
    rewrite_chain(env.db, seq, lambda d: {**d, "value": "trace"})
    problem = first_problem(populated)
    assert problem.startswith(f"seq {seq}: read model differs from the log"), problem
    populated.rebuild()  # the read models now follow the (rewritten) log
    assert populated.state().environment["LOG_LEVEL"] == "trace"
    # ...but the head the store recorded at the last append still names the original chain.
    last = populated.head_seq()
    assert first_problem(populated).startswith(f"seq {last}: the last event's hash is not")


def rewrite_chain(path: Path, seq: int, edit: Any) -> None:
    """Edit one event's data and recompute every hash from there (a careful forger)."""
    with raw_db(path) as c:
        rows = c.execute(
            "SELECT e.seq, e.tx_id, t.recorded_at, t.actor, t.kind, e.stream, e.stream_version,"
            " e.type, e.type_version, e.data, t.command, t.reason, t.details"
            " FROM events e JOIN transactions t ON t.id = e.tx_id ORDER BY e.seq"
        ).fetchall()
        prev = log.GENESIS_HASH
        (v2_from,) = c.execute("SELECT chain_v2_from FROM store_identity").fetchone()
        c.execute("BEGIN")
        for s, tx, at, actor, kind, stream, sv, type_, tv, data, cmd, why, det in rows:
            parsed = json.loads(data)
            if s == seq:
                parsed = edit(parsed)
                data = json.dumps(parsed)
                c.execute("UPDATE events SET data = ? WHERE seq = ?", (data, s))
            row = {
                "seq": s, "tx_id": tx, "recorded_at": at, "actor": actor, "kind": kind,
                "stream": stream, "stream_version": sv, "type": type_, "type_version": tv,
                "data": parsed, "tx_digest": log.tx_digest(cmd, why, json.loads(det)),
            }  # fmt: skip
            prev = log.event_hash(prev, row, data, v2_from)
            c.execute("UPDATE events SET hash = ? WHERE seq = ?", (prev, s))
        c.execute("COMMIT")


# ---------------------------------------------------------------- tampered read models


def test_edited_component_version_row(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        row_id, from_seq = c.execute(
            "SELECT id, from_seq FROM component_versions WHERE component_id = 'weather'"
            " AND to_seq IS NULL"
        ).fetchone()
        c.execute(
            "UPDATE component_versions SET state = json_set(state, '$.secret_keys', json('[]'))"
            " WHERE id = ?",
            (row_id,),
        )
    problem = first_problem(populated)
    assert problem.startswith(f"seq {from_seq}: read model differs"), problem
    assert "'weather'" in problem


def test_deleted_and_added_setting_version_rows(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("DELETE FROM setting_versions WHERE key = 'env:REGION'")
    assert "read model" in first_problem(populated)
    populated.rebuild()
    assert run_verify(populated).ok
    with raw_db(env.db) as c:
        c.execute(
            "INSERT INTO setting_versions (key, from_seq, to_seq, value)"
            " VALUES ('env:EXTRA', 2, NULL, '\"x\"')"
        )
    assert "read model" in first_problem(populated)


def test_deleted_entity_row(populated: Store, env: Env) -> None:
    """Without its entity row, a detached component vanishes from every past state."""
    attach_seq = populated.history(log.Query(stream="fetch"))[0].seq
    assert "fetch" in populated.state(attach_seq).components
    with raw_db(env.db) as c:
        c.execute("DELETE FROM entities WHERE kind = 'component' AND key = 'fetch'")
    assert "fetch" not in populated.state(attach_seq).components
    problem = first_problem(populated)
    assert problem.startswith(f"seq {attach_seq}: read model entity list"), problem
    populated.rebuild()
    assert run_verify(populated).ok
    assert "fetch" in populated.state(attach_seq).components


def test_edited_content_body(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute(
            "UPDATE contents SET body = body || ' ' WHERE hash ="
            " (SELECT hash FROM contents ORDER BY hash LIMIT 1)"
        )
    assert "body does not match its hash" in first_problem(populated)


def test_rebuild_restores_exactly_the_read_models_the_commands_wrote(populated: Store) -> None:
    with populated.reading() as conn:
        before = readmodel.read_all(conn)
        states = [readmodel.state_at(conn, s) for s in range(populated.head_seq() + 1)]
    assert populated.rebuild() == 11
    with populated.reading() as conn:
        after = readmodel.read_all(conn)
        assert [readmodel.state_at(conn, s) for s in range(populated.head_seq() + 1)] == states
    assert (after.components, after.settings) == (before.components, before.settings)


def test_appends_after_commands_still_verify(populated: Store) -> None:
    """A commit that appends after verify still verifies (apply and derive agree)."""
    populated.execute(
        "test", lambda s: Decision([ev.EnvSet(key="LATE", value="1"), ev.EnvUnset(key="REGION")])
    )
    assert run_verify(populated).ok


# ---------------------------------------------------------------- CLI


def verify_cli(env: Env, *args: str) -> Any:
    return env.run("state", "verify", *args)


def test_cli_verify_ok(populated: Store, env: Env) -> None:
    r = verify_cli(env)
    assert r.code == 0, r.err
    assert r.out.startswith("ok: 11 events in 8 transactions")
    r = verify_cli(env, "-o", "json")
    assert r.code == 0
    assert json.loads(r.out) == {
        "ok": True,
        "events": 11,
        "transactions": 8,
        "problems": [],
        "warnings": [],
    }


def test_cli_verify_failure_exits_4_with_one_line(populated: Store, env: Env) -> None:
    seq = seq_of(populated, "policy.changed")
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET data = replace(data, 'api.example.com', 'evil.com')"
                  " WHERE seq = ?", (seq,))  # fmt: skip
    r = verify_cli(env)
    assert_refused(env, r, code=4)
    assert re.fullmatch(rf"Error: verification failed: seq {seq}: .+", r.err.strip()), r.err
    r = verify_cli(env, "-o", "json")
    assert r.code == 4
    doc = json.loads(r.out)
    assert doc["ok"] is False and doc["problems"][0].startswith(f"seq {seq}: ")
    assert [ln for ln in r.err.splitlines() if ln.startswith("Error:")] == [
        f"Error: verification failed: {doc['problems'][0]}"
    ]


def test_cli_rebuild_repairs_an_edited_read_model_row(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("UPDATE setting_versions SET value = '\"oops\"' WHERE key = 'env:REGION'")
    assert populated.state().environment["REGION"] == "oops"
    assert_refused(env, verify_cli(env), code=4, contains="read model differs")
    r = env.run("state", "rebuild")
    assert r.code == 0, r.err
    assert "rebuilt read models from 11 events" in r.out
    assert verify_cli(env).code == 0
    assert populated.state().environment == {"LOG_LEVEL": "debug", "REGION": "eu"}
    r = env.run("state", "rebuild", "-o", "json")
    doc = json.loads(r.out)
    assert (doc["status"], doc["events"]) == ("ok", 11)


def test_cli_rebuild_does_not_hide_a_tampered_log(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET data = json_set(data, '$.value', 'x') WHERE seq = 4")
    assert env.run("state", "rebuild").code == 0
    assert_refused(env, verify_cli(env), code=4, contains="seq 4: hash mismatch")
