"""`wassette state import` through the installed CLI: one audited `import` transaction with only
the needed events, merge vs `--prune`, `--dry-run`, where a component's wasm comes from (component
dir, blob store, source file, nowhere), `--strict`, idempotence, the secrets-needed summary, and
files written by Wassette itself (conformance files, read in place) and in its YAML style."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, Result, assert_refused, ok, tree_bytes
from wassette_state.cli.main import App
from wassette_state.cli.state import snapshot_doc
from wassette_state.store.domain.snapshot_model import format_for
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.files import wasm
from wassette_state.store.persistence import log
from wassette_state.store.usecases import commands, exporter, secret_commands

POLICY = CONFORMANCE / "policies" / "valid" / "example-get-weather-js.yaml"
WRITTEN = CONFORMANCE / "state" / "wassette-written.json"
DOCS_EXAMPLE = CONFORMANCE / "state" / "wassette-docs-example.yaml"
FIXTURE_YAML = Path(__file__).resolve().parent / "fixtures" / "import" / "wassette-0.3.4.yaml"
SECRET = "imp0rt-s3cr3t-value-never-shown"
LOCAL_KEYS = ("exported_at", "as_of", "store", "paths")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wasm_file(env: Env, name: str, kind: str) -> Path:
    path = env.root / "inputs" / f"{name}.wasm"
    path.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(path, kind=kind)
    return path


def lib(env: Env) -> Any:
    return env.store()


def seed(env: Env, *, env_vars: dict[str, str] | None = None) -> None:
    """weather (policy, one secret with a value) and instance env vars, via the library."""
    store = lib(env)
    try:
        commands.attach(store, str(wasm_file(env, "weather", "weather")), policy_file=str(POLICY))
        secret_commands.secret_set(store, "weather", {"API_KEY": SECRET})
        commands.env_set(store, env_vars or {"LOG_LEVEL": "info"})
    finally:
        store.close()


def app(env: Env) -> App:
    return App(
        db=str(env.db),
        component_dir=str(env.component_dir),
        secrets_dir=str(env.secrets_dir),
        actor="tester@test",
    )


def export_doc(env: Env) -> dict[str, Any]:
    """What `state export` writes (the CLI's own code, in-process: export has its own tests)."""
    a = app(env)
    try:
        return snapshot_doc(a, None)
    finally:
        a.close()


def export(env: Env, name: str = "state.json") -> Path:
    target = env.root / name
    exporter.write_output(str(target), exporter.render(export_doc(env), format_for(name)))
    return target


def import_json(env: Env, source: Path | str, *flags: str) -> tuple[dict[str, Any], Result]:
    res = ok(env.run("state", "import", str(source), *flags, "-o", "json"))
    out: dict[str, Any] = json.loads(res.out)
    return out, res


def without(doc: dict[str, Any], keys: tuple[str, ...] = LOCAL_KEYS) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def head(env: Env) -> int:
    store = lib(env)
    try:
        return store.head_seq()  # type: ignore[no-any-return]
    finally:
        store.close()


def state_of(env: Env) -> Any:
    store = lib(env)
    try:
        return store.state()
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------


def test_import_is_one_import_transaction_with_file_details(env_factory: Any) -> None:
    a, b = env_factory("a"), env_factory("b")
    seed(a)
    source = export(a)
    raw = source.read_bytes()
    a_doc = json.loads(raw)
    assert SECRET.encode() not in raw

    out, res = import_json(b, source)
    assert SECRET not in res.text
    tx = out["tx"]
    assert isinstance(tx, int) and out["status"] == "ok" and out["dry_run"] is False
    events = out["events"]
    assert {e["tx"] for e in events} == {tx} and {e["kind"] for e in events} == {"import"}
    assert sorted(e["type"] for e in events) == sorted(
        ["paths.set", "component.attached", "policy.attached", "secret.keys_set", "env.set"]
    )
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert out["skipped"] == []
    assert out["secrets_needed"] == [
        {
            "component_id": "weather",
            "keys": ["API_KEY"],
            "command": out["secrets_needed"][0]["command"],
            "stdin": "API_KEY=…\n",
        }
    ]
    assert out["secrets_needed"][0]["command"].endswith("secret set weather --stdin")

    # The audit log shows exactly that transaction; its details name the file and its origin.
    hist = json.loads(ok(b.run("state", "history", "--tx", str(tx), "-o", "json")).out)
    assert [(e["seq"], e["type"], e["data"]) for e in hist] == [
        (e["seq"], e["type"], e["data"]) for e in events
    ]
    store = lib(b)
    try:
        with store.reading() as conn:
            row = log.transaction(conn, tx)
    finally:
        store.close()
    assert row is not None and row["kind"] == "import"
    details = row["details"]
    assert details["file_sha256"] == sha(raw)
    assert details["version"] == a_doc["version"]
    assert details["exported_at"] == a_doc["exported_at"]
    assert details["source_lineage"] == a_doc["store"]["lineage"]
    assert details["source_serial"] == a_doc["store"]["serial"] == a_doc["as_of"]["seq"]
    assert details["source_lineage"] != export_doc(b)["store"]["lineage"]

    # The same file again: nothing appended, nothing written, the secrets hint still shown.
    before = tree_bytes(b.root)
    again = ok(b.run("state", "import", str(source)))
    assert "nothing to change" in again.out
    assert "secret set weather --stdin" in again.out and "API_KEY=…" in again.out
    assert tree_bytes(b.root) == before
    assert head(b) == len(events)


def test_merge_by_default_prune_for_exact_restore_and_dry_run_writes_nothing(
    env_factory: Any,
) -> None:
    a, b = env_factory("a"), env_factory("b")
    seed(a, env_vars={"LOG_LEVEL": "info", "SHARED": "from-a"})
    source = export(a)
    a_doc = json.loads(source.read_bytes())
    store = lib(b)
    try:
        commands.attach(store, str(wasm_file(b, "local", "simple")))
        commands.env_set(store, {"LOCAL": "1", "SHARED": "from-b"})
    finally:
        store.close()

    before = tree_bytes(b.root)
    plan, _ = import_json(b, source, "--prune", "--dry-run")
    assert plan["tx"] is None and plan["events"] == [] and plan["dry_run"] is True
    assert "detach local" in plan["plan"] and "unset env LOCAL" in plan["plan"]
    assert "set env SHARED" in plan["plan"]
    assert any(p.startswith("attach weather") for p in plan["plan"])
    # The summary is about the state the import would make: weather's key would need a value.
    assert [(n["component_id"], n["keys"]) for n in plan["secrets_needed"]] == [
        ("weather", ["API_KEY"])
    ]
    assert tree_bytes(b.root) == before  # not even the wasm copied into the blob store
    text = ok(b.run("state", "import", str(source), "--dry-run"))
    assert "dry run" in text.out and "detach local" not in text.out  # merge: nothing detached
    assert tree_bytes(b.root) == before

    merged, _ = import_json(b, source)
    st = state_of(b)
    assert sorted(st.components) == ["local", "weather"]
    assert st.environment == {"LOCAL": "1", "LOG_LEVEL": "info", "SHARED": "from-a"}
    assert merged["plan"] and "detach local" not in merged["plan"]

    pruned, _ = import_json(b, source, "--prune", "--yes")
    assert [e["type"] for e in pruned["events"]] == ["component.detached", "env.unset"]
    assert not any(p.name.startswith("local.") for p in b.component_dir.iterdir())
    b_doc = export_doc(b)
    assert without(b_doc) == without(a_doc)  # an exact restore
    assert b_doc["paths"]["component_dir"] == str(b.component_dir)  # local paths stay


def test_missing_wasm_is_restored_from_the_blob_store(env: Env) -> None:
    seed(env)
    source = export(env)
    digest = json.loads(source.read_bytes())["components"][0]["wasm_sha256"]
    store = lib(env)
    try:
        commands.detach(store, "weather", keep_secret_values=True)
    finally:
        store.close()
    (env.root / "inputs" / "weather.wasm").unlink()
    assert not (env.component_dir / "weather.wasm").exists()

    out, _ = import_json(env, source)
    assert out["reports"] == [
        {"component_id": "weather", "note": "wasm restored from the blob store"}
    ]
    assert out["skipped"] == []
    assert sha((env.component_dir / "weather.wasm").read_bytes()) == digest
    # The secret value stayed on disk through the detach (asked to): nothing is needed.
    assert out["secrets_needed"] == []
    assert without(export_doc(env)) == without(json.loads(source.read_bytes()))


def test_restoring_a_backup_brings_back_the_older_wasm(env: Env) -> None:
    """The component dir holds a newer version than the backup: the backup's bytes are in the
    blob store, so the import restores them (not adopts the newer file under the old name)."""
    seed(env)
    source = export(env)
    backup = json.loads(source.read_bytes())
    store = lib(env)
    try:
        commands.attach(store, str(wasm_file(env, "newer", "simple")), "weather")
    finally:
        store.close()
    assert state_of(env).components["weather"].wasm_sha256 != backup["components"][0]["wasm_sha256"]

    out, _ = import_json(env, source)
    assert [e["type"] for e in out["events"]] == ["component.attached"]
    (report,) = out["reports"]
    assert "replaced" in report["note"]
    comp = state_of(env).components["weather"]
    assert comp.wasm_sha256 == backup["components"][0]["wasm_sha256"]
    assert sha((env.component_dir / "weather.wasm").read_bytes()) == comp.wasm_sha256
    assert without(export_doc(env)) == without(backup)


def test_missing_wasm_is_skipped_with_a_warning_or_fails_with_strict(env_factory: Any) -> None:
    a, b = env_factory("a"), env_factory("b")
    store = lib(a)
    try:
        commands.attach(store, str(wasm_file(a, "alpha", "simple")))
        commands.attach(store, str(wasm_file(a, "omega", "weather")))
        secret_commands.secret_set(store, "omega", {"TOKEN": SECRET})
    finally:
        store.close()
    source = export(a)
    (a.root / "inputs" / "omega.wasm").unlink()  # its bytes now exist only in A's stores
    seed_b = lib(b)
    try:
        commands.env_set(seed_b, {"B_ONLY": "1"})
    finally:
        seed_b.close()

    before = tree_bytes(b.root)
    res = b.run("state", "import", str(source), "--strict")
    assert_refused(b, res, 2, "'omega'")
    assert "--strict" in res.err
    # Not even alpha's wasm (found before omega was refused) went into the blob store.
    assert tree_bytes(b.root) == before

    out, res = import_json(b, source)
    assert out["skipped"] == [
        {
            "component_id": "omega",
            "reason": "wasm not found in the component dir or the blob store",
        }
    ]
    warnings = [ln for ln in res.err.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "omega" in warnings[0]
    assert sorted(state_of(b).components) == ["alpha"]
    assert (b.component_dir / "alpha.wasm").is_file()
    assert not (b.component_dir / "omega.wasm").exists()
    assert out["secrets_needed"] == []


def test_present_wasm_with_another_hash_is_reintrospected_and_reported(
    env_factory: Any,
) -> None:
    a, b = env_factory("a"), env_factory("b")
    seed(a)
    source = export(a)
    (a.root / "inputs" / "weather.wasm").unlink()
    b.component_dir.mkdir()
    local = fx.write_component(b.component_dir / "weather.wasm", kind="simple")

    out, _ = import_json(b, source)
    assert out["reports"] == [
        {
            "component_id": "weather",
            "note": "wasm in the component dir differs from the file: re-introspected",
        }
    ]
    comp = state_of(b).components["weather"]
    assert comp.wasm_sha256 == sha(local)
    assert comp.metadata["tool_names"] == wasm.describe(local).tool_names
    assert comp.metadata["validation_stamp"]["content_hash"] == sha(local)
    assert comp.source_uri == (b.component_dir / "weather.wasm").as_uri()
    assert comp.policy is not None and comp.policy.policy_content == POLICY.read_text()
    assert comp.secret_keys == ("API_KEY",)
    again, _ = import_json(b, source)
    assert again["tx"] is None and again["events"] == []


def test_wassette_written_file_without_wasm_skips_both(env: Env) -> None:
    store = lib(env)
    try:
        commands.env_set(store, {"X": "1"})
    finally:
        store.close()
    before = tree_bytes(env.root)
    out, res = import_json(env, WRITTEN)
    assert [s["component_id"] for s in out["skipped"]] == ["fetch_rs", "get-weather-js"]
    warnings = [ln for ln in res.err.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 2
    assert "fetch_rs" in warnings[0] and "get-weather-js" in warnings[1]
    assert out["tx"] is None and out["events"] == []
    assert tree_bytes(env.root) == before
    res = env.run("state", "import", str(WRITTEN), "--strict")
    assert_refused(env, res, 2, "fetch_rs")
    assert tree_bytes(env.root) == before


def test_wassette_written_file_with_components_placed_first(env: Env) -> None:
    env.component_dir.mkdir()
    fetch = fx.write_component(env.component_dir / "fetch_rs.wasm", kind="simple")
    weather = fx.write_component(env.component_dir / "get-weather-js.wasm", kind="weather")
    theirs = json.loads(WRITTEN.read_text())

    out, res = import_json(env, WRITTEN)
    assert out["skipped"] == [] and "Warning" not in res.err
    assert sorted(r["component_id"] for r in out["reports"]) == ["fetch_rs", "get-weather-js"]
    assert all("re-introspected" in r["note"] for r in out["reports"])
    st = state_of(env)
    assert sorted(st.components) == ["fetch_rs", "get-weather-js"]
    assert st.components["fetch_rs"].wasm_sha256 == sha(fetch)
    assert st.components["get-weather-js"].wasm_sha256 == sha(weather)
    assert st.components["fetch_rs"].policy is None
    assert st.components["fetch_rs"].secret_keys == ()
    gw = st.components["get-weather-js"]
    policy = theirs["components"][1]["policy"]
    assert gw.policy is not None
    assert (gw.policy.policy_content, gw.policy.source_uri, gw.policy.attached_at) == (
        policy["policy_content"],
        policy["source_uri"],
        policy["attached_at"],
    )
    assert gw.secret_keys == ("OPENWEATHER_API_KEY",)
    assert gw.metadata["tool_names"] == wasm.describe(weather).tool_names
    assert out["secrets_needed"] == [
        {
            "component_id": "get-weather-js",
            "keys": ["OPENWEATHER_API_KEY"],
            "command": out["secrets_needed"][0]["command"],
            "stdin": "OPENWEATHER_API_KEY=…\n",
        }
    ]
    # Wassette's layout is materialized next to the wasm files it was given.
    assert (env.component_dir / "get-weather-js.policy.yaml").read_text() == policy[
        "policy_content"
    ]
    again, _ = import_json(env, WRITTEN)
    assert again["tx"] is None and again["events"] == []


def test_wassette_docs_example_with_placeholders_is_skipped_not_a_crash(env: Env) -> None:
    out, res = import_json(env, DOCS_EXAMPLE)
    (skipped,) = out["skipped"]
    assert skipped["component_id"] == "example-component"
    assert "placeholder" in skipped["reason"]
    assert "components[0].policy.policy_content" in skipped["reason"]
    assert [ln for ln in res.err.splitlines() if ln.strip()] == [
        f"Warning: skipped example-component: {skipped['reason']}"
    ]
    assert out["events"] == []
    res = env.run("state", "import", str(DOCS_EXAMPLE), "--strict")
    assert_refused(env, res, 2, "placeholder")


def test_wassette_style_yaml_fixture(env: Env) -> None:
    """Our fixture in Wassette's YAML style: version 0.3.4, nulls, content_hash null, function
    identifiers as objects, no additive fields. Only weather's wasm is at hand."""
    raw = FIXTURE_YAML.read_bytes()
    doc = yaml.safe_load(raw)
    assert doc["version"] == "0.3.4" and "as_of" not in doc and "store" not in doc
    snap = parse_snapshot(raw, "yaml")
    assert all(c.metadata is not None for c in snap.components)
    assert [c.metadata.validation_stamp.content_hash for c in snap.components if c.metadata] == [
        None,
        None,
    ]
    env.component_dir.mkdir()
    weather = fx.write_component(env.component_dir / "weather.wasm", kind="weather")
    copy = env.root / "handed-over.yml"
    shutil.copyfile(FIXTURE_YAML, copy)

    out, res = import_json(env, copy)
    assert [s["component_id"] for s in out["skipped"]] == ["fetch-rs"]
    assert "Warning: skipped fetch-rs" in res.err
    st = state_of(env)
    assert sorted(st.components) == ["weather"]
    assert st.environment == {"LOG_LEVEL": "info", "RUST_LOG": "wassette=debug"}
    comp = st.components["weather"]
    assert comp.wasm_sha256 == sha(weather)
    assert comp.metadata["validation_stamp"]["content_hash"] == sha(weather)
    assert comp.policy is not None and "api.openweathermap.org" in comp.policy.policy_content
    assert comp.secret_keys == ("OPENWEATHER_API_KEY",)
    # Wassette's file's paths are informational.
    assert export_doc(env)["paths"]["component_dir"] == str(env.component_dir)


def test_import_from_stdin(env_factory: Any) -> None:
    a, b = env_factory("a"), env_factory("b")
    seed(a)
    source = export(a, "state.yaml")
    res = ok(b.run("state", "import", "-", "-o", "json", input=source.read_text()))
    out = json.loads(res.out)
    assert out["tx"] == 1 and out["skipped"] == []
    assert sorted(state_of(b).components) == ["weather"]


def test_keys_awaiting_values_after_import_are_not_drift(env_factory: Any) -> None:
    """Regression: declared keys without values (normal after an import) were reported as
    'secret keys removed by hand', and `state sync` then deleted them."""
    a, b = env_factory("a"), env_factory("b")
    seed(a)
    import_json(b, export(a))
    res = ok(b.run("state", "export", "-"))
    assert "Warning" not in res.err, res.err
    synced = json.loads(ok(b.run("state", "sync", "-o", "json")).out)
    assert synced["tx"] is None and synced["drift"] == []
    assert state_of(b).components["weather"].secret_keys == ("API_KEY",)
