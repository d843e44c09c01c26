"""The fast paths: scoped decisions, chain v2, driver executemany, lazy texts, trusted replays,
durable materialization and a light start-up. Real stores in temp dirs, real components."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from tests import wasm_fixtures
from tests.conftest import REPO, Env, raw_db, run_verify
from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import ConflictError, StoreError
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.state import Metadata, Policy, compact
from wassette_state.store.files import fsutil
from wassette_state.store.persistence import db, log, readmodel
from wassette_state.store.persistence.schema import entities, events, setting_versions
from wassette_state.store.usecases import commands, history, secret_commands
from wassette_state.store.usecases.service import Decision, Store

V0001 = REPO / "tests" / "fixtures" / "db" / "v0001.db"
POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n      - host: a.b\n'


def read_models(store: Store) -> tuple[list[list[Any]], list[list[Any]]]:
    with store.reading() as conn:
        rows = readmodel.read_all(conn)
    return rows.components, rows.settings


def v2_from(path: Path) -> int:
    with raw_db(path) as c:
        return int(c.execute("SELECT chain_v2_from FROM store_identity").fetchone()[0])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every event type: two components sharing one policy text, secrets, env, permissions,
    a policy detach, a detach and a re-attach."""
    root = tmp_path_factory.mktemp("fast-template")
    env = Env(root)
    store: Store = env.store()  # type: ignore[assignment]
    wasm_fixtures.write_component(root / "weather.wasm", "weather")
    wasm_fixtures.write_component(root / "fetch.wasm", "simple")
    (root / "policy.yaml").write_text(POLICY)
    policy = str(root / "policy.yaml")
    commands.attach(store, str(root / "weather.wasm"), policy_file=policy)
    commands.attach(store, str(root / "fetch.wasm"), policy_file=policy)
    commands.env_set(store, {"LOG_LEVEL": "info", "REGION": "eu"})
    secret_commands.secret_set(store, "weather", {"API_KEY": "s3cr3t-value-1"})
    secret_commands.secret_set(store, "fetch", {"TOKEN": "s3cr3t-value-2", "OTHER": "x"})
    commands.permission(store, "grant", "weather", "network", "api.example.com")
    secret_commands.secret_delete(store, "fetch", ["OTHER"])
    commands.env_unset(store, ["REGION"])
    commands.policy_detach(store, "fetch")
    commands.detach(store, "fetch")
    commands.attach(store, str(root / "fetch.wasm"))
    store.close()
    return root


@pytest.fixture
def populated(template: Path, env: Env) -> Iterator[Store]:
    shutil.copytree(template, env.root, dirs_exist_ok=True)
    store: Store = env.store()  # type: ignore[assignment]
    yield store
    store.close()


@pytest.fixture
def upgraded(env: Env) -> Iterator[Store]:
    """A copy of the committed revision-0001 store, opened (so upgraded) by this code."""
    shutil.copyfile(V0001, env.db)
    store: Store = env.store()  # type: ignore[assignment]
    yield store
    store.close()


# ---------------------------------------------------------------- chain v2


def test_upgraded_store_keeps_v1_for_old_events_and_verifies_with_both(
    upgraded: Store, env: Env
) -> None:
    old_head = upgraded.head_seq()
    assert old_head == 13
    assert v2_from(env.db) == old_head + 1
    assert run_verify(upgraded).ok
    commands.env_set(upgraded, {"NEW": "1"})
    wasm_fixtures.write_component(env.root / "w.wasm", "weather")
    commands.attach(upgraded, str(env.root / "w.wasm"), component_id="w2")
    assert upgraded.head_seq() > old_head + 2  # paths.set, env.set, attach: v2 events
    report = run_verify(upgraded)
    assert report.ok, report.problems
    # The v1 part is hashed as before: the old hashes were not rewritten.
    with raw_db(V0001) as old, raw_db(env.db) as new:
        before = old.execute("SELECT seq, hash FROM events ORDER BY seq").fetchall()
        after = new.execute(f"SELECT seq, hash FROM events WHERE seq <= {old_head}").fetchall()
    assert before == after


def test_reformatted_v2_event_is_detected(upgraded: Store, env: Env) -> None:
    """v2 hashes the stored bytes: even a reformatting that keeps the meaning is an edit."""
    commands.env_set(upgraded, {"NEW": "1"})
    seq = upgraded.history(log.Query(type_prefix="env.set"))[-1].seq
    assert seq >= v2_from(env.db)
    with raw_db(env.db) as c:
        (text,) = c.execute("SELECT data FROM events WHERE seq = ?", (seq,)).fetchone()
        same_meaning = json.dumps(json.loads(text), indent=1)
        assert json.loads(same_meaning) == json.loads(text) and same_meaning != text
        c.execute("UPDATE events SET data = ? WHERE seq = ?", (same_meaning, seq))
    report = run_verify(upgraded)
    assert not report.ok
    assert report.problems[0].startswith(f"seq {seq}: hash mismatch"), report.problems


def test_edited_v1_event_of_an_upgraded_store_is_detected(upgraded: Store, env: Env) -> None:
    commands.env_set(upgraded, {"NEW": "1"})
    with raw_db(env.db) as c:
        c.execute(
            "UPDATE events SET data = ? WHERE seq = 4",
            (json.dumps({"key": "LOG_LEVEL", "value": "x"}),),
        )
    report = run_verify(upgraded)
    assert not report.ok and report.problems[0].startswith("seq 4: hash mismatch")


@pytest.mark.parametrize("moved_to", ["1", "head_seq"])
def test_moving_the_chain_switch_point_is_detected(
    upgraded: Store, env: Env, moved_to: str
) -> None:
    """Verifying old events as v2 (or new ones as v1) fails: the switch point is not a knob."""
    commands.env_set(upgraded, {"NEW": "1"})
    with raw_db(env.db) as c:
        c.execute(f"UPDATE store_identity SET chain_v2_from = {moved_to}")
    assert not run_verify(upgraded).ok


def test_new_store_hashes_v2_from_the_first_event(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    commands.env_set(store, {"A": "1"})
    assert v2_from(env.db) == 1
    assert run_verify(store).ok
    with raw_db(env.db) as c:
        (text,) = c.execute("SELECT data FROM events WHERE seq = 1").fetchone()
        c.execute("UPDATE events SET data = ? WHERE seq = 1", (text.replace(",", ", ", 1),))
    report = run_verify(store)
    assert report.problems and report.problems[0].startswith("seq 1: hash mismatch")
    store.close()


def test_attach_text_is_the_spliced_metadata_and_hash_matches(populated: Store) -> None:
    attach = populated.history(log.Query(type_prefix="component.attached"))[0]
    assert attach.data_text is not None
    assert json.loads(attach.data_text) == attach.data
    assert list(attach.data)[-1] == "metadata"
    meta = readmodel._stored_metadata(attach)
    assert meta is not None and json.loads(meta.raw) == attach.data["metadata"]
    assert meta.raw == compact(attach.data["metadata"])


# ---------------------------------------------------------------- scoped decisions


def test_scope_violation_raises_and_appends_nothing(populated: Store) -> None:
    head = populated.head_seq()
    models = read_models(populated)

    def decide(_state: Any) -> Decision:
        return Decision([ev.SecretKeysSet(component_id="fetch", keys=["K"])])

    with pytest.raises(StoreError, match="outside the command's scope"):
        populated.execute("bad", decide, scope={"weather"})
    assert populated.head_seq() == head
    assert read_models(populated) == models
    assert run_verify(populated).ok


def test_scoped_decision_sees_its_component_and_the_settings_only(populated: Store) -> None:
    seen: list[Any] = []

    def decide(state: Any) -> Decision:
        seen.append(state)
        return Decision([ev.SecretKeysSet(component_id="weather", keys=["B"])])

    out = populated.execute("ok", decide, scope={"weather"})
    assert out.tx_id is not None
    (state,) = seen
    assert sorted(state.components) == ["weather"]
    assert state.environment == {"LOG_LEVEL": "info"}
    assert state.paths is not None
    # The scoped decision's read models equal those a full replay derives.
    report = run_verify(populated)
    assert report.ok, report.problems
    assert populated.state().components["weather"].secret_keys == ("API_KEY", "B")
    assert populated.state(scope={"weather"}).components.keys() == {"weather"}


def test_settings_only_scope(populated: Store) -> None:
    def decide(state: Any) -> Decision:
        assert state.components == {}
        return Decision([ev.EnvSet(key="X", value="1")])

    populated.execute("env", decide, scope=set())
    with pytest.raises(StoreError):
        populated.execute(
            "bad", lambda _s: Decision([ev.ComponentDetached(component_id="weather")]), scope=set()
        )
    assert "weather" in populated.state().components
    assert run_verify(populated).ok


# ---------------------------------------------------------------- lazy texts


def test_state_texts_load_after_the_store_is_closed(populated: Store, env: Env) -> None:
    eager = populated.state(scope={"weather", "fetch"})
    lazy = populated.state()
    populated.close()
    for cid in ("weather", "fetch"):
        assert lazy.components[cid].metadata.raw == eager.components[cid].metadata.raw
        assert lazy.components[cid].metadata.doc == eager.components[cid].metadata.doc
    lp, ep = lazy.components["weather"].policy, eager.components["weather"].policy
    assert lp is not None and ep is not None
    assert lp.policy_content == ep.policy_content and "api.example.com" in lp.policy_content


def test_two_components_with_one_policy_text_both_load(template: Path, env: Env) -> None:
    shutil.copytree(template, env.root, dirs_exist_ok=True)
    store: Store = env.store()  # type: ignore[assignment]
    commands.policy_attach(store, "fetch", str(env.root / "policy.yaml"))
    commands.policy_attach(store, "weather", str(env.root / "policy.yaml"))
    state = store.state()
    a, b = state.components["weather"].policy, state.components["fetch"].policy
    assert a is not None and b is not None
    assert a.sha256 == b.sha256
    assert a.policy_content == POLICY
    assert b.policy_content == POLICY  # the second reader of a shared text
    assert a.policy_content == POLICY  # and the first again
    store.close()


def test_two_components_with_one_metadata_text_both_load(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    doc = {"component_id": "shared", "tool_schemas": [], "note": "same text"}
    events_ = [
        ev.ComponentAttached(
            component_id=cid, source_uri=f"file:///{cid}", wasm_sha256="0" * 64, metadata=doc
        )
        for cid in ("one", "two")
    ]
    store.execute("attach two", lambda _s: Decision(list(events_)))
    state = store.state()
    texts = [state.components[c].metadata.raw for c in ("two", "one", "two")]
    assert [json.loads(t) for t in texts] == [doc, doc, doc]
    assert state.components["one"].metadata == state.components["two"].metadata
    assert run_verify(store).ok
    store.close()


def test_missing_content_names_verify(populated: Store, env: Env) -> None:
    with raw_db(env.db) as c:
        c.execute("PRAGMA foreign_keys=OFF")
        c.execute("DELETE FROM contents")
    state = populated.state()
    with pytest.raises(StoreError, match="state verify"):
        _ = state.components["weather"].metadata.raw


def test_lazy_and_eager_states_are_equal(populated: Store) -> None:
    lazy = populated.state()
    eager = populated.state(scope=set(lazy.components))
    assert lazy.components == eager.components
    assert lazy == eager


# ---------------------------------------------------------------- Policy / Metadata semantics


class Loader:
    """A text source by hash that counts its reads (a plain callable, as LazyBodies is)."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.calls = 0

    def __call__(self, ref: str) -> str:
        self.calls += 1
        return self.texts[ref]


def test_policy_equality_and_hash() -> None:
    eager = Policy(POLICY, "file:///p.yaml", 7)
    loader = Loader({eager.sha256: POLICY})
    lazy = Policy(None, "file:///p.yaml", 7, ref=eager.sha256, loader=loader)
    lazy2 = Policy(None, "file:///p.yaml", 7, ref=eager.sha256, loader=loader)
    assert lazy == lazy2 and hash(lazy) == hash(lazy2)
    assert loader.calls == 0  # two refs compare by hash, unloaded
    fresh = Policy(POLICY, "file:///p.yaml", 7)  # no hash computed yet
    assert fresh == lazy and lazy == fresh and hash(fresh) == hash(lazy)
    assert len({eager, lazy, lazy2, fresh}) == 1
    assert Policy(POLICY + "#", "file:///p.yaml", 7) != lazy
    assert Policy(POLICY, "file:///q.yaml", 7) != lazy
    assert Policy(POLICY, "file:///p.yaml", 8) != lazy
    changed = lazy.with_content("other")
    assert changed.policy_content == "other" and changed.source_uri == "file:///p.yaml"
    assert changed.attached_at == 7 and changed != lazy
    assert lazy.policy_content == POLICY
    assert (lazy == "text") is False
    with pytest.raises(ValueError):
        Policy(None, "x", 1)


def test_metadata_equality() -> None:
    doc = {"component_id": "a", "tool_schemas": [{"name": "t", "inputSchema": {}}]}
    eager = Metadata(doc=doc)
    loader = Loader({eager.sha256: eager.raw})
    lazy = Metadata(ref=eager.sha256, loader=loader)
    lazy2 = Metadata(ref=eager.sha256, loader=loader)
    assert lazy == lazy2 and loader.calls == 0
    assert Metadata(doc=doc) == lazy and lazy == Metadata(raw=eager.raw)
    assert lazy == doc  # a plain mapping compares by content
    reordered = Metadata(doc={"tool_schemas": doc["tool_schemas"], "component_id": "a"})
    assert reordered.sha256 != eager.sha256 and reordered == lazy  # same document
    assert Metadata(doc={**doc, "component_id": "b"}) != lazy
    assert lazy.raw == eager.raw and lazy.doc == doc
    with pytest.raises(TypeError):
        hash(lazy)
    with pytest.raises(ValueError):
        Metadata(ref="x")


def test_metadata_stamp_of_a_lazy_text() -> None:
    doc = {"component_id": "a", "validation_stamp": {"file_size": 12, "mtime": 34, "x": 1}}
    eager = Metadata(doc=doc)
    lazy = Metadata(ref=eager.sha256, loader=Loader({eager.sha256: eager.raw}))
    assert lazy.stamp() == eager.stamp() == (12, 34)


def test_rollback_and_diff_with_lazy_states(populated: Store, env: Env) -> None:
    before_grant = populated.history(log.Query(type_prefix="policy.changed"))[0].seq - 1
    target = populated.state(before_grant)
    out = history.rollback(populated, f"seq:{before_grant}")
    assert out.tx_id is not None
    now = populated.state()
    for cid in target.components:
        assert now.components[cid] == target.components[cid], cid
    assert now.environment == target.environment
    assert now.components["weather"].policy is not None
    assert "api.example.com" not in now.components["weather"].policy.policy_content
    # The same point again: the lazy current state equals the target, nothing to record.
    again = history.rollback(populated, f"seq:{before_grant}")
    assert again.tx_id is None
    # Re-attaching identical bytes records nothing either (compared by hash).
    head = populated.head_seq()
    commands.attach(populated, str(env.root / "weather.wasm"))
    assert populated.head_seq() == head
    assert run_verify(populated).ok
    r = env.run("state", "diff", f"seq:{before_grant}", "-o", "json")
    assert r.code == 0, r.err
    # Only the paths differ (this copy of the store lives elsewhere): paths are never rolled back.
    assert [c["field"] for c in json.loads(r.out)] == ["paths"]


def test_diff_reports_a_policy_change_between_points(populated: Store, env: Env) -> None:
    grant = populated.history(log.Query(type_prefix="policy.changed"))[0].seq
    r = env.run("state", "diff", f"seq:{grant - 1}", f"seq:{grant}", "-o", "json")
    assert r.code == 0, r.err
    changes = json.loads(r.out)
    assert [(c["component_id"], c["field"]) for c in changes] == [("weather", "policy")]
    assert "api.example.com" in changes[0]["after"]["policy_content"]
    assert "api.example.com" not in changes[0]["before"]["policy_content"]


# ---------------------------------------------------------------- rebuild


def test_rebuild_gives_the_incremental_read_models(populated: Store) -> None:
    before = read_models(populated)
    with populated.reading() as conn:
        n = log.head(conn)[0]
    assert populated.rebuild() == n
    assert read_models(populated) == before
    report = run_verify(populated)
    assert report.ok, report.problems


def test_rebuild_of_an_upgraded_store(upgraded: Store, env: Env) -> None:
    wasm_fixtures.write_component(env.root / "w.wasm", "weather")
    commands.attach(upgraded, str(env.root / "w.wasm"), component_id="w2")
    secret_commands.secret_set(upgraded, "w2", {"K": "v"})
    before = read_models(upgraded)
    upgraded.rebuild()
    assert read_models(upgraded) == before
    assert run_verify(upgraded).ok


def test_attach_text_in_another_key_order_rebuilds_from_its_data(upgraded: Store, env: Env) -> None:
    """Early writers stored sorted keys (metadata not last). v1 hashes the parsed data, so such
    a log verifies; its metadata must then come from the data, not from a slice of the text."""
    with raw_db(env.db) as c:
        rows = c.execute(
            "SELECT seq, data FROM events WHERE type = 'component.attached'"
        ).fetchall()
        for seq, text in rows:
            data = json.loads(text)
            sorted_top = compact({k: data[k] for k in sorted(data)})  # nested order kept
            assert sorted_top != text and '"metadata":' in sorted_top
            c.execute("UPDATE events SET data = ? WHERE seq = ?", (sorted_top, seq))
    report = run_verify(upgraded)
    assert report.ok, report.problems
    before = read_models(upgraded)
    expected = {cid: c.metadata.doc for cid, c in upgraded.state().components.items()}
    upgraded.rebuild()
    assert read_models(upgraded) == before
    state = upgraded.state()
    assert {cid: c.metadata.doc for cid, c in state.components.items()} == expected
    assert run_verify(upgraded).ok


def test_trusted_events_equal_validated_ones(populated: Store) -> None:
    stored = populated.history(log.Query())
    assert {se.type for se in stored} == set(ev.EVENT_TYPES)
    for se in stored:
        trusted, checked = se.trusted_event(), se.event()
        assert type(trusted) is type(checked)
        assert trusted.model_dump() == checked.model_dump(), se.seq
    with pytest.raises(ValueError):
        ev.from_data_trusted("no.such", 1, {})


# ---------------------------------------------------------------- bulk insert


def test_bulk_insert_ignore_existing_and_errors(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    commands.env_set(store, {"A": "1"})
    rows = [("setting", "k1"), ("setting", "k2")]
    with db.write_tx(store.engine) as conn:
        db.bulk_insert(conn, entities, ("kind", "key"), rows, ignore_existing=True)
        db.bulk_insert(
            conn,
            entities,
            ("kind", "key"),
            [("setting", "k2"), ("setting", "k3")],
            ignore_existing=True,
        )
        db.bulk_insert(conn, entities, ("kind", "key"), [], ignore_existing=False)
    with store.reading() as conn:
        keys = set(conn.execute(entities.select().where(entities.c.kind == "setting")))
    assert {("setting", k) for k in ("k1", "k2", "k3", "env:A", "paths")} == keys
    # Without ignore_existing a duplicate is a driver error, wrapped like Core's.
    with pytest.raises(StoreError, match="integrity"), db.write_tx(store.engine) as conn:
        db.bulk_insert(conn, entities, ("kind", "key"), [("setting", "k9"), ("setting", "k1")])
    with store.reading() as conn:
        assert conn.execute(entities.select().where(entities.c.key == "k9")).first() is None
    with pytest.raises(sa_exc.IntegrityError), store.engine.connect() as conn, conn.begin():
        db.bulk_insert(conn, entities, ("kind", "key"), [("setting", "k1")])
    store.close()


def test_bulk_insert_keeps_column_order_and_nulls(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    cols = ("key", "from_seq", "to_seq", "value")
    with db.write_tx(store.engine) as conn:
        db.bulk_insert(conn, setting_versions, cols, [("x", 5, None, '"v"'), ("y", 6, 9, "1")])
    with store.reading() as conn:
        got = conn.execute(
            setting_versions.select()
            .with_only_columns(*(setting_versions.c[c] for c in cols))
            .where(setting_versions.c.key.in_(["x", "y"]))
            .order_by(setting_versions.c.key)
        ).all()
    assert [tuple(r) for r in got] == [("x", 5, None, '"v"'), ("y", 6, 9, "1")]
    with pytest.raises(StoreError, match="parameter order"), db.write_tx(store.engine) as conn:
        db.bulk_insert(
            conn, setting_versions, ("from_seq", "key", "to_seq", "value"), [(1, "z", None, "1")]
        )
    store.close()


def test_lost_stream_race_in_the_event_insert_is_a_conflict(env: Env) -> None:
    """A (stream, stream_version) clash raised by the driver is the conflict error (exit 3),
    as it was when Core ran the insert."""
    store: Store = env.store()  # type: ignore[assignment]
    commands.env_set(store, {"A": "1"})
    with raw_db(env.db) as c:
        (stream, version) = c.execute(
            "SELECT stream, stream_version FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    cols = ("seq", "tx_id", "stream", "stream_version", "type", "type_version", "data", "hash")
    with pytest.raises(ConflictError), db.write_tx(store.engine) as conn:
        db.bulk_insert(conn, events, cols, [(99, 1, stream, version, "env.set", 1, "{}", "0" * 64)])
    assert store.head_seq() == 2
    store.close()


def test_driver_error_in_an_append_leaves_the_cli_with_a_clean_error(env: Env) -> None:
    assert env.run("env", "set", "A=1").code == 0
    with raw_db(env.db) as c:
        c.execute(
            "CREATE TRIGGER block BEFORE INSERT ON events BEGIN "
            "SELECT RAISE(ABORT, 'stream slot taken'); END"
        )
    r = env.run("env", "set", "B=2")
    assert r.code == 3, r.text
    assert r.err.startswith("Error: ") and "unexpected" not in r.err
    with raw_db(env.db) as c:
        c.execute("DROP TRIGGER block")
        assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


# ---------------------------------------------------------------- durable files


def _files(directory: Path, n: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"f{i}.txt"
        fsutil.atomic_write(p, f"{i}\n".encode(), durable=False)
        paths.append(p)
    return paths


@pytest.mark.parametrize("count", [0, 3, fsutil.FSYNC_EACH_MAX, fsutil.FSYNC_EACH_MAX + 1])
def test_make_durable(tmp_path: Path, count: int) -> None:
    paths = _files(tmp_path / "d", count)
    fsutil.make_durable([*paths, tmp_path / "d" / "gone-meanwhile"], tmp_path / "d")
    assert [p.read_text() for p in paths] == [f"{i}\n" for i in range(count)]
    with pytest.raises(FileNotFoundError):
        fsutil.make_durable(paths[:1], tmp_path / "no-such-dir")


@pytest.mark.parametrize("removed", ["one", "all"])
def test_materialize_after_files_are_lost(populated: Store, env: Env, removed: str) -> None:
    """Few files (fsync each) or many (one sync): files come back and the marker is current."""
    # weather: 4 files, fetch: 2, each extra: 2; "all" must pass FSYNC_EACH_MAX.
    for i in range(14 if removed == "all" else 0):
        shutil.copyfile(env.root / "fetch.wasm", env.root / f"extra{i}.wasm")
        commands.attach(populated, str(env.root / f"extra{i}.wasm"))
    want = {
        p.name: p.read_bytes() for p in env.component_dir.iterdir() if not p.name.startswith(".")
    }
    victims = (
        [env.component_dir / "weather.policy.yaml"]
        if removed == "one"
        else list(env.component_dir.iterdir())
    )
    for p in victims:
        p.unlink()
    report = populated.materialize(None)
    assert len(report.paths) == len(victims)
    assert (len(report.paths) > fsutil.FSYNC_EACH_MAX) == (removed == "all")
    got = {
        p.name: p.read_bytes() for p in env.component_dir.iterdir() if not p.name.startswith(".")
    }
    assert got == want
    marker = populated.read_marker()
    assert marker is not None
    assert {k: marker[k] for k in ("component_dir", "secrets_dir", "seq")} == {
        "component_dir": str(env.component_dir),
        "secrets_dir": str(env.secrets_dir),
        "seq": populated.head_seq(),
    }


def test_stale_temp_files_go_with_the_repair_a_lagging_marker_triggers(
    populated: Store, env: Env
) -> None:
    stale = env.component_dir / ".weather.wasm.killed.tmp"
    stale.write_bytes(b"half")
    marker = json.loads(populated.marker_path.read_text())
    populated.marker_path.write_text(json.dumps({**marker, "seq": marker["seq"] - 1}))
    commands.env_set(populated, {"AFTER": "crash"})  # repairs first
    assert not stale.exists()
    populated.marker_path.write_text("")  # a marker torn in a crash reads as lagging
    assert populated.read_marker() is None
    (env.component_dir / "weather.metadata.json").unlink()
    commands.env_set(populated, {"AFTER": "torn"})
    assert (env.component_dir / "weather.metadata.json").exists()


# ---------------------------------------------------------------- export, gc, start-up


def test_export_of_a_past_point_skips_the_file_scan(populated: Store, env: Env) -> None:
    (env.component_dir / "weather.policy.yaml").write_text("edited by hand\n")
    past = populated.head_seq() - 1
    r = env.run("state", "export", str(env.root / "past.json"), "--at", f"seq:{past}")
    assert r.code == 0, r.err
    assert "not in the log" not in r.err
    assert json.loads((env.root / "past.json").read_text())["components"]
    r = env.run("state", "export", str(env.root / "now.json"))
    assert r.code == 0, r.err
    assert "not in the log" in r.err


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not re-enable under the outer
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_reading_a_state_does_not_load_the_event_models(populated: Store, env: Env) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store
s = Store(resolve({str(env.db)!r}, {str(env.component_dir)!r}, {str(env.secrets_dir)!r}, "t"))
state = s.state()
assert sorted(state.components) == ["fetch", "weather"], state.components
assert state.components["weather"].metadata.raw
s.state(1)
s.close()
mods = ("pydantic", "wassette_state.store.domain.events", "wassette_state.store.domain.fold")
heavy = sorted(m for m in mods if m in sys.modules)
print(",".join(heavy))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == ""


def test_secret_values_stay_out_of_the_database(populated: Store, env: Env) -> None:
    populated.rebuild()
    secret_commands.secret_set(populated, "weather", {"API_KEY": "s3cr3t-value-3"})
    populated.close()
    blobs = b"".join(
        p.read_bytes() for p in env.root.iterdir() if p.name.startswith("state.db") and p.is_file()
    )
    for value in (b"s3cr3t-value-1", b"s3cr3t-value-2", b"s3cr3t-value-3"):
        assert value not in blobs
    from wassette_state.store.files import secrets

    assert secrets.read_values(env.secrets_dir, "weather") == {"API_KEY": "s3cr3t-value-3"}


def test_an_unscoped_key_change_never_fetches_the_unchanged_texts(populated: Store) -> None:
    """The read models of a new version that keeps a component's texts reference them by
    hash: nothing is fetched (a fetch of one lazy text loads every pending one)."""
    fetched: list[str] = []
    lazy = populated.state()

    def refuse(ref: str) -> str:
        fetched.append(ref)
        raise AssertionError("a text was fetched")

    comp = lazy.components["weather"]
    assert comp.policy is not None
    base_comp = type(comp)(
        comp.component_id,
        comp.source_uri,
        comp.wasm_sha256,
        Metadata(ref=comp.metadata.sha256, loader=refuse),
        Policy(
            None,
            comp.policy.source_uri,
            comp.policy.attached_at,
            ref=comp.policy.sha256,
            loader=refuse,
        ),
        comp.secret_keys,
    )
    base = type(lazy)({"weather": base_comp}, dict(lazy.environment), lazy.paths)
    new = [ev.SecretKeysSet(component_id="weather", keys=["NEW_KEY"])]
    with db.write_tx(populated.engine) as conn:
        appended = log.append(conn, log.TxInfo(actor="t", command="t"), new)
        readmodel.apply(conn, appended.events, base, new, appended.metadata)
    assert fetched == []
    assert run_verify(populated).ok
    assert "NEW_KEY" in populated.state(scope={"weather"}).components["weather"].secret_keys
