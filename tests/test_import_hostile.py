"""Hostile and broken state files through `wassette state import FILE`: every one exits 2 with
exactly one `Error:` line naming the problem (and where it is in the file), leaves the database
and every file byte-identical, and never shows a secret value.

The store is seeded (through the library) before each case so the database and files exist.

Unreadable paths: the tests run as root, which ignores `chmod 000`, so unreadable sources are
a FIFO nobody writes to, a path below a regular file (ENOTDIR), a path in a missing directory
and a missing file (a `chmod 000` case would only ever skip in CI, so there is none).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, assert_refused, raw_db, tree_bytes
from wassette_state.store.usecases import commands, secret_commands

SECRET = "h0stile-s3cr3t-v4lue"
BASE: dict[str, Any] = json.loads((CONFORMANCE / "state" / "wassette-written.json").read_text())
OVERSIZE = 64 * 1024 * 1024 + 1

Make = Callable[[Path], Path]


def doc_with(change: Callable[[dict[str, Any]], object], name: str = "bad.json") -> Make:
    """A JSON file: Wassette's own state file with one thing broken."""

    def make(d: Path) -> Path:
        doc = copy.deepcopy(BASE)
        change(doc)
        path = d / name
        path.write_text(json.dumps(doc))
        return path

    return make


def raw(data: bytes, name: str = "bad.json") -> Make:
    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    return make


def yaml_text(text: str) -> Make:
    return raw(text.encode(), "bad.yaml")


def comp(i: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["components"][i].update(fields)

    return change


def policy(content: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["components"][1]["policy"]["policy_content"] = content

    return change


def drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return change


def setitem(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


def duplicate_ids(doc: dict[str, Any]) -> None:
    doc["components"][1]["component_id"] = "fetch_rs"
    doc["components"][1]["metadata"]["component_id"] = "fetch_rs"


def alias_bomb() -> str:
    lines = ['version: "0.1.0"', 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def fifo(d: Path) -> Path:
    path = d / "pipe.json"
    os.mkfifo(path)
    return path


def oversized(d: Path) -> Path:
    path = d / "huge.json"
    with path.open("wb") as f:
        f.truncate(OVERSIZE)  # sparse: instant, no 64 MiB written
    return path


def directory(d: Path) -> Path:
    path = d / "a-dir.json"
    path.mkdir()
    return path


def below_a_file(d: Path) -> Path:
    (d / "plain").write_text("{}")
    return d / "plain" / "state.json"


POLICY_HOST = 'version: "1.0"\npermissions:\n  network:\n    allow:\n      - host: "a*b*c"\n'
POLICY_URI = (
    'version: "1.0"\npermissions:\n  storage:\n    allow:\n'
    '      - uri: "fs://***"\n        access: [read]\n'
)
PC = "components[1].policy.policy_content"

CASES: list[tuple[str, Make, str]] = [
    # syntax and encoding
    ("invalid-json", raw(b'{"version": "0.1.0",'), "invalid JSON at line 1"),
    ("invalid-yaml", yaml_text('version: "0.1.0"\ncomponents: [\n'), "invalid YAML"),
    ("non-utf8", raw(b'{"version": "\xff\xfe"}'), "not valid UTF-8"),
    ("empty-file", raw(b""), "empty"),
    ("deep-nesting", raw(b"[" * 5000 + b"]" * 5000), "nests deeper"),
    # version
    ("missing-version", doc_with(drop("version")), "version: missing required field"),
    ("empty-version", doc_with(setitem("", "version")), "version: must be a non-empty"),
    ("newer-major", doc_with(setitem("1.0.0", "version")), "newer than this tool supports"),
    # wrong types, missing fields
    ("exported-at-string", doc_with(setitem("yesterday", "exported_at")), "exported_at: expected"),
    (
        "missing-component-id",
        doc_with(drop("components", 1, "component_id")),
        "components[1].component_id: missing required field",
    ),
    (
        "function-identifier-string",
        doc_with(setitem(["fetch"], "components", 0, "metadata", "function_identifiers")),
        "components[0].metadata.function_identifiers[0]: expected a mapping",
    ),
    ("bad-wasm-sha", doc_with(comp(0, wasm_sha256="zz")), "components[0].wasm_sha256"),
    # ids
    (
        "duplicate-ids",
        doc_with(duplicate_ids),
        "components[1].component_id: duplicate component id 'fetch_rs'",
    ),
    (
        "path-traversal-id",
        doc_with(comp(1, component_id="../../etc/passwd")),
        "components[1].component_id: invalid id",
    ),
    ("nul-id", doc_with(comp(1, component_id="a\x00b")), "components[1].component_id: invalid id"),
    # policies, one rule each
    ("policy-not-yaml", doc_with(policy("version: [\n")), f"{PC}: policy: YAML"),
    ("policy-no-permissions", doc_with(policy('version: "1.0"\n')), f"{PC}: policy: permissions"),
    ("policy-host-wildcards", doc_with(policy(POLICY_HOST)), f"{PC}: policy: permissions.network"),
    ("policy-storage-uri", doc_with(policy(POLICY_URI)), f"{PC}: policy: permissions.storage"),
    # secret values smuggled in: refused, never shown
    (
        "secret-values-beside-keys",
        doc_with(comp(1, secrets={"env_keys": ["API_KEY"], "values": {"API_KEY": SECRET}})),
        "components[1].secrets: contains secret values",
    ),
    (
        "secret-values-as-map",
        doc_with(comp(1, secrets={"API_KEY": SECRET})),
        "components[1].secrets: contains secret values",
    ),
    (
        "secret-key-equals-value",
        doc_with(comp(1, secrets={"env_keys": [f"API_KEY={SECRET}"]})),
        "components[1].secrets.env_keys[0]",
    ),
    (
        "secret-in-env-var-name",
        doc_with(setitem({f"API_KEY={SECRET}": "x"}, "environment")),
        "environment",
    ),
    (
        "secret-key-shell-injection",
        doc_with(comp(1, secrets={"env_keys": ["$(touch /tmp/hostile-pwned)"]})),
        "component 'get-weather-js': secrets.env_keys: invalid key name",
    ),
    (
        "env-name-the-cli-refuses",
        doc_with(setitem({"1 BAD NAME": "x"}, "environment")),
        "environment: invalid variable name",
    ),
    (
        "secret-before-a-yaml-error",
        yaml_text(f'version: "0.1.0"\nsecrets: {{env_keys: ["{SECRET}\\q"]}}\n'),
        "invalid YAML",
    ),
    # YAML features and sizes that are attacks
    ("yaml-alias-bomb", yaml_text(alias_bomb()), "aliases are not allowed"),
    (
        "yaml-python-object",
        yaml_text('version: !!python/object/apply:os.system ["touch /tmp/hostile-pwned"]\n'),
        "python/object/apply:os.system",
    ),
    ("oversized-sparse", oversized, f"too large ({OVERSIZE} bytes"),
    ("endless-device", lambda d: Path("/dev/zero"), "too large"),
    # not a readable file
    ("directory", directory, "is a directory"),
    ("fifo-without-writer", fifo, "empty"),
    ("below-a-regular-file", below_a_file, "Not a directory"),
    ("in-missing-directory", lambda d: d / "no-such-dir" / "state.json", "not found"),
    ("missing-file", lambda d: d / "nope.yaml", "state file not found"),
]


def seed(env: Env) -> None:
    src = env.root / "inputs" / "fetch_rs.wasm"
    src.parent.mkdir(parents=True)
    fx.write_component(src, kind="simple")
    store: Any = env.store()
    try:
        commands.attach(store, str(src))
        secret_commands.secret_set(store, "fetch_rs", {"TOKEN": SECRET})
        commands.env_set(store, {"LOG_LEVEL": "info"})
    finally:
        store.close()


BOTH_BACKENDS = pytest.mark.parametrize(
    "hostile_backend", ["sqlite", "postgres"], indirect=True, scope="module"
)


@pytest.fixture(scope="module")
def hostile_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, hostile_backend: str, request: pytest.FixtureRequest
) -> Iterator[Env]:
    """One seeded store for every case: each case checks that it changed nothing, so sharing
    it cannot hide a change (the next case compares against its own 'before')."""
    root = tmp_path_factory.mktemp("hostile-store")
    server = request.getfixturevalue("pg_server") if hostile_backend == "postgres" else None
    name = server.clone() if server is not None else None
    env = Env(root, server.url(name) if server is not None else None)
    seed(env)
    yield env
    if server is not None:
        server.drop(name)


def db_content(env: Env) -> list[Any]:
    """Every row of the log and the read models (the SQLite file is among the tree's bytes)."""
    if not env.url:
        return []
    with raw_db(env) as c:
        return [
            c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("transactions", "events", "component_versions", "setting_versions", "tags")
        ]


def test_there_are_enough_distinct_cases() -> None:
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)) >= 30


@BOTH_BACKENDS
@pytest.mark.parametrize(("name", "make", "contains"), CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_and_changes_nothing(
    seeded: Env, tmp_path: Path, name: str, make: Make, contains: str
) -> None:
    env = seeded
    inputs = tmp_path / "hostile"
    inputs.mkdir()
    source = make(inputs)
    before = tree_bytes(env.root), db_content(env)
    res = env.run("state", "import", str(source))
    assert_refused(env, res, 2, contains)
    assert SECRET not in res.text
    assert (tree_bytes(env.root), db_content(env)) == before
    assert not Path("/tmp/hostile-pwned").exists()


@BOTH_BACKENDS
def test_hostile_file_on_stdin_is_refused(seeded: Env) -> None:
    env = seeded
    before = tree_bytes(env.root), db_content(env)
    doc = copy.deepcopy(BASE)
    doc["components"][1]["secrets"] = {"env_keys": ["K"], "K": SECRET}
    res = env.run("state", "import", "-", "--dry-run", input=json.dumps(doc))
    assert_refused(env, res, 2, "components[1].secrets: contains secret values")
    assert SECRET not in res.text
    assert (tree_bytes(env.root), db_content(env)) == before
