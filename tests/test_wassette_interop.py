"""Both tools on one set of dirs: what the real Wassette 0.8.0 runs, writes and changes.

Wassette serves the components; this project records, restores and audits them. These tests run
the real binary (the `wassette` fixture) on the Env's own component and secrets dirs.
"""

from __future__ import annotations

import difflib
import json
import shutil
from typing import Any

import pytest
import wasmtime

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, cli_history, ok

POLICIES = sorted((CONFORMANCE / "policies" / "valid").glob("*.yaml"))


def answering_component(**functions: int) -> bytes:
    """A component whose top-level functions return constants, so a call shows which bytes
    Wassette really runs (the fixtures' functions only trap)."""
    core = "".join(
        f'(func (export "{n}") (result i32) i32.const {v})' for n, v in functions.items()
    )
    lifts = "".join(
        f'(func ${n} (result u32) (canon lift (core func $i "{n}"))) (export "{n}" (func ${n}))'
        for n in functions
    )
    wat = f"(component (core module $m {core}) (core instance $i (instantiate $m)) {lifts})"
    return bytes(wasmtime.wat2wasm(wat))


def invoke(wassette: Any, tool: str) -> Any:
    res = wassette.run("tool", "invoke", tool, "--args", "{}")
    return res


def answer(wassette: Any, tool: str) -> int:
    res = wassette.ok("tool", "invoke", tool, "--args", "{}")
    return int(json.loads(res.out))


# ------------------------------------------------------------------ <id>.cwasm


def test_new_bytes_under_an_id_are_what_wassette_runs(env: Env, wassette: Any) -> None:
    src = env.root / "app.wasm"
    src.write_bytes(answering_component(answer=41))
    ok(env.run("component", "attach", str(src)))
    assert answer(wassette, "answer") == 41
    cwasm = env.component_dir / "app.cwasm"
    assert cwasm.exists()  # Wassette precompiled the first bytes

    src.write_bytes(answering_component(answer=42, fresh=7))
    ok(env.run("component", "attach", str(src)))
    # Only the new bytes export `fresh`: Wassette runs them, not its stale precompiled code.
    assert answer(wassette, "fresh") == 7
    assert answer(wassette, "answer") == 42


def test_rollback_and_detach_take_the_precompiled_code_with_them(env: Env, wassette: Any) -> None:
    src = env.root / "app.wasm"
    src.write_bytes(answering_component(answer=41))
    ok(env.run("component", "attach", str(src)))
    ok(env.run("state", "tag", "v1"))
    src.write_bytes(answering_component(answer=42, fresh=7))
    ok(env.run("component", "attach", str(src)))
    assert answer(wassette, "fresh") == 7  # compiles and caches v2

    ok(env.run("state", "rollback", "--to", "tag:v1", "--yes"))
    assert answer(wassette, "answer") == 41
    assert invoke(wassette, "fresh").code != 0

    assert (env.component_dir / "app.cwasm").exists()
    ok(env.run("component", "detach", "app"))
    assert sorted(p.name for p in env.component_dir.iterdir() if p.name.startswith("app")) == []
    assert [c["id"] for c in wassette.json("component", "list")["components"]] == []


def test_import_of_other_bytes_removes_the_precompiled_code(
    env_factory: Any, wassette: Any
) -> None:
    # `wassette` runs on the first Env ("site"); the snapshot comes from another store.
    site: Env = wassette.env
    other: Env = env_factory("other")
    src = site.root / "app.wasm"
    src.write_bytes(answering_component(answer=41))
    ok(site.run("component", "attach", str(src)))
    assert answer(wassette, "answer") == 41

    src2 = other.root / "app.wasm"
    src2.write_bytes(answering_component(answer=42, fresh=7))
    ok(other.run("component", "attach", str(src2)))
    ok(other.run("state", "export", str(other.root / "snap.json")))
    ok(site.run("state", "import", str(other.root / "snap.json")))
    assert answer(wassette, "fresh") == 7


def test_bytes_replaced_by_hand_are_what_wassette_runs_after_sync(env: Env, wassette: Any) -> None:
    src = env.root / "app.wasm"
    src.write_bytes(answering_component(answer=41))
    ok(env.run("component", "attach", str(src)))
    assert answer(wassette, "answer") == 41  # precompiled into app.cwasm
    (env.component_dir / "app.wasm").write_bytes(answering_component(answer=42, fresh=7))
    res = json.loads(ok(env.run("state", "sync", "-o", "json")).out)
    assert [e["type"] for e in res["events"]] == ["component.attached"]
    assert answer(wassette, "fresh") == 7


def test_ids_wassette_accepts_are_ours_too(env: Env, wassette: Any) -> None:
    for cid in ("Weird+Name@1", "with space", "ünï_cödé"):
        src = env.root / f"{cid}.wasm"
        fx.write_component(src, "simple")
        ok(env.run("component", "attach", str(src)))
    listed = {c["id"] for c in wassette.json("component", "list")["components"]}
    assert listed == {"Weird+Name@1", "with space", "ünï_cödé"}


# ------------------------------------------------------------------ metadata: adopt, don't fight


@pytest.mark.parametrize("kind", ["weather", "resources"])
def test_wassette_metadata_is_never_rewritten_just_to_change_bytes(
    env: Env, wassette: Any, kind: str
) -> None:
    # `resources`: Wassette writes a memory address into resource descriptions, different on
    # every run; that difference is no reason to rewrite its file either.
    fx.write_component(env.root / "fetch.wasm", kind)
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    wassette.run("policy", "get", "fetch")  # Wassette loads the component, rewrites its metadata
    meta = env.component_dir / "fetch.metadata.json"
    written_by_wassette = meta.read_bytes()
    assert json.loads(written_by_wassette)["validation_stamp"]["content_hash"] is None

    ok(env.run("permission", "grant", "network", "fetch", "api.example.com"))
    ok(env.run("state", "sync"))
    ok(env.run("state", "verify"))
    assert meta.read_bytes() == written_by_wassette
    assert cli_history(env, "--type", "component.")[-1]["tx"] == 1  # nothing re-recorded


def test_sync_adopts_wassette_metadata_instead_of_introspecting(env: Env, wassette: Any) -> None:
    from wassette_state.store.files import wasm
    from wassette_state.store.usecases import drift

    src = env.root / "tools.wasm"
    fx.write_component(src, "all-types")
    wassette.ok("component", "load", src.as_uri())
    meta = env.component_dir / "tools.metadata.json"
    before = meta.read_bytes()

    wasm._clear_cache()
    runs = wasm._introspect_count
    store: Any = env.store()
    try:
        outcome, drifts = drift.sync(store)
    finally:
        store.close()
    assert wasm._introspect_count == runs, (
        "the wasm was introspected although Wassette's file vouched"
    )
    assert [d.what for d in drifts] == ["component added by hand"]
    [attached] = [e for e in outcome.events if e.type == "component.attached"]
    theirs = json.loads(before)
    for field in ("tool_schemas", "function_identifiers", "tool_names"):
        assert attached.data["metadata"][field] == theirs[field]
    assert meta.read_bytes() == before  # adopted, not rewritten


def test_attach_adopts_the_metadata_wassette_wrote_for_the_same_bytes(
    env: Env, wassette: Any
) -> None:
    from wassette_state.store.files import wasm
    from wassette_state.store.usecases import commands

    src = env.root / "tools.wasm"
    fx.write_component(src, "all-types-interface")
    wassette.ok("component", "load", src.as_uri())
    wasm._clear_cache()
    runs = wasm._introspect_count
    store: Any = env.store()
    try:
        commands.attach(store, str(env.component_dir / "tools.wasm"))
    finally:
        store.close()
    assert wasm._introspect_count == runs


# ------------------------------------------------------------------ one sync adopts everything


def _setup_for_sync(env: Env) -> None:
    for cid, kind in (("keep", "simple"), ("pol", "weather"), ("sec", "interface")):
        fx.write_component(env.root / f"{cid}.wasm", kind)
        ok(env.run("component", "attach", str(env.root / f"{cid}.wasm")))
    ok(env.run("policy", "attach", "pol", str(POLICIES[0])))
    ok(env.run("secret", "set", "sec", "--stdin", input="ONLY=value-1\n"))


def test_one_sync_adopts_everything_wassette_did(env: Env, wassette: Any) -> None:
    _setup_for_sync(env)
    head = cli_history(env)[-1]["seq"]
    new = env.root / "new.wasm"
    fx.write_component(new, "mixed")
    wassette.ok("component", "load", new.as_uri())
    wassette.ok("secret", "set", "new", "TOKEN=t-1")
    wassette.ok("permission", "grant", "network", "keep", "api.example.com")
    wassette.ok("permission", "reset", "pol")
    wassette.ok("secret", "delete", "sec", "ONLY")  # its last key: Wassette deletes the file
    weird = env.root / "Weird+Name@1.wasm"
    fx.write_component(weird, "simple")
    wassette.ok("component", "load", f"file://{weird}")  # Wassette does not percent-decode
    shutil.copy(weird, env.component_dir / "-dash.wasm")  # a name we refuse, put by hand

    res = ok(env.run("state", "sync", "-o", "json"))
    doc = json.loads(res.out)
    rows = [e for e in cli_history(env) if e["seq"] > head]
    assert {e["tx"] for e in rows} == {doc["tx"]}, "one transaction"
    got = sorted((e["type"], e["component_id"]) for e in rows)
    assert got == sorted(
        [
            ("component.attached", "new"),
            ("secret.keys_set", "new"),
            ("policy.attached", "keep"),  # Wassette's grant created it
            ("policy.detached", "pol"),
            ("secret.keys_deleted", "sec"),
            ("component.attached", "Weird+Name@1"),
        ]
    )
    refused = [d for d in doc["drift"] if not d["adoptable"]]
    assert [d["component_id"] for d in refused] == ["-dash"]
    assert "-dash" in res.out

    # Everything adopted: a second sync finds only the refused file again.
    again = json.loads(ok(env.run("state", "sync", "-o", "json")).out)
    assert again["tx"] is None
    assert [d["component_id"] for d in again["drift"]] == ["-dash"]
    # And Wassette still serves what the state now says.
    listed = {c["id"] for c in wassette.json("component", "list")["components"]}
    assert {"keep", "pol", "sec", "new", "Weird+Name@1"} <= listed


# ------------------------------------------------------------------ policies, as Wassette writes


def test_our_grant_writes_what_wassettes_grant_writes(env_factory: Any, wassette: Any) -> None:
    """For every conformance policy: the same grant made by each tool, byte-identical files."""
    from wassette_state.store.usecases import commands

    ours: Env = env_factory("ours")
    src = ours.root / "c.wasm"
    fx.write_component(src, "simple")
    theirs_dir = wassette.env.component_dir
    theirs_dir.mkdir(parents=True, exist_ok=True)
    store: Any = ours.store()
    try:
        for i, policy in enumerate(POLICIES):
            cid = f"c{i}"
            commands.attach(store, str(src), cid, str(policy))
            commands.permission(store, "grant", cid, "network", "new.example.com")
            shutil.copy(src, theirs_dir / f"{cid}.wasm")
            shutil.copy(policy, theirs_dir / f"{cid}.policy.yaml")
            wassette.ok("permission", "grant", "network", cid, "new.example.com")
    finally:
        store.close()
    differ = [
        policy.name
        for i, policy in enumerate(POLICIES)
        if (ours.component_dir / f"c{i}.policy.yaml").read_bytes()
        != (theirs_dir / f"c{i}.policy.yaml").read_bytes()
    ]
    assert differ == [], differ
    assert len(POLICIES) == 20


def test_a_wassette_grant_on_our_policy_changes_only_the_grant(env: Env, wassette: Any) -> None:
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    ok(env.run("permission", "grant", "storage", "c", "fs:///data", "--access", "read"))
    ok(env.run("permission", "grant", "memory", "c", "512Mi"))
    path = env.component_dir / "c.policy.yaml"
    before = path.read_text().splitlines()
    wassette.ok("permission", "grant", "network", "c", "api.example.com")
    after = path.read_text().splitlines()
    diff = [d for d in difflib.ndiff(before, after) if d[0] in "+-"]
    assert diff == [
        "-   network: null",
        "+   network:",
        "+     allow:",
        "+     - host: api.example.com",
        "+     deny: null",
    ], diff
    res = json.loads(ok(env.run("state", "sync", "-o", "json")).out)
    [event] = res["events"]
    assert event["type"] == "policy.changed"
    change = event["data"]["change"]
    assert (change["added"], change["removed"]) == (["allow network host=api.example.com"], [])
    [row] = [r for r in ok(env.run("history", "--type", "policy.")).out.splitlines() if "sync" in r]
    assert row.endswith("sync +allow network host=api.example.com"), row


def test_a_grant_that_creates_a_policy_leaves_the_files_wassettes_leaves(
    env_factory: Any, wassette: Any
) -> None:
    ours: Env = env_factory("ours")
    for site in (wassette.env, ours):
        fx.write_component(site.root / "c.wasm", "simple")
        ok(site.run("component", "attach", str(site.root / "c.wasm")))
    wassette.ok("permission", "grant", "network", "c", "api.example.com")
    ok(ours.run("permission", "grant", "network", "c", "api.example.com"))

    def policy_files(site: Env) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in site.component_dir.glob("c.policy*")}

    assert policy_files(ours) == policy_files(wassette.env)  # no meta file from either
    assert list(policy_files(ours)) == ["c.policy.yaml"]


def test_reset_through_wassette_and_through_us_end_the_same(
    env_factory: Any, wassette: Any
) -> None:
    ours: Env = env_factory("ours")
    for site in (wassette.env, ours):
        fx.write_component(site.root / "c.wasm", "simple")
        ok(site.run("component", "attach", str(site.root / "c.wasm")))
        ok(site.run("policy", "attach", "c", str(POLICIES[0])))
    wassette.ok("permission", "reset", "c")
    ok(ours.run("permission", "reset", "c"))
    for site in (wassette.env, ours):
        names = sorted(p.name for p in site.component_dir.iterdir() if "policy" in p.name)
        assert names == []
    ok(wassette.env.run("state", "sync"))
    [event] = cli_history(wassette.env, "--type", "policy.detached")
    assert event["actor"] == "filesystem"


# ------------------------------------------------------------------ races with Wassette's writes


def test_a_wassette_grant_is_recorded_before_our_change_overwrites_the_file(
    env: Env, wassette: Any
) -> None:
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    ok(env.run("permission", "grant", "network", "c", "ours.example.com"))
    wassette.ok("permission", "grant", "network", "c", "theirs.example.com")  # not synced
    ok(env.run("permission", "grant", "storage", "c", "fs:///data", "--access", "read"))

    rows = cli_history(env, "--type", "policy.")
    assert [(r["actor"], r["kind"]) for r in rows[-2:]] == [
        ("filesystem", "sync"),
        ("tester@test", "change"),
    ]
    assert rows[-2]["data"]["change"]["added"] == ["allow network host=theirs.example.com"]
    text = (env.component_dir / "c.policy.yaml").read_text()
    for rule in ("ours.example.com", "theirs.example.com", "fs:///data"):
        assert rule in text, text
    # and a rollback to before Wassette's grant takes exactly that grant away
    ok(env.run("rollback", "--to", f"seq:{rows[-2]['seq'] - 1}", "--yes"))
    text = (env.component_dir / "c.policy.yaml").read_text()
    assert "ours.example.com" in text and "theirs.example.com" not in text


def test_detach_after_wassette_changed_the_files_records_the_change_first(
    env: Env, wassette: Any
) -> None:
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    wassette.ok("permission", "grant", "network", "c", "theirs.example.com")
    ok(env.run("component", "detach", "c"))
    kinds = [(r["kind"], r["type"]) for r in cli_history(env)][-2:]
    assert kinds == [("sync", "policy.attached"), ("change", "component.detached")]
