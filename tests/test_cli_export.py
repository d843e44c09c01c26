"""`wassette state export` through the installed CLI: every field of Wassette's state file plus
ours, JSON or YAML by extension, `-` for stdout, deterministic bytes, mode 0600 whatever the
umask, exports of the past (`--at seq:/tx:/tag:/time/age`) and the `paths` overrides."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, assert_refused, ok, tree_bytes
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.usecases import commands, secret_commands

POLICY = CONFORMANCE / "policies" / "valid" / "example-get-weather-js.yaml"
SECRET = "exp0rt-s3cr3t-value-never-shown"
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}

TOP_KEYS = {"version", "exported_at", "components", "environment", "paths", "as_of", "store"}
COMPONENT_KEYS = {"component_id", "metadata", "policy", "secrets", "source_uri", "wasm_sha256"}
METADATA_KEYS = {
    "component_id",
    "tool_schemas",
    "function_identifiers",
    "tool_names",
    "validation_stamp",
    "created_at",
}


def wasm(env: Env, name: str, kind: str) -> Path:
    path = env.root / "inputs" / f"{name}.wasm"
    path.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(path, kind=kind)
    return path


def seed(env: Env) -> None:
    """Two components (attached in reverse order), a policy, a secret and env vars."""
    store: Any = env.store()
    try:
        commands.attach(store, str(wasm(env, "zeta", "simple")))
        commands.attach(store, str(wasm(env, "weather", "weather")), policy_file=str(POLICY))
        secret_commands.secret_set(store, "weather", {"API_KEY": SECRET, "B_TOKEN": SECRET + "2"})
        commands.env_set(store, {"ZED": "last", "LOG_LEVEL": "info", "TRAILING": "line\n"})
    finally:
        store.close()


def export_doc(env: Env, *args: str, fmt: str = "json") -> dict[str, Any]:
    res = ok(env.run("state", "export", "-", *args, extra_env=EPOCH))
    doc: dict[str, Any] = json.loads(res.out) if fmt == "json" else yaml.safe_load(res.out)
    return doc


# ---------------------------------------------------------------------------------------------


def test_export_has_every_wassette_field_and_ours(env: Env) -> None:
    seed(env)
    target = env.root / "out" / "state.json"
    target.parent.mkdir()
    res = ok(env.run("state", "export", str(target), extra_env=EPOCH))
    assert res.out == ""
    assert "exported 2 components" in res.err
    raw = target.read_bytes()
    assert SECRET.encode() not in raw
    doc = json.loads(raw)
    assert set(doc) == TOP_KEYS
    assert doc["version"] and isinstance(doc["version"], str)
    assert doc["exported_at"] == 1700000000
    assert [c["component_id"] for c in doc["components"]] == ["weather", "zeta"]
    for comp in doc["components"]:
        assert set(comp) == COMPONENT_KEYS
        assert set(comp["metadata"]) == METADATA_KEYS
        assert set(comp["metadata"]["validation_stamp"]) == {"file_size", "mtime", "content_hash"}
        assert comp["metadata"]["validation_stamp"]["content_hash"] == comp["wasm_sha256"]
        data = (env.root / "inputs" / f"{comp['component_id']}.wasm").read_bytes()
        assert comp["metadata"]["validation_stamp"]["file_size"] == len(data)
        assert comp["source_uri"] == (env.root / "inputs" / f"{comp['component_id']}.wasm").as_uri()
        for fi in comp["metadata"]["function_identifiers"]:
            assert set(fi) == {"package_name", "interface_name", "function_name"}
    weather, zeta = doc["components"]
    assert weather["policy"] == {
        "source_uri": POLICY.as_uri(),
        "policy_content": POLICY.read_text(),
        "attached_at": weather["policy"]["attached_at"],
    }
    assert isinstance(weather["policy"]["attached_at"], int)
    assert weather["secrets"] == {"env_keys": ["API_KEY", "B_TOKEN"]}
    assert zeta["policy"] is None and zeta["secrets"] is None  # Wassette's nulls
    assert list(doc["environment"].items()) == [
        ("LOG_LEVEL", "info"),
        ("TRAILING", "line\n"),
        ("ZED", "last"),
    ]
    assert doc["paths"] == {
        "component_dir": str(env.component_dir),
        "secrets_dir": str(env.secrets_dir),
    }
    assert set(doc["as_of"]) == {"seq", "recorded_at", "tag"}
    assert doc["as_of"]["tag"] is None and doc["as_of"]["recorded_at"].endswith("Z")
    assert doc["store"]["serial"] == doc["as_of"]["seq"] > 0
    # What we write, our own parser accepts.
    parse_snapshot(raw, "json")


def test_export_keeps_every_field_wassette_writes(env: Env) -> None:
    """Wassette's own file (no fields of ours): every key it has, ours has, with the same kind
    of value (null only where Wassette allows null)."""
    seed(env)
    ours = export_doc(env)
    theirs = json.loads((CONFORMANCE / "state" / "wassette-written.json").read_text())

    def same_shape(a: Any, b: Any, where: str) -> None:
        if b is None or a is None:
            return
        assert type(a) is type(b), where
        if isinstance(b, dict) and not where.endswith(("inputSchema", "outputSchema")):
            missing = set(b) - set(a)
            assert not missing or where.endswith("environment"), (where, missing)
            for key in set(a) & set(b):
                same_shape(a[key], b[key], f"{where}.{key}")
        elif isinstance(b, list) and a and b:
            same_shape(a[0], b[0], f"{where}[0]")

    assert set(theirs) <= set(ours)
    same_shape(ours, theirs, "")
    # The component with a policy and secrets, and the one with nulls.
    same_shape(ours["components"][0], theirs["components"][1], "weather")
    same_shape(ours["components"][1], theirs["components"][0], "zeta")


def test_yaml_by_extension_and_stdout_is_json(env: Env) -> None:
    seed(env)
    json_doc = export_doc(env)
    ok(env.run("state", "export", "state.yaml", extra_env=EPOCH))
    raw = (env.root / "state.yaml").read_bytes()
    assert not raw.lstrip().startswith(b"{")
    assert yaml.safe_load(raw) == json_doc
    parse_snapshot(raw, "yaml")
    ok(env.run("state", "export", "plain.txt", extra_env=EPOCH))
    assert json.loads((env.root / "plain.txt").read_bytes()) == json_doc
    out = ok(env.run("state", "export", "-", extra_env=EPOCH))
    assert json.loads(out.out) == json_doc
    assert "exported" not in out.err  # stdout carries the document only


def test_export_is_deterministic_and_honours_source_date_epoch(env: Env) -> None:
    seed(env)
    for name in ("a.json", "b.json", "a.yaml", "b.yaml"):
        ok(env.run("state", "export", name, extra_env=EPOCH))
    assert (env.root / "a.json").read_bytes() == (env.root / "b.json").read_bytes()
    assert (env.root / "a.yaml").read_bytes() == (env.root / "b.yaml").read_bytes()
    other = ok(env.run("state", "export", "-", extra_env={"SOURCE_DATE_EPOCH": "1234"}))
    doc = json.loads(other.out)
    assert doc["exported_at"] == 1234
    doc["exported_at"] = 1700000000
    assert doc == json.loads((env.root / "a.json").read_bytes())


def test_export_file_mode_is_0600_even_under_umask_000(env: Env) -> None:
    seed(env)
    existing = env.root / "existing.json"
    existing.write_text("old")
    existing.chmod(0o666)
    old = os.umask(0)
    try:
        ok(env.run("state", "export", "fresh.yaml"))
        ok(env.run("state", "export", str(existing)))
    finally:
        os.umask(old)
    for path in (env.root / "fresh.yaml", existing):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert json.loads(existing.read_bytes())["components"]
    # No temp files are left beside the target.
    assert sorted(p.name for p in env.root.glob(".*tmp")) == []


def test_export_at_past_points_equals_the_state_then(env: Env) -> None:
    """After every step the live export is kept; later, `--at` that point (as seq:, tx: or a
    time, in turn) gives the same bytes, and a tag gives the same document with the tag named.
    The steps are made through the library (one transaction each) to keep the test fast."""
    steps: list[tuple[int, str, dict[str, Any]]] = []  # (tx, live JSON, doc)
    store: Any = env.store()

    def record(tx: int) -> None:
        live = ok(env.run("state", "export", "-", extra_env=EPOCH)).out
        steps.append((tx, live, json.loads(live)))

    try:
        commands.attach(store, str(wasm(env, "weather", "weather")), policy_file=str(POLICY))
        record(1)
        secret_commands.secret_set(store, "weather", {"API_KEY": SECRET})
        record(2)
        ok(env.run("state", "tag", "with-secret"))
        commands.env_set(store, {"A": "1", "B": "2"})
        commands.policy_detach(store, "weather")
        record(4)
        commands.attach(store, str(wasm(env, "other", "interface")))
        commands.env_unset(store, ["A"])
        commands.detach(store, "weather")
        record(7)
    finally:
        store.close()

    spellings = [
        lambda tx, doc: f"seq:{doc['as_of']['seq']}",
        lambda tx, doc: f"tx:{tx}",
        lambda tx, doc: doc["as_of"]["recorded_at"],
    ]
    for i, (tx, live, doc) in enumerate(steps):
        when = spellings[i % 3](tx, doc)
        past = ok(env.run("state", "export", "-", "--at", when, extra_env=EPOCH)).out
        assert past == live, when
    # The states really differ, so --at is not ignored.
    assert steps[0][2]["components"][0]["secrets"] is None
    assert steps[1][2]["components"][0]["secrets"] == {"env_keys": ["API_KEY"]}
    assert steps[2][2]["components"][0]["policy"] is None
    assert [c["component_id"] for c in steps[3][2]["components"]] == ["other"]
    assert steps[3][2]["environment"] == {"B": "2"}
    # A tag names its point in as_of; the rest is the state then. YAML is the same document.
    ok(env.run("state", "export", "past.yaml", "--at", "tag:with-secret", extra_env=EPOCH))
    tagged = yaml.safe_load((env.root / "past.yaml").read_bytes())
    assert tagged["as_of"] == {**steps[1][2]["as_of"], "tag": "with-secret"}
    assert {**tagged, "as_of": steps[1][2]["as_of"]} == steps[1][2]
    # Before anything happened: an empty state.
    empty = export_doc(env, "--at", "3d")
    assert empty["components"] == [] and empty["environment"] == {}
    assert empty["as_of"]["seq"] == 0


@pytest.mark.parametrize(
    ("when", "contains"),
    [
        ("seq:999", "seq:999"),
        ("tag:nope", "nope"),
        ("2999-01-01T00:00:00Z", "future"),
    ],
)
def test_export_at_bad_point_is_refused(env: Env, when: str, contains: str) -> None:
    seed(env)
    before = tree_bytes(env.root)
    res = env.run("state", "export", "out.json", "--at", when)
    assert_refused(env, res, 2, contains)
    assert tree_bytes(env.root) == before


def test_component_and_secrets_dir_override_paths(env: Env) -> None:
    seed(env)
    now = export_doc(env, "--component-dir", "/srv/wassette/components")
    assert now["paths"] == {
        "component_dir": "/srv/wassette/components",
        "secrets_dir": str(env.secrets_dir),
    }
    doc = export_doc(
        env, "--secrets-dir", "/etc/wassette/secrets", "--component-dir", "/srv/c", "--at", "tx:1"
    )
    assert doc["paths"] == {"component_dir": "/srv/c", "secrets_dir": "/etc/wassette/secrets"}
    assert doc["as_of"]["seq"] < now["as_of"]["seq"]
    # Only the document changes: the store's own directories stay where they are.
    assert (env.component_dir / "weather.wasm").is_file()
    assert not Path("/srv/c").exists()


@pytest.mark.parametrize("kind", ["directory", "no-parent"])
def test_export_to_a_bad_target_is_refused(env: Env, kind: str) -> None:
    seed(env)
    target = env.root / "components" if kind == "directory" else env.root / "nope" / "out.json"
    before = tree_bytes(env.root)
    res = env.run("state", "export", str(target))
    assert_refused(env, res, 2, "directory")
    assert tree_bytes(env.root) == before
