"""Hostile snapshots (issue 14): a state file names the local file a component came from
(`source_uri`), so it may name anything. Only a regular file, within the size limit, hashed as
a stream and starting as a WebAssembly component, ever becomes a component; and every field
Wassette's own reader requires is required here too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE, Env, Result, assert_refused, ok, tree_bytes, wassette_exe

BASE: dict[str, Any] = json.loads((CONFORMANCE / "state" / "wassette-written.json").read_text())
SECRET_TEXT = b"root:$6$s3cr3t-h4sh$abcdef:19000:0:99999:7:::\n"


@pytest.fixture
def seeded(env: Env) -> Env:
    ok(env.run("env", "set", "SEEDED=1"))
    return env


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_file(
    d: Path, source: Path | str, digest: str, name: str = "state.json", **extra: Any
) -> Path:
    """Wassette's own file, its first component said to come from `source` with `digest`."""
    doc = copy.deepcopy(BASE)
    first = doc["components"][0]
    first["source_uri"] = source if isinstance(source, str) else source.as_uri()
    first["wasm_sha256"] = digest
    first.update(extra)
    path = d / name
    path.write_text(json.dumps(doc))
    return path


def components(env: Env) -> list[str]:
    doc = json.loads(ok(env.run("component", "list", "-o", "json")).out)
    return [c["id"] for c in doc["components"]]


def blobs(env: Env) -> set[str]:
    root = env.root / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_not_adopted(env: Env, source_file: Path, digest: str) -> None:
    """Imported without the component (skipped with a warning); its bytes are nowhere."""
    r = ok(env.run("state", "import", str(source_file)))
    assert "Warning: skipped fetch_rs" in r.err
    assert "fetch_rs" not in components(env)
    assert digest not in blobs(env)
    assert not (env.component_dir / "fetch_rs.wasm").exists()


# ---------------------------------------------------------------- what source_uri may name


def test_a_text_file_with_its_own_hash_never_becomes_a_component(
    seeded: Env, tmp_path: Path
) -> None:
    """The attack: a state file naming a local secret with its hash (before: installed as a
    component, its bytes copied into the component dir and the blob store)."""
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET_TEXT)
    os.chmod(secret, 0o600)
    path = state_file(tmp_path, secret, sha(SECRET_TEXT))
    before = tree_bytes(seeded.root)
    r = seeded.run("state", "import", "--strict", str(path))
    assert_refused(seeded, r, code=2, contains="component 'fetch_rs'")
    assert tree_bytes(seeded.root) == before
    assert_not_adopted(seeded, path, sha(SECRET_TEXT))
    for found in seeded.root.rglob("*"):
        if found.is_file():
            assert SECRET_TEXT not in found.read_bytes(), found


def test_etc_passwd_never_becomes_a_component(seeded: Env, tmp_path: Path) -> None:
    passwd = Path("/etc/passwd")
    data = passwd.read_bytes()
    assert_not_adopted(seeded, state_file(tmp_path, passwd, sha(data)), sha(data))


def test_a_core_module_with_its_hash_never_becomes_a_component(seeded: Env, tmp_path: Path) -> None:
    module = tmp_path / "core.wasm"
    data = b"\0asm\x01\0\0\0"  # a valid, empty core module: not a component
    module.write_bytes(data)
    assert_not_adopted(seeded, state_file(tmp_path, module, sha(data)), sha(data))


def test_a_fifo_or_a_link_is_not_read(seeded: Env, tmp_path: Path) -> None:
    real = tmp_path / "real.wasm"
    data = fx.simple_component()
    real.write_bytes(data)
    link = tmp_path / "link.wasm"
    link.symlink_to(real)
    assert_not_adopted(seeded, state_file(tmp_path, link, sha(data)), sha(data))
    pipe = tmp_path / "pipe.wasm"
    os.mkfifo(pipe)  # nobody writes: a blocking open would hang the import
    assert_not_adopted(seeded, state_file(tmp_path, pipe, sha(data), "p.json"), sha(data))


def run_limited(env: Env, *args: str, memory: int) -> Result:
    """The CLI with at most `memory` bytes of address space."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    environ.update(
        WASSETTE_STATE_DB=str(env.db),
        WASSETTE_COMPONENT_DIR=str(env.component_dir),
        WASSETTE_SECRETS_DIR=str(env.secrets_dir),
        HOME=str(env.root / "home"),
        XDG_DATA_HOME=str(env.root / "xdg-data"),
        XDG_CONFIG_HOME=str(env.root / "xdg-config"),
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    proc = subprocess.run(
        [wassette_exe(), *args],
        capture_output=True,
        text=True,
        env=environ,
        preexec_fn=limit,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_a_huge_sparse_file_is_not_read_into_memory(seeded: Env, tmp_path: Path) -> None:
    """3 GiB (sparse: instant) that starts like a component: refused by its size, unread."""
    huge = tmp_path / "huge.wasm"
    header = fx.simple_component()
    with huge.open("wb") as f:
        f.write(header)
        f.truncate(3 << 30)
    path = state_file(tmp_path, huge, "ab" * 32)
    r = run_limited(seeded, "state", "import", str(path), memory=1 << 30)
    assert r.code == 0, r.err
    assert "Warning: skipped fetch_rs" in r.err
    assert "fetch_rs" not in components(seeded)


def test_the_component_a_file_names_is_still_restored_from_its_source(
    seeded: Env, tmp_path: Path
) -> None:
    """What `source_uri` is for: a backup restored where the original .wasm still is."""
    real = tmp_path / "fetch_rs.wasm"
    data = fx.simple_component()
    real.write_bytes(data)
    r = ok(seeded.run("state", "import", str(state_file(tmp_path, real, sha(data)))))
    assert f"wasm copied from {real.as_uri()}" in r.out
    assert "fetch_rs" in components(seeded)
    assert (seeded.component_dir / "fetch_rs.wasm").read_bytes() == data


# ---------------------------------------------------------------- fields Wassette requires


def without(*path: str | int) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return doc


@pytest.mark.parametrize(
    "path",
    [
        ("components", 0, "metadata"),
        ("components", 0, "metadata", "component_id"),
        ("components", 0, "metadata", "tool_names"),
        ("components", 0, "metadata", "created_at"),
        ("components", 0, "metadata", "function_identifiers"),
        ("components", 0, "metadata", "validation_stamp", "mtime"),
    ],
    ids=lambda p: ".".join(str(x) for x in p[2:]),
)
def test_a_file_without_a_field_wassette_requires_is_refused(
    seeded: Env, tmp_path: Path, path: tuple[str | int, ...]
) -> None:
    source = tmp_path / "state.json"
    source.write_text(json.dumps(without(*path)))
    before = tree_bytes(seeded.root)
    r = seeded.run("state", "import", str(source))
    where = "components[0]." + ".".join(str(p) for p in path[2:])
    assert_refused(seeded, r, code=2, contains=f"{where}: missing required field")
    assert tree_bytes(seeded.root) == before


def test_null_metadata_is_refused(seeded: Env, tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["components"][0]["metadata"] = None
    source = tmp_path / "state.json"
    source.write_text(json.dumps(doc))
    before = tree_bytes(seeded.root)
    r = seeded.run("state", "import", str(source))
    assert_refused(seeded, r, code=2, contains="components[0].metadata: expected a mapping")
    assert tree_bytes(seeded.root) == before


def test_what_wassettes_reader_takes_as_absent_may_be_absent(seeded: Env, tmp_path: Path) -> None:
    """`Option` fields: policy, secrets, content_hash (serde reads a missing one as None)."""
    doc = copy.deepcopy(BASE)
    for comp in doc["components"]:
        comp.pop("policy", None)
        comp.pop("secrets", None)
        comp["metadata"]["validation_stamp"].pop("content_hash", None)
    source = tmp_path / "state.json"
    source.write_text(json.dumps(doc))
    ok(seeded.run("state", "import", "--dry-run", str(source)))
