"""Drift: changes made to the component and secrets dirs outside wassette. `state sync` records
them as ONE `sync` transaction by the actor `filesystem`; `state export` and `state verify` warn
(and still succeed) while there is drift."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import Env, Result, all_events, ok, opened
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases import commands, drift, drift_scan, secret_commands
from wassette_state.store.usecases.history import blame, rollback

STAMP_MTIME = 1_700_000_000
SECRET_API = "api-value-0451"
POLICY = 'version: "1.0"\ndescription: weather\npermissions: {}\n'
EDITED = (
    'version: "1.0"\ndescription: edited by hand\npermissions:\n  network:\n'
    "    allow:\n    - host: granted.by.server.example.com\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state(env: Env) -> Any:
    with opened(env) as s:
        return s.state()


def warnings(result: Result) -> list[str]:
    return [ln for ln in result.err.splitlines() if ln.startswith("Warning:")]


def build(env: Env) -> dict[str, bytes]:
    """weather (policy, secrets API and TOK) and fetch, attached through the library."""
    inputs = env.root / "inputs"
    inputs.mkdir()
    data = {
        "weather": fx.write_component(inputs / "weather.wasm", kind="weather"),
        "fetch": fx.write_component(inputs / "fetch.wasm", kind="simple"),
    }
    (inputs / "p.yaml").write_text(POLICY)
    for name in ("weather.wasm", "fetch.wasm"):  # an old mtime, unlike any file written later
        os.utime(inputs / name, (STAMP_MTIME, STAMP_MTIME))
    with opened(env) as s:
        commands.attach(s, str(inputs / "weather.wasm"), None, str(inputs / "p.yaml"))
        secret_commands.secret_set(s, "weather", {"API": SECRET_API, "TOK": "tok-value-0451"})
        commands.attach(s, str(inputs / "fetch.wasm"))
    return data


def test_sync_records_every_outside_change_as_one_transaction(env: Env) -> None:
    original = build(env)
    cdir = env.component_dir
    before = all_events(env)

    # Outside changes, as a Wassette server or an operator would make them.
    replaced = fx.write_component(cdir / "weather.wasm", kind="interface")
    (cdir / "weather.policy.yaml").write_text(EDITED)
    (cdir / "fetch.wasm").unlink()
    secrets_path = secret_files.secrets_file(env.secrets_dir, "weather")
    secrets_path.write_text(yaml.safe_dump({"API": SECRET_API, "NEW_KEY": "new-value-0451"}))
    dropped = fx.write_component(cdir / "dropped.wasm", kind="mixed")

    # Export and verify warn, and still succeed.
    exported = ok(env.run("state", "export", str(env.root / "out.json")))
    assert len(warnings(exported)) == 1 and "state sync" in warnings(exported)[0]
    verified = ok(env.run("state", "verify"))
    assert len(warnings(verified)) == 1
    # An export of a past point holds nothing the files hold now: no scan, no warning; an
    # export "at" the head is the current state and warns like a plain one.
    head = all_events(env)[-1].seq
    past = ok(env.run("state", "export", str(env.root / "past.json"), "--at", f"seq:{head - 1}"))
    assert warnings(past) == []
    at_head = ok(env.run("state", "export", str(env.root / "h.json"), "--at", f"seq:{head}"))
    assert len(warnings(at_head)) == 1 and "state sync" in warnings(at_head)[0]
    assert all_events(env) == before  # none of them records anything

    out = json.loads(ok(env.run("state", "sync", "-o", "json")).out)
    assert out["status"] == "ok" and isinstance(out["tx"], int)
    events = out["events"]
    assert {e["tx"] for e in events} == {out["tx"]}
    assert {(e["actor"], e["kind"]) for e in events} == {("filesystem", "sync")}
    got = [(e["component_id"], e["type"]) for e in events]
    assert got == [
        ("fetch", "component.detached"),
        ("weather", "component.attached"),
        ("weather", "policy.changed"),
        ("weather", "secret.keys_set"),
        ("weather", "secret.keys_deleted"),
        ("dropped", "component.attached"),
    ]
    assert events[1]["data"]["wasm_sha256"] == sha(replaced)
    assert events[2]["data"]["policy_content"] == EDITED
    assert events[3]["data"]["keys"] == ["NEW_KEY"]
    assert events[4]["data"]["keys"] == ["TOK"]
    assert events[5]["data"]["wasm_sha256"] == sha(dropped)
    assert {d["component_id"] for d in out["drift"]} == {"weather", "fetch", "dropped"}
    assert all(d["adoptable"] for d in out["drift"])
    # Secret values never enter the log.
    dumped = json.dumps(out)
    assert SECRET_API not in dumped and "new-value-0451" not in dumped

    # Exactly one transaction was appended; nothing before it changed.
    after = all_events(env)
    assert after[: len(before)] == before
    assert {e.tx_id for e in after[len(before) :]} == {out["tx"]}

    # The state now says what the files say.
    now = state(env)
    assert sorted(now.components) == ["dropped", "weather"]
    weather = now.components["weather"]
    assert weather.wasm_sha256 == sha(replaced)
    assert weather.metadata["tool_names"] == ["foo_foo_foo_generate"]
    assert weather.policy.policy_content == EDITED
    assert weather.secret_keys == ("API", "NEW_KEY")
    assert now.components["dropped"].wasm_sha256 == sha(dropped)
    # ... and the files were materialized from it; the wasm bytes are kept as blobs.
    assert (cdir / "dropped.metadata.json").is_file()
    assert not (cdir / "fetch.metadata.json").exists()
    meta = json.loads((cdir / "weather.metadata.json").read_text())
    assert meta["tool_names"] == ["foo_foo_foo_generate"]
    assert (cdir / "weather.wasm").read_bytes() == replaced
    assert (cdir / "weather.policy.yaml").read_text() == EDITED

    # A second sync records nothing, and export is quiet again.
    again = ok(env.run("state", "sync"))
    assert "no drift" in again.out
    assert all_events(env) == after
    quiet = ok(env.run("state", "export", "-"))
    assert warnings(quiet) == []

    # Blame shows the filesystem as the author of what it changed.
    with opened(env) as s:
        by_aspect = {e["aspect"]: e for e in blame(s, "weather")}
    assert by_aspect["wasm"]["actor"] == "filesystem"
    assert by_aspect["policy"]["actor"] == "filesystem"
    assert by_aspect["secret:NEW_KEY"]["actor"] == "filesystem"
    assert by_aspect["secret:API"]["actor"] == "tester@test"

    # The sync is an ordinary transaction: undoing it restores the original bytes.
    ok(env.run("state", "undo", "--yes"))
    assert (cdir / "weather.wasm").read_bytes() == original["weather"]
    assert (cdir / "fetch.wasm").read_bytes() == original["fetch"]
    assert not (cdir / "dropped.wasm").exists()


def test_no_drift_no_transaction_no_warning(env: Env) -> None:
    build(env)
    before = all_events(env)
    out = ok(env.run("state", "sync"))
    assert out.out.strip() == "no drift: the files match the state"
    assert all_events(env) == before
    assert warnings(ok(env.run("state", "verify"))) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("wasm-replaced", [("component.attached", "weather")]),
        ("policy-edited", [("policy.changed", "weather")]),
        ("policy-added", [("policy.attached", "fetch")]),
        ("policy-deleted", [("policy.detached", "weather")]),
        ("wasm-deleted", [("component.detached", "fetch")]),
        # No events about a component after it leaves: its keys go with it.
        ("wasm-deleted-keys-edited", [("component.detached", "weather")]),
        ("component-dropped-in", [("component.attached", "dropped")]),
    ],
)
def test_each_kind_of_drift(env: Env, change: str, expected: list[tuple[str, str]]) -> None:
    """Library-level (`store.drift.sync`), one outside change at a time."""
    build(env)
    cdir = env.component_dir
    if change == "wasm-replaced":
        fx.write_component(cdir / "weather.wasm", kind="documented")
    elif change == "policy-edited":
        (cdir / "weather.policy.yaml").write_text(EDITED)
    elif change == "policy-added":
        (cdir / "fetch.policy.yaml").write_text(EDITED)
    elif change == "policy-deleted":
        (cdir / "weather.policy.yaml").unlink()
    elif change == "wasm-deleted":
        (cdir / "fetch.wasm").unlink()
    elif change == "wasm-deleted-keys-edited":
        (cdir / "weather.wasm").unlink()
        path = secret_files.secrets_file(env.secrets_dir, "weather")
        path.write_text(yaml.safe_dump({"API": SECRET_API, "ADDED": "x"}))
    else:
        fx.write_component(cdir / "dropped.wasm", kind="top-level")
    before = all_events(env)
    with opened(env) as s:
        assert drift.find(s).drifts  # export/verify would warn
        outcome, drifts = drift.sync(s)
        if change == "wasm-deleted-keys-edited":  # its values go with it (not by hand)
            gone = "its secrets file goes with it (--keep-secret-values keeps it)"
            assert drifts[-1] == drift_scan.Drift("weather", gone)
            assert not secret_files.secrets_file(env.secrets_dir, "weather").exists()
            drifts = drifts[:-1]
        assert len(drifts) == len(expected) and all(d.adoptable for d in drifts)
        assert [(e.type, e.component_id) for e in outcome.events] == expected
        assert {e.actor for e in outcome.events} == {drift.SYNC_ACTOR}
        assert {e.kind for e in outcome.events} == {"sync"}
        assert len({e.tx_id for e in outcome.events}) == 1
        assert drift.find(s).drifts == []
        again, _ = drift.sync(s)
        assert again.tx_id is None and again.events == []
    assert all_events(env)[: len(before)] == before


def test_invalid_outside_changes_are_reported_not_adopted(env: Env) -> None:
    build(env)
    cdir = env.component_dir
    fx.write_component(cdir / "weather.wasm", kind="invalid")
    (cdir / "fetch.policy.yaml").write_text('version: "2.0"\npermissions: {}\n')
    fx.write_component(cdir / "junk.wasm", kind="core-module")
    before = all_events(env)

    out = ok(env.run("state", "sync"))
    lines = out.out.splitlines()
    assert sum(ln.endswith("(not adopted)") for ln in lines) == 3, out.out
    assert all_events(env) == before
    exported = ok(env.run("state", "export", "-"))
    assert len(warnings(exported)) == 1
    assert json.loads(exported.out)["components"][1]["component_id"] == "weather"


def test_keys_waiting_for_values_are_not_drift(env: Env) -> None:
    build(env)
    with opened(env) as s:
        secret_commands.secret_delete(s, "weather", ["TOK"])
        outcome = rollback(s, "tx:2")  # TOK is declared again, its value is gone
        assert outcome.state.components["weather"].secret_keys == ("API", "TOK")
        assert drift.find(s).drifts == []


def test_a_deleted_secrets_file_after_secret_set_means_keys_removed(env: Env) -> None:
    """The last secret change wrote the values (`secret set`), so a missing file was deleted:
    Wassette deletes it with its last key. One sync records that."""
    build(env)
    secret_files.secrets_file(env.secrets_dir, "weather").unlink()
    with opened(env) as s:
        outcome, drifts = drift.sync(s)
    assert [d.what for d in drifts] == ["secret keys removed by hand: API, TOK"]
    [event] = outcome.events
    assert (event.type, event.data["keys"]) == ("secret.keys_deleted", ["API", "TOK"])
    listed = json.loads(ok(env.run("secret", "list", "weather", "-o", "json")).out)
    assert listed["secrets"] == []


def test_a_missing_secrets_file_after_import_means_values_are_missing(env: Env) -> None:
    """Keys declared by an import (no values travel) have no file yet: nothing was removed,
    the keys stay declared and `secret list` flags the missing values."""
    build(env)
    ok(env.run("state", "export", str(env.root / "snap.json")))
    other = Env(env.root / "other")
    other.root.mkdir()
    ok(other.run("state", "import", str(env.root / "snap.json")))
    before = all_events(other)
    with opened(other) as s:
        assert drift.find(s).drifts == []
    assert all_events(other) == before
    listed = json.loads(ok(other.run("secret", "list", "weather", "-o", "json")).out)
    assert {e["key"]: e["has_value"] for e in listed["secrets"]} == {"API": False, "TOK": False}
