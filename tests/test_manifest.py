"""Provisioning manifests (DESIGN §4.4, issue 12 point 4): the pure model and the CLI.

`store/domain/manifest_*` turn a state into a manifest for `wassette serve --manifest` and a
manifest into the importer's plan; what one side cannot carry to the other is reported. The
real Wassette 0.8.0 checks the same cases in test_manifest_wassette.py.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, cli_history, ok, opened, tree_bytes
from tests.manifest_cases import BAD, GOOD, Fixture, render
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.manifest_model import POLICY_DESCRIPTION, ManifestComponent
from wassette_state.store.domain.manifest_parse import parse_manifest
from wassette_state.store.domain.manifest_read import looks_like_manifest
from wassette_state.store.domain.manifest_write import (
    component_entry,
    file_uri,
    manifest_doc,
    permissions_of,
    render_manifest,
)
from wassette_state.store.domain.policy_text import dump_policy, parse_policy, wassette_form
from wassette_state.store.domain.state import Component, Metadata, Policy, State
from wassette_state.store.files import materialize, wasm
from wassette_state.store.persistence import log
from wassette_state.store.usecases import inputs
from wassette_state.store.usecases.importer import run_import

# What Wassette 0.8.0 wrote as fetch.policy.yaml for one component declaring all three kinds
# and no name (measured with `serve --manifest`).
WASSETTE_POLICY = """\
version: '1.0'
description: Auto-generated policy for component
permissions:
  storage:
    allow:
    - uri: fs:///tmp/data
      access:
      - read
      - write
    deny: null
  network:
    allow:
    - host: api.example.com
    deny: null
  environment:
    allow:
    - key: API_KEY
  runtime: null
  resources: null
  ipc: null
"""


@pytest.fixture
def fixture(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path / "fixture").make()


def write_manifest(env: Env, text: str, name: str = "deploy.yaml") -> Path:
    path = env.root / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the model (pure)


def test_the_policy_is_the_one_wassette_writes() -> None:
    m = parse_manifest(
        b"version: 1\ncomponents:\n  - uri: file:///x/fetch.wasm\n    permissions:\n"
        b"      network: {allow: [{host: api.example.com}]}\n"
        b"      storage: {allow: [{uri: 'fs:///tmp/data', access: [read, write]}]}\n"
        b"      environment: {allow: [{key: API_KEY}]}\n"
    )
    (comp,) = m.components
    assert comp.component_id == "fetch"
    assert comp.policy_text() == WASSETTE_POLICY
    named = ManifestComponent(0, "file:///x/fetch.wasm", name="ops", network=("a.com",))
    assert parse_policy(named.policy_text() or "")["description"] == "Auto-generated policy for ops"


@pytest.mark.parametrize("name", sorted(GOOD))
def test_manifests_wassette_accepts_parse(name: str, fixture: Fixture) -> None:
    m = parse_manifest(render(fixture, GOOD[name]).encode())
    assert m.components and all(c.component_id for c in m.components)
    assert looks_like_manifest(render(fixture, GOOD[name]).encode())


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_manifests_are_refused_by_the_model(name: str, fixture: Fixture) -> None:
    template, fragment = BAD[name]
    data = render(fixture, template).encode()
    try:
        parse_manifest(data)
    except ValidationError as e:
        assert fragment in str(e) and "\n" not in str(e), str(e)
        return
    # Refused only once the files are read (digest, bytes): the import does that.
    assert name in {"digest-mismatch", "not-a-component", "uri-is-a-directory"}, name


def test_scalars_are_read_as_serde_reads_them() -> None:
    m = parse_manifest(
        b"version: 0x1\ncomponents:\n  - uri: file:///x/a.wasm\n    name: yes\n"
        b"    permissions:\n      network:\n"
        b"        allow: [{host: 42}, {host: on}, {host: 2001-01-01}]\n"
    )
    (comp,) = m.components
    assert comp.name == "yes" and comp.network == ("42", "on", "2001-01-01")


def test_ids_are_file_stems_as_wassette_names_them() -> None:
    cases = {
        "file:///srv/fetch_rs.wasm": "fetch_rs",
        "file:///srv/a.b.wasm": "a.b",
        "file:///srv/we%20ird.wasm": "we%20ird",  # not percent-decoded: Wassette isn't either
        "file:///srv/Weird+Name@1.wasm": "Weird+Name@1",
        "oci://ghcr.io/x/y:1": None,
    }
    for uri, cid in cases.items():
        assert ManifestComponent(0, uri, network=("a",)).component_id == cid


def test_what_is_not_imported_is_noted() -> None:
    m = parse_manifest(
        b"version: 1\nowner: me\ncomponents:\n"
        b"  - uri: file:///x/fetch.wasm\n    name: label\n    extra: 1\n"
        b"    retry_policy: {attempts: 2, backoff: {type: exponential, base_ms: 5}}\n"
        b"    permissions:\n      resources: {memory_bytes: 10, cpu_time_ms: 20}\n"
        b"  - uri: file:///x/other.wasm\n    name: kept-in-description\n"
        b"    permissions:\n      environment: {allow: [{key: K, value_from: SRC}]}\n"
        b"      network: {allow: [{host: a.com, port: 1}], deny: [{host: b.com}]}\n"
    )
    seen = {(n.component_id, n.what) for n in m.notes}
    assert seen == {
        (None, "unknown_field"),  # owner
        ("fetch", "unknown_field"),  # extra
        ("fetch", "name"),  # no policy: the name goes nowhere
        ("fetch", "resources"),
        ("fetch", "retry_policy"),
        ("other", "value_from"),
        ("other", "unknown_field"),  # port, deny
    }
    details = " | ".join(n.detail for n in m.notes)
    assert "components[1].permissions.network.deny" in details
    assert "memory_bytes=10, cpu_time_ms=20" in details
    assert len([n for n in m.notes if n.what == "unknown_field"]) == 4


def test_state_files_are_not_manifests() -> None:
    state_file = {
        "version": "0.1.0",
        "exported_at": 1,
        "components": [],
        "environment": {},
        "paths": {"component_dir": "/c", "secrets_dir": "/s"},
    }
    assert not looks_like_manifest(json.dumps(state_file).encode())
    state_file["components"] = [{"component_id": "x", "uri": "file:///x.wasm"}]
    assert not looks_like_manifest(json.dumps(state_file).encode())
    assert not looks_like_manifest(b"- 1\n")
    assert looks_like_manifest(b"version: 1\ncomponents: []\n")
    assert looks_like_manifest(b"version: '1'\ncomponents: [{uri: x}]\n")


def test_alias_bombs_are_bounded() -> None:
    """A few KB of aliases would be a billion values walked: refused after a million."""
    access = "[" + ", ".join(["read"] * 1000) + "]"
    rules = "[" + ", ".join(["*s"] * 1000) + "]"
    comps = "[" + ", ".join(["*c"] * 1000) + "]"
    text = (
        f"a: &a {access}\ns: &s {{uri: 'fs:///x', access: *a}}\n"
        f"c: &c {{uri: 'file:///a.wasm', permissions: {{storage: {{allow: {rules}}}}}}}\n"
        f"version: 1\ncomponents: {comps}\n"
    )
    with pytest.raises(ValidationError, match="more than 1,000,000 values"):
        parse_manifest(text.encode())


def policy(doc: dict[str, Any]) -> str:
    return dump_policy(doc)


def test_export_reports_every_part_a_manifest_cannot_carry() -> None:
    text = policy(
        {
            "$schema": "https://x/policy.json",
            "version": "1.1",
            "description": "hand written",
            "permissions": {
                "network": {
                    "allow": [{"host": "a.com"}, {"cidr": "10.0.0.0/8"}],
                    "deny": [{"host": "b.com"}],
                },
                "storage": {
                    "allow": [
                        {"uri": "fs:///data", "access": ["read"]},
                        {"uri": "/plain", "access": ["write"]},
                    ],
                    "deny": [{"uri": "fs:///etc", "access": ["read"]}],
                },
                "environment": {"allow": [{"key": "A"}, {"key": "A"}]},
                "resources": {"limits": {"memory": "512Mi"}},
                "runtime": {"docker": {"privileged": False}},
                "ipc": {"allow": [{"uri": "x"}]},
            },
        }
    )
    entry, notes = component_entry("svc", "file:///s/svc.wasm", "ab" * 32, text, ("K",))
    assert entry == {
        "uri": "file:///s/svc.wasm",
        "name": "svc",
        "digest": "sha256:" + "ab" * 32,
        "permissions": {
            "network": {"allow": [{"host": "a.com"}]},
            "storage": {"allow": [{"uri": "fs:///data", "access": ["read"]}]},
            "environment": {"allow": [{"key": "A"}]},
        },
    }
    assert sorted(n.what for n in notes) == sorted(
        [
            "policy.description",
            "policy.version",
            "policy.$schema",
            "network.cidr",
            "network.deny",
            "storage.uri",
            "storage.deny",
            "resources",
            "runtime",
            "ipc",
            "secret_keys",
        ]
    )
    assert all(n.component_id == "svc" and "\n" not in n.detail for n in notes)


def test_a_description_of_wassettes_form_travels_as_the_name() -> None:
    grant_made = policy(
        wassette_form(
            {
                "version": "1.0",
                "description": "Auto-generated policy for component: fetch",
                "permissions": {"network": {"allow": [{"host": "a.com"}]}},
            }
        )
    )
    entry, notes = component_entry("fetch", "file:///f/fetch.wasm", "0" * 64, grant_made, ())
    assert entry["name"] == "component: fetch" and notes == []
    comp = parse_manifest(
        render_manifest({"version": 1, "components": [entry]}, "yaml")
    ).components[0]
    assert comp.policy_text() == grant_made  # the same bytes Wassette will write


def test_no_policy_and_empty_policy_are_reported() -> None:
    entry, notes = component_entry("a", "file:///a.wasm", "0" * 64, None, ())
    assert entry["permissions"] == {} and [n.what for n in notes] == ["policy"]
    empty = policy(
        {"version": "1.0", "description": "Auto-generated policy for a", "permissions": {}}
    )
    entry, notes = component_entry("a", "file:///a.wasm", "0" * 64, empty, ())
    assert entry["permissions"] == {} and [n.what for n in notes] == ["policy"]


def test_manifest_doc_is_sorted_deterministic_and_reports_what_it_leaves_out() -> None:
    comps = {
        "b": ("file:///x/b.wasm", "1" * 64, None, ()),
        "a": (None, "2" * 64, None, ()),
        "c": ("file:///x/c.wasm", "3" * 64, None, ("TOKEN",)),
    }
    doc, notes = manifest_doc(comps, {"LOG": "x", "A": "y"})
    assert [c["uri"] for c in doc["components"]] == ["file:///x/b.wasm", "file:///x/c.wasm"]
    assert ("a", "component") in {(n.component_id, n.what) for n in notes}
    assert (None, "environment") in {(n.component_id, n.what) for n in notes}
    assert "A, LOG" in next(n.detail for n in notes if n.what == "environment")
    again, _ = manifest_doc(dict(reversed(list(comps.items()))), {"A": "y", "LOG": "x"})
    for fmt in ("yaml", "json"):
        data = render_manifest(doc, fmt)  # type: ignore[arg-type]
        assert data == render_manifest(again, fmt)  # type: ignore[arg-type]
        parsed = parse_manifest(data)
        assert [c.component_id for c in parsed.components] == ["b", "c"]
    assert yaml.safe_load(render_manifest(doc, "yaml")) == doc


# ------------------------------------------------------------------ round trip (property)

HOSTS = st.sampled_from(["api.example.com", "*.example.org", "*", "10.1.2.3", "on", "a-b.io"])
URIS = st.sampled_from(["fs:///tmp/data", "fs:///srv/**", "fs://rel", "/plain/path", "fs:///a b"])
KEYS = st.sampled_from(["API_KEY", "DB_URL", "HOME", "x.y", "token"])
ACCESS = st.lists(st.sampled_from(["read", "write"]), min_size=1, max_size=2)


@st.composite
def policies(draw: Any) -> str | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    perms: dict[str, Any] = {}
    if draw(st.booleans()):
        allow = draw(st.lists(st.one_of(HOSTS.map(lambda h: {"host": h})), max_size=3))
        allow += draw(st.lists(st.just({"cidr": "10.0.0.0/8"}), max_size=1))
        perms["network"] = {"allow": allow}
        if draw(st.booleans()):
            perms["network"]["deny"] = [{"host": "evil.com"}]
    if draw(st.booleans()):
        perms["storage"] = {
            "allow": draw(
                st.lists(st.fixed_dictionaries({"uri": URIS, "access": ACCESS}), max_size=3)
            )
        }
    if draw(st.booleans()):
        perms["environment"] = {"allow": [{"key": k} for k in draw(st.lists(KEYS, max_size=3))]}
    if draw(st.booleans()):
        perms["resources"] = {"limits": {"memory": "64Mi"}}
    description = draw(
        st.sampled_from(
            [
                None,
                "hand written",
                "Auto-generated policy for component: {id}",
                "Auto-generated policy for ops",
            ]
        )
    )
    doc: dict[str, Any] = {"version": draw(st.sampled_from(["1.0", "1.2"]))}
    if description is not None:
        doc["description"] = description
    doc["permissions"] = perms
    text = dump_policy(doc)
    parse_policy(text)
    return text


COMPONENT_KINDS = ["simple", "weather", "interface", "mixed", "documented"]


@st.composite
def states(draw: Any) -> tuple[dict[str, tuple[str, str | None, tuple[str, ...]]], dict[str, str]]:
    ids = draw(
        st.lists(
            st.sampled_from(["fetch", "weather", "calc", "Weird+Name@1", "a.b"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    comps = {}
    for cid in ids:
        text = draw(policies())
        if text is not None:
            text = text.replace("{id}", cid)
        keys = tuple(sorted(set(draw(st.lists(KEYS, max_size=2)))))
        comps[cid] = (draw(st.sampled_from(COMPONENT_KINDS)), text, keys)
    env = draw(st.dictionaries(st.sampled_from(["LOG", "MODE"]), st.just("v"), max_size=2))
    return comps, env


def expressible(text: str | None) -> dict[str, list[Any]]:
    """The permissions a manifest carries of a policy: hosts, fs:// storage, env keys."""
    perms = permissions_of(text)
    perms["storage"] = [s for s in perms["storage"] if s[0].startswith("fs://")]
    return perms


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states(), st.sampled_from(["yaml", "json"]))
def test_state_to_manifest_to_import_keeps_components_tools_and_permissions(
    drawn: tuple[dict[str, tuple[str, str | None, tuple[str, ...]]], dict[str, str]], fmt: str
) -> None:
    comps, env_vars = drawn
    with tempfile.TemporaryDirectory(prefix="manifest-rt-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        state_comps: dict[str, Component] = {}
        given: dict[str, tuple[str | None, str, str | None, tuple[str, ...]]] = {}
        for cid, (kind, text, keys) in comps.items():
            path = root / "src" / f"{cid}.wasm"
            data = fx.write_component(path, kind)
            digest = materialize.sha256_hex(data)
            tools = wasm.describe(data)
            meta = inputs.metadata_doc(cid, tools, len(data), 1, digest, 1)
            policy_obj = Policy(text, "file:///p.yaml", 5) if text is not None else None
            state_comps[cid] = Component(
                cid, path.as_uri(), digest, Metadata(meta), policy_obj, keys
            )
            given[cid] = (file_uri(str(path)), digest, text, keys)
        state = State(components=state_comps, environment=env_vars)
        doc, notes = manifest_doc(given, state.environment)
        target = root / f"deploy.{fmt}"
        target.write_bytes(render_manifest(doc, fmt))  # type: ignore[arg-type]

        site = Env(root / "site")
        site.root.mkdir()
        with opened(site) as store:
            run_import(store, str(target))
            imported = store.state()
        assert set(imported.components) == set(comps)
        assert imported.environment == {}  # a manifest has none: reported instead
        noted = {(n.component_id, n.what) for n in notes}
        if env_vars:
            assert (None, "environment") in noted
        for cid, original in state_comps.items():
            got = imported.components[cid]
            assert got.wasm_sha256 == original.wasm_sha256
            assert got.source_uri == original.source_uri
            for key in ("tool_schemas", "tool_names", "function_identifiers"):
                assert got.metadata.doc[key] == original.metadata.doc[key]
            text = original.policy.policy_content if original.policy else None
            want = expressible(text)
            assert permissions_of(got.policy.policy_content if got.policy else None) == want
            assert (got.policy is not None) == any(want.values())
            if original.secret_keys:
                assert (cid, "secret_keys") in noted
            if text is None:
                assert (cid, "policy") in noted
                continue
            orig = parse_policy(text)
            perms = orig["permissions"]
            if any(e.get("cidr") for e in (perms.get("network") or {}).get("allow", [])):
                assert (cid, "network.cidr") in noted
            if (perms.get("network") or {}).get("deny"):
                assert (cid, "network.deny") in noted
            if len(permissions_of(text)["storage"]) != len(want["storage"]):
                assert (cid, "storage.uri") in noted
            if perms.get("resources"):
                assert (cid, "resources") in noted
            if orig["version"] != "1.0":
                assert (cid, "policy.version") in noted
            if got.policy is not None:
                desc = parse_policy(got.policy.policy_content)["description"]
                if str(orig.get("description", "")).startswith(POLICY_DESCRIPTION):
                    assert desc == orig["description"]
                else:
                    assert (cid, "policy.description") in noted
            elif any(permissions_of(text).values()) or perms:
                assert (cid, "policy") in noted or not any(want.values())


# ------------------------------------------------------------------ the CLI: import


def seeded(env: Env) -> Env:
    """A store with something in it, so "nothing changed" means something."""
    src = env.root / "inputs" / "seed.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, "weather")
    ok(env.run("component", "attach", str(src)))
    ok(env.run("permission", "grant", "network", "seed", "keep.example.com"))
    ok(env.run("env", "set", "LOG_LEVEL=info"))
    return env


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_bad_manifest_is_refused_and_changes_nothing(
    name: str, env: Env, fixture: Fixture
) -> None:
    template, fragment = BAD[name]
    seeded(env)
    path = write_manifest(env, render(fixture, template))
    before = tree_bytes(env.root)
    res = env.run("state", "import", str(path))
    assert_refused(env, res, 2, fragment)
    assert tree_bytes(env.root) == before


@pytest.mark.parametrize(
    "text, fragment",
    [
        (b"", "empty"),
        (b"version: 1\ncomponents:\n  - uri: \xff\n", "not valid UTF-8"),
        (
            b"version: 1\ncomponents:\n  - uri: oci://ghcr.io/x/y:1\n    permissions: {}\n",
            "--strict",
        ),
        (
            b"version: 1\ncomponents:\n  - uri: file:///nowhere/x.wasm\n    permissions: {}\n",
            "--strict",
        ),
    ],
    ids=["empty", "not-utf8", "oci-strict", "missing-strict"],
)
def test_unreadable_manifests_are_refused(env: Env, text: bytes, fragment: str) -> None:
    seeded(env)
    path = env.root / "deploy.yaml"
    path.write_bytes(text)
    before = tree_bytes(env.root)
    assert_refused(env, env.run("state", "import", str(path), "--strict"))
    assert tree_bytes(env.root) == before


def test_import_records_one_transaction_as_wassette_provisions(env: Env, fixture: Fixture) -> None:
    path = write_manifest(env, render(fixture, GOOD["three-components"]))
    res = ok(env.run("import", str(path), "-o", "json"))
    out = json.loads(res.out)
    heads = ["attach fetch", "attach policy to fetch", "attach iface", "attach policy to iface"]
    assert [p.split(" (")[0] for p in out["plan"]] == [*heads, "attach weather"]
    assert {n["what"] for n in out["not_imported"]} == {"resources", "name"}
    assert "Warning: not imported: weather: resources: memory_bytes=1048576" in res.err
    files = sorted(p.name for p in env.component_dir.iterdir())
    assert "weather.policy.yaml" not in files and "fetch.policy.yaml" in files
    meta = json.loads((env.component_dir / "fetch.policy.meta.json").read_text())
    assert meta["source_uri"] == f"file://{env.component_dir}/fetch.manifest-policy.yaml"
    hist = cli_history(env)
    assert {e["kind"] for e in hist} == {"import"} and len({e["tx"] for e in hist}) == 1
    with opened(env) as store, store.reading() as conn:
        row = log.transaction(conn, out["tx"])
    assert row is not None and row["kind"] == "import"
    assert row["details"]["format"] == "manifest"
    assert row["details"]["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # The same manifest again: nothing to change, nothing appended.
    again = json.loads(ok(env.run("import", str(path), "-o", "json")).out)
    assert again["plan"] == [] and again["tx"] is None


def test_dry_run_writes_nothing(env: Env, fixture: Fixture) -> None:
    seeded(env)
    path = write_manifest(env, render(fixture, GOOD["all-kinds-named"]))
    before = tree_bytes(env.root)
    out = json.loads(ok(env.run("import", str(path), "--dry-run", "-o", "json")).out)
    assert out["dry_run"] is True and out["plan"] and out["tx"] is None
    assert tree_bytes(env.root) == before


def test_permissions_none_keeps_the_policy_a_component_has(env: Env, fixture: Fixture) -> None:
    ok(env.run("component", "attach", str(fixture.root / "fetch.wasm")))
    ok(env.run("permission", "grant", "network", "fetch", "mine.example.com"))
    before = (env.component_dir / "fetch.policy.yaml").read_bytes()
    path = write_manifest(env, render(fixture, GOOD["permissions-empty"]))
    out = json.loads(ok(env.run("import", str(path), "-o", "json")).out)
    assert out["plan"] == []  # Wassette keeps it too (measured)
    assert (env.component_dir / "fetch.policy.yaml").read_bytes() == before
    # A manifest that declares permissions replaces it, as Wassette does.
    path = write_manifest(env, render(fixture, GOOD["bare-star-host"]), "star.yaml")
    out = json.loads(ok(env.run("import", str(path), "-o", "json")).out)
    assert out["plan"] == ["attach policy to fetch"]
    assert permissions_of((env.component_dir / "fetch.policy.yaml").read_text())["network"] == ["*"]


def test_prune_detaches_what_the_manifest_lacks_but_never_the_environment(
    env: Env, fixture: Fixture
) -> None:
    seeded(env)
    path = write_manifest(env, render(fixture, GOOD["bare-star-host"]))
    out = json.loads(ok(env.run("import", str(path), "--prune", "--yes", "-o", "json")).out)
    assert "detach seed" in out["plan"] and not any("env" in p for p in out["plan"])
    listed = json.loads(ok(env.run("env", "list", "-o", "json")).out)
    assert "LOG_LEVEL" in json.dumps(listed)


def test_missing_files_are_skipped_or_restored_by_digest(env: Env, fixture: Fixture) -> None:
    moved = env.root / "gone" / "fetch.wasm"
    moved.parent.mkdir()
    moved.write_bytes((fixture.root / "fetch.wasm").read_bytes())
    text = one_with(f"file://{moved}", f"    digest: sha256:{fixture.fetch_sha}\n")
    path = write_manifest(env, text)
    ok(env.run("import", str(path)))
    moved.unlink()
    ok(env.run("component", "detach", "fetch"))
    # The file is gone; the blob store has bytes with the manifest's digest.
    res = ok(env.run("import", str(path), "-o", "json"))
    out = json.loads(res.out)
    assert out["reports"][0]["note"].endswith("restored from the blob store")
    assert (env.component_dir / "fetch.wasm").read_bytes() == (
        fixture.root / "fetch.wasm"
    ).read_bytes()
    # Without a digest nothing vouches for other bytes: skipped with a warning.
    path = write_manifest(env, one_with(f"file://{moved}", ""), "nodigest.yaml")
    res = ok(env.run("import", str(path), "-o", "json"))
    assert json.loads(res.out)["skipped"] == [
        {"component_id": "fetch", "reason": f"wasm not found: {moved}"}
    ]
    assert "Warning: skipped fetch" in res.err


def one_with(uri: str, extra: str) -> str:
    return f"version: 1\ncomponents:\n  - uri: {uri}\n{extra}    permissions: {{}}\n"


def test_a_manifest_is_read_from_stdin(env: Env, fixture: Fixture) -> None:
    text = render(fixture, GOOD["json"])
    out = json.loads(ok(env.run("import", "-", "-o", "json", input=text)).out)
    assert out["plan"][0].startswith("attach fetch")


# ------------------------------------------------------------------ the CLI: export


def test_export_then_import_elsewhere_gives_the_same_components_tools_and_permissions(
    env_factory: Any, fixture: Fixture
) -> None:
    a, b = env_factory("a"), env_factory("b")
    ok(a.run("component", "attach", str(fixture.root / "fetch.wasm")))
    ok(a.run("component", "attach", str(fixture.root / "weather.wasm")))
    ok(a.run("permission", "grant", "network", "fetch", "api.example.com"))
    ok(a.run("permission", "grant", "storage", "fetch", "fs:///tmp/data", "--access", "read,write"))
    ok(a.run("permission", "grant", "environment-variable", "weather", "API_KEY"))
    ok(a.run("permission", "grant", "memory", "weather", "512Mi"))
    ok(a.run("secret", "set", "weather", "--stdin", input="API_KEY=s3cr3t-value\n"))
    ok(a.run("env", "set", "LOG_LEVEL=debug"))
    target = a.root / "deploy.yaml"
    res = ok(a.run("export", str(target), "--format", "manifest", "-o", "json"))
    out = json.loads(res.out)
    assert out["format"] == "manifest" and out["components"] == 2
    assert {(n["component_id"], n["what"]) for n in out["not_expressible"]} == {
        ("weather", "resources"),
        ("weather", "secret_keys"),
        (None, "environment"),
    }
    lines = [ln for ln in res.err.splitlines() if ln.startswith("Warning: not in the manifest:")]
    assert len(lines) == 3
    assert "s3cr3t-value" not in target.read_text() + res.text
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    doc = yaml.safe_load(target.read_text())
    assert doc["version"] == 1 and [c["name"] for c in doc["components"]] == [
        "component: fetch",
        "component: weather",
    ]
    ok(b.run("import", str(target)))
    with opened(a) as sa, opened(b) as sb:
        sta, stb = sa.state(), sb.state()
    assert set(sta.components) == set(stb.components)
    for cid, ca in sta.components.items():
        cb = stb.components[cid]
        assert (ca.wasm_sha256, ca.metadata.doc["tool_schemas"]) == (
            cb.wasm_sha256,
            cb.metadata.doc["tool_schemas"],
        )
        assert permissions_of(ca.policy.policy_content) == permissions_of(cb.policy.policy_content)
    assert (b.component_dir / "fetch.policy.yaml").read_bytes() == (
        a.component_dir / "fetch.policy.yaml"
    ).read_bytes()


def test_export_is_deterministic(env: Env, fixture: Fixture) -> None:
    ok(env.run("component", "attach", str(fixture.root / "fetch.wasm")))
    ok(env.run("permission", "grant", "network", "fetch", "a.com"))
    one_ = ok(env.run("export", "-", "--format", "manifest")).out
    two = ok(env.run("state", "export", "-", "--format", "manifest")).out
    assert (
        one_ == two
        and json.loads(one_)["components"][0]["uri"] == f"file://{fixture.root}/fetch.wasm"
    )


def test_export_at_a_past_point_and_wasm_dir(env: Env, fixture: Fixture) -> None:
    src = env.root / "inputs" / "app.wasm"
    src.parent.mkdir()
    fx.write_component(src, "simple")
    ok(env.run("component", "attach", str(src)))
    ok(env.run("permission", "grant", "network", "app", "v1.example.com"))
    ok(env.run("state", "tag", "v1"))
    fx.write_component(src, "weather")
    ok(env.run("component", "attach", str(src)))
    ok(env.run("permission", "grant", "network", "app", "v2.example.com"))
    # v1's bytes are in no <id>.wasm any more: left out, and said so; nothing is written.
    target = env.root / "v1.yaml"
    res = env.run("export", str(target), "--format", "manifest", "--at", "tag:v1")
    assert_refused(env, res, 2, "--wasm-dir")
    assert not target.exists()
    # With --wasm-dir the blob store's bytes travel with the manifest.
    res = ok(
        env.run(
            "export",
            str(target),
            "--format",
            "manifest",
            "--at",
            "tag:v1",
            "--wasm-dir",
            str(env.root / "bundle"),
        )
    )
    (comp,) = parse_manifest(target.read_bytes()).components
    assert comp.path == str(env.root / "bundle" / "app.wasm")
    assert file_uri(comp.path) == comp.uri
    assert (env.root / "bundle" / "app.wasm").read_bytes() == fx.KINDS["simple"]()
    assert comp.network == ("v1.example.com",)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--format", "manifest"], "no components"),
        (["--wasm-dir", "x"], "--wasm-dir goes with --format manifest"),
        (["--format", "manifest", "--component-dir", "/x"], "a manifest has none"),
        (["--format", "yaml"], "Invalid value for '--format'"),
    ],
    ids=["empty-state", "wasm-dir-without-manifest", "component-dir", "unknown-format"],
)
def test_export_refusals(env: Env, args: list[str], fragment: str) -> None:
    ok(env.run("env", "set", "LOG_LEVEL=info"))  # a store, with no component in it
    target = env.root / "out.yaml"
    res = env.run("export", str(target), *args)
    assert_refused(env, res, 2, fragment)
    assert not target.exists()


def test_export_json_summary_needs_a_file(env: Env, fixture: Fixture) -> None:
    ok(env.run("component", "attach", str(fixture.root / "fetch.wasm")))
    assert_refused(env, env.run("export", "-", "--format", "manifest", "-o", "json"), 2, "FILE")
