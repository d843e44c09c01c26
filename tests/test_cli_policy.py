"""`wassette policy …` and `wassette permission …` through the installed CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, assert_refused, cli_history, ok
from wassette_state.store.domain.policy_text import wassette_form

VALID_POLICIES = sorted((CONFORMANCE / "policies" / "valid").glob("*.yaml"))
POLICY = (
    'version: "1.0"\ndescription: mine\npermissions:\n  environment:\n    allow:\n    - key: HOME\n'
)


def attach(env: Env, cid: str = "weather", kind: str = "weather") -> None:
    src = env.root / "inputs" / f"{cid}.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, kind=kind)
    ok(env.run("component", "attach", str(src)))


def mutate(env: Env, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(env.run(*args, "-o", "json")).out)
    assert doc["status"] == "ok"
    return doc


# ---------------------------------------------------------------------------------------------


def test_policy_attach_get_detach(env: Env) -> None:
    attach(env)
    pol = env.root / "inputs" / "weather.policy.yaml"
    pol.write_text(POLICY)
    doc = mutate(env, "policy", "attach", "weather", str(pol))
    assert [e["type"] for e in doc["events"]] == ["policy.attached"]
    data = doc["events"][0]["data"]
    assert data["policy_content"] == POLICY
    assert data["source_uri"] == pol.resolve().as_uri()

    assert ok(env.run("policy", "get", "weather")).out == POLICY
    got = json.loads(ok(env.run("policy", "get", "weather", "-o", "json")).out)
    assert got == {
        "component_id": "weather",
        "source_uri": pol.resolve().as_uri(),
        "attached_at": data["attached_at"],
        "policy_content": POLICY,
    }
    assert (env.component_dir / "weather.policy.yaml").read_text() == POLICY
    meta = json.loads((env.component_dir / "weather.policy.meta.json").read_text())
    assert meta == {"attached_at": data["attached_at"], "source_uri": pol.resolve().as_uri()}

    # The same file again changes nothing.
    assert mutate(env, "policy", "attach", "weather", pol.as_uri())["events"] == []

    doc = mutate(env, "policy", "detach", "weather")
    assert [e["type"] for e in doc["events"]] == ["policy.detached"]
    assert not (env.component_dir / "weather.policy.yaml").exists()
    assert not (env.component_dir / "weather.policy.meta.json").exists()
    assert (env.component_dir / "weather.wasm").is_file()
    assert_refused(env, env.run("policy", "get", "weather"), 2, "no policy")
    assert_refused(env, env.run("policy", "detach", "weather"), 2, "no policy")


@pytest.fixture(scope="module")
def policy_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("policy-conformance")
    e = Env(root)
    attach(e, "conf", kind="simple")
    return e


@pytest.mark.parametrize("path", VALID_POLICIES, ids=[p.stem for p in VALID_POLICIES])
def test_conformance_policy_accepted(policy_env: Env, path: Path) -> None:
    doc = mutate(policy_env, "policy", "attach", "conf", str(path))
    assert [e["type"] for e in doc["events"]] == ["policy.attached"]
    text = path.read_text()
    assert doc["events"][0]["data"]["policy_content"] == text
    assert doc["events"][0]["data"]["source_uri"] == path.resolve().as_uri()
    # Verbatim on disk, comments and all, for a Wassette server to read.
    assert (policy_env.component_dir / "conf.policy.yaml").read_bytes() == path.read_bytes()


def test_conformance_files_present() -> None:
    assert len(VALID_POLICIES) >= 10


def test_grant_keeps_what_it_does_not_touch(env: Env) -> None:
    attach(env)
    src = CONFORMANCE / "policies" / "valid" / "comprehensive.yaml"
    ok(env.run("policy", "attach", "weather", str(src)))
    mutate(env, "permission", "grant", "network", "weather", "new.example.com")
    before = yaml.safe_load(src.read_text())
    got = json.loads(ok(env.run("policy", "get", "weather", "-o", "json")).out)
    expected = json.loads(json.dumps(before))
    expected["permissions"]["network"]["allow"].append({"host": "new.example.com"})
    # Written as Wassette writes an edited policy (its `$schema` and comments do not survive).
    assert yaml.safe_load(got["policy_content"]) == wassette_form(expected)
    # The source of an attached policy stays its file; only the content changed.
    assert got["source_uri"] == src.resolve().as_uri()


def test_grant_revoke_reset(env: Env) -> None:
    attach(env)
    policy_file = env.component_dir / "weather.policy.yaml"
    assert not policy_file.exists()

    doc = mutate(env, "permission", "grant", "network", "weather", "api.example.com")
    [event] = doc["events"]
    assert event["type"] == "policy.changed"
    assert event["data"]["change"] == {"op": "grant", "kind": "network", "host": "api.example.com"}
    assert event["data"]["source_uri"] == policy_file.as_uri()
    created = yaml.safe_load(policy_file.read_text())
    assert created == wassette_form(
        {
            "version": "1.0",
            "description": "Auto-generated policy for component: weather",
            "permissions": {"network": {"allow": [{"host": "api.example.com"}]}},
        }
    )
    # Wassette writes no meta file for a policy its grant created; neither do we.
    assert not (env.component_dir / "weather.policy.meta.json").exists()

    grants = [
        ("network", "weather", "10.0.0.0/8"),
        ("storage", "weather", "fs://work/**", "--access", "read"),
        ("storage", "weather", "fs://work/**", "--access", "write"),
        ("environment-variable", "weather", "API_KEY"),
        ("memory", "weather", "512Mi"),
    ]
    for g in grants:
        assert len(mutate(env, "permission", "grant", *g)["events"]) == 1, g

    # Granting what is already granted appends nothing (the full list of policy.changed events
    # is checked at the end).
    res = ok(env.run("permission", "grant", "network", "weather", "api.example.com"))
    assert "no change" in res.out
    doc = mutate(
        env, "permission", "grant", "storage", "weather", "fs://work/**", "--access", "read,write"
    )
    assert doc["tx"] is None and doc["events"] == []

    full = {
        "version": "1.0",
        "description": "Auto-generated policy for component: weather",
        "permissions": {
            "network": {"allow": [{"host": "api.example.com"}, {"cidr": "10.0.0.0/8"}]},
            "storage": {"allow": [{"uri": "fs://work/**", "access": ["read", "write"]}]},
            "environment": {"allow": [{"key": "API_KEY"}]},
            "resources": {"limits": {"memory": "512Mi"}},
        },
    }
    text = ok(env.run("policy", "get", "weather")).out
    assert yaml.safe_load(text) == wassette_form(full)
    assert policy_file.read_text() == text

    revokes = [
        ("storage", "weather", "fs://work/**", "--access", "write"),
        ("network", "weather", "api.example.com"),
        ("memory", "weather", "512Mi"),
        ("environment-variable", "weather", "API_KEY"),
    ]
    for r in revokes:
        assert len(mutate(env, "permission", "revoke", *r)["events"]) == 1, r
    after = yaml.safe_load(ok(env.run("policy", "get", "weather")).out)["permissions"]
    assert after == {
        **wassette_form(full)["permissions"],
        "network": {"allow": [{"cidr": "10.0.0.0/8"}], "deny": None},
        "storage": {"allow": [{"uri": "fs://work/**", "access": ["read"]}], "deny": None},
        "environment": {"allow": None},
        "resources": {"limits": {"cpu": None, "memory": None}},
    }

    # Revoking what is not granted is bad input and changes nothing.
    assert_refused(env, env.run("permission", "revoke", "network", "weather", "api.example.com"))
    assert_refused(
        env,
        env.run("permission", "revoke", "storage", "weather", "fs://work/**", "--access", "write"),
    )

    last_content = policy_file.read_text()
    # Reset does what Wassette's does: the policy goes away, with its meta file.
    [reset] = mutate(env, "permission", "reset", "weather")["events"]
    assert reset["type"] == "policy.detached"
    assert not policy_file.exists()
    assert not (env.component_dir / "weather.policy.meta.json").exists()
    assert "no change" in ok(env.run("permission", "reset", "weather")).out

    changed = cli_history(env, "--type", "policy.changed")
    changes = [e["data"]["change"] for e in changed]
    assert changes == [
        {"op": "grant", "kind": "network", "host": "api.example.com"},
        {"op": "grant", "kind": "network", "cidr": "10.0.0.0/8"},
        {"op": "grant", "kind": "storage", "uri": "fs://work/**", "access": ["read"]},
        {"op": "grant", "kind": "storage", "uri": "fs://work/**", "access": ["write"]},
        {"op": "grant", "kind": "environment-variable", "key": "API_KEY"},
        {"op": "grant", "kind": "memory", "limit": "512Mi"},
        {"op": "revoke", "kind": "storage", "uri": "fs://work/**", "access": ["write"]},
        {"op": "revoke", "kind": "network", "host": "api.example.com"},
        {"op": "revoke", "kind": "memory", "limit": "512Mi"},
        {"op": "revoke", "kind": "environment-variable", "key": "API_KEY"},
    ]
    # Every policy.changed carries the whole new document.
    assert changed[-1]["data"]["policy_content"] == last_content
