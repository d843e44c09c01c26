"""`wassette component …` through the installed CLI: attach/detach, the files it materializes in
Wassette's layout, the blob store, and the list/inspect output shapes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tests import wasm_fixtures as fx
from tests.conftest import BOTH, Env, cli_history, ok

STAMP_MTIME = 1_700_000_000
POLICY = (
    'version: "1.0"\ndescription: test\n'
    "permissions:\n  network:\n    allow:\n    - host: api.example.com\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wasm(path: Path, kind: str = "weather", mtime: int | None = STAMP_MTIME) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = fx.write_component(path, kind=kind)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return data


def component_files(env: Env, cid: str) -> dict[str, Path]:
    d = env.component_dir
    return {
        "wasm": d / f"{cid}.wasm",
        "metadata": d / f"{cid}.metadata.json",
        "policy": d / f"{cid}.policy.yaml",
        "policy_meta": d / f"{cid}.policy.meta.json",
    }


def blob_path(env: Env, digest: str) -> Path:
    return env.data_dir / "blobs" / "sha256" / digest[:2] / digest


# ---------------------------------------------------------------------------------------------


@BOTH
def test_attach_by_path_materializes_wassette_layout(env: Env) -> None:
    src = env.root / "inputs" / "weather.wasm"
    data = make_wasm(src)
    before = int(time.time())
    # A relative path (the CLI runs in env.root) is resolved before it is recorded.
    res = ok(env.run("component", "attach", "inputs/weather.wasm", "-o", "json"))
    after = int(time.time()) + 1

    doc = json.loads(res.out)
    assert doc["status"] == "ok" and isinstance(doc["tx"], int)
    types = [e["type"] for e in doc["events"]]
    assert types[-1] == "component.attached"
    attached = doc["events"][-1]
    assert attached["component_id"] == "weather"  # default id = file stem
    assert attached["data"]["source_uri"] == src.resolve().as_uri()
    assert attached["data"]["wasm_sha256"] == sha(data)

    files = component_files(env, "weather")
    # Only the component's own files: no policy yet.
    assert sorted(p.name for p in env.component_dir.iterdir()) == [
        "weather.metadata.json",
        "weather.wasm",
    ]
    assert files["wasm"].read_bytes() == data

    meta = json.loads(files["metadata"].read_text())
    assert set(meta) == {
        "component_id",
        "tool_schemas",
        "function_identifiers",
        "tool_names",
        "validation_stamp",
        "created_at",
    }
    assert meta["component_id"] == "weather"
    assert meta["tool_names"] == [t["name"] for t in meta["tool_schemas"]]
    assert "component_weather_weather_get-weather" in meta["tool_names"]
    assert len(meta["function_identifiers"]) == len(meta["tool_names"])
    for ident in meta["function_identifiers"]:
        assert set(ident) == {"package_name", "interface_name", "function_name"}
    for tool in meta["tool_schemas"]:
        assert {"name", "description", "inputSchema"} <= set(tool)
        assert tool["inputSchema"]["type"] == "object"
    assert meta["validation_stamp"] == {
        "file_size": len(data),
        "mtime": STAMP_MTIME,
        "content_hash": sha(data),
    }
    assert isinstance(meta["created_at"], int) and before <= meta["created_at"] <= after
    # The materialized wasm carries the stamp's mtime, so Wassette's stamp check passes.
    assert int(files["wasm"].stat().st_mtime) == STAMP_MTIME
    # The metadata file is the event's metadata, verbatim.
    assert meta == attached["data"]["metadata"]

    blob = blob_path(env, sha(data))
    assert blob.is_file() and blob.read_bytes() == data


def test_attach_by_file_uri_with_id_and_aliases(env: Env) -> None:
    src = env.root / "dir with space" / "fetch%rs.wasm"
    data = make_wasm(src, kind="simple")
    uri = src.resolve().as_uri()
    assert "%20" in uri and "%25" in uri  # percent-encoded path, decoded by the CLI

    res = ok(env.run("component", "load", uri, "--id", "fetcher"))
    assert "attached fetcher" in res.out
    files = component_files(env, "fetcher")
    assert files["wasm"].read_bytes() == data
    assert json.loads(files["metadata"].read_text())["component_id"] == "fetcher"
    assert not (env.component_dir / "fetch%rs.wasm").exists()

    ev = cli_history(env, "--type", "component.attached")
    assert [(e["component_id"], e["data"]["source_uri"]) for e in ev] == [("fetcher", uri)]

    res = ok(env.run("component", "unload", "fetcher"))
    assert "detached fetcher" in res.out
    assert not files["wasm"].exists() and not files["metadata"].exists()
    assert [e["type"] for e in cli_history(env, "--component", "fetcher")] == [
        "component.attached",
        "component.detached",
    ]


@BOTH
def test_reattach_same_bytes_is_no_change_new_bytes_keep_policy_and_secrets(env: Env) -> None:
    src = env.root / "inputs" / "weather.wasm"
    first = make_wasm(src)
    pol = env.root / "inputs" / "weather.policy.yaml"
    pol.write_text(POLICY)
    ok(env.run("component", "attach", str(src), "--policy", str(pol)))
    res = ok(env.run("secret", "set", "weather", "API_KEY=k1", "-o", "json"))
    last_seq = json.loads(res.out)["events"][-1]["seq"]

    # Same bytes: nothing to record, but the files are put back if someone removed them.
    files = component_files(env, "weather")
    files["wasm"].unlink()
    res = ok(env.run("component", "attach", str(src)))
    assert "no change" in res.out
    assert files["wasm"].read_bytes() == first
    assert int(files["wasm"].stat().st_mtime) == STAMP_MTIME
    res = ok(env.run("component", "attach", str(src), "--policy", str(pol), "-o", "json"))
    assert json.loads(res.out) == {"status": "ok", "tx": None, "events": []}

    second = make_wasm(src, kind="mixed", mtime=STAMP_MTIME + 100)
    assert second != first
    res = ok(env.run("component", "attach", str(src), "-o", "json"))
    assert [e["type"] for e in json.loads(res.out)["events"]] == ["component.attached"]
    events = cli_history(env)
    # The identical re-attaches appended nothing: the new bytes are the very next event.
    assert [e["seq"] for e in events][-2:] == [last_seq, last_seq + 1]
    assert events[-1]["data"]["wasm_sha256"] == sha(second)

    assert files["wasm"].read_bytes() == second
    assert int(files["wasm"].stat().st_mtime) == STAMP_MTIME + 100
    meta = json.loads(files["metadata"].read_text())
    assert meta["validation_stamp"]["content_hash"] == sha(second)
    assert "zeta" in meta["tool_names"]
    # Policy and secret keys survive a re-attach of new bytes.
    assert files["policy"].read_text() == POLICY
    listed = json.loads(ok(env.run("component", "list", "-o", "json")).out)
    assert listed["components"] == [
        {
            "id": "weather",
            "tools_count": len(meta["tool_names"]),
            "policy": True,
            "secret_keys": ["API_KEY"],
        }
    ]
    # Both versions' bytes stay in the blob store.
    assert blob_path(env, sha(first)).read_bytes() == first
    assert blob_path(env, sha(second)).read_bytes() == second


@BOTH
def test_detach_removes_files_and_secrets_keeps_blob(env: Env) -> None:
    src = env.root / "inputs" / "weather.wasm"
    data = make_wasm(src)
    pol = env.root / "inputs" / "p.yaml"
    pol.write_text(POLICY)
    ok(env.run("component", "attach", str(src), "--policy", str(pol)))
    ok(env.run("secret", "set", "weather", "TOKEN=abc"))
    files = component_files(env, "weather")
    assert all(p.is_file() for p in files.values())
    secrets_file = env.secrets_dir / "weather.yaml"
    secret_bytes = secrets_file.read_bytes()

    res = ok(env.run("component", "detach", "weather", "-o", "json"))
    assert [e["type"] for e in json.loads(res.out)["events"]] == ["component.detached"]
    assert not any(p.exists() for p in files.values())
    assert list(env.component_dir.iterdir()) == []
    assert blob_path(env, sha(data)).read_bytes() == data
    # The values leave with the component (a later one under this id inherits none) ...
    assert not secrets_file.exists()
    # ... unless asked to stay, as Wassette's unload leaves them.
    ok(env.run("state", "undo", "--yes"))
    ok(env.run("secret", "set", "weather", "TOKEN=abc"))
    ok(env.run("component", "detach", "weather", "--keep-secret-values"))
    assert secrets_file.read_bytes() == secret_bytes

    assert ok(env.run("component", "list")).out.strip() == "no components"
    assert json.loads(ok(env.run("component", "list", "-o", "json")).out) == {
        "components": [],
        "total": 0,
    }


@BOTH
def test_list_and_inspect_shapes(env: Env) -> None:
    a = env.root / "inputs" / "zeta.wasm"
    b = env.root / "inputs" / "alpha.wasm"
    make_wasm(a, kind="weather")
    b_data = make_wasm(b, kind="documented")
    pol = env.root / "inputs" / "p.yaml"
    pol.write_text(POLICY)
    ok(env.run("component", "attach", str(a), "--policy", str(pol)))
    ok(env.run("component", "attach", str(b)))
    ok(env.run("secret", "set", "zeta", "B_KEY=1", "A_KEY=2"))

    listed = json.loads(ok(env.run("component", "list", "-o", "json")).out)
    assert listed == {
        "components": [
            {"id": "alpha", "tools_count": 3, "policy": False, "secret_keys": []},
            {"id": "zeta", "tools_count": 2, "policy": True, "secret_keys": ["A_KEY", "B_KEY"]},
        ],
        "total": 2,
    }
    text = ok(env.run("component", "list")).out.splitlines()
    assert text[0].split() == ["ID", "TOOLS", "POLICY", "SECRET", "KEYS"]
    assert text[1].split() == ["alpha", "3", "no"]
    assert text[2].split() == ["zeta", "2", "yes", "A_KEY,B_KEY"]
    assert ok(env.run("component", "ls", "-o", "yaml")).out.startswith("components:")

    inspected = json.loads(ok(env.run("component", "inspect", "alpha", "-o", "json")).out)
    meta = json.loads((env.component_dir / "alpha.metadata.json").read_text())
    assert inspected == {**meta, "source_uri": b.resolve().as_uri(), "wasm_sha256": sha(b_data)}
    # The documented component's descriptions come from its package-docs section.
    descriptions = {t["name"]: t["description"] for t in inspected["tool_schemas"]}
    assert descriptions["add"] == "Add two numbers."

    text = ok(env.run("component", "inspect", "alpha")).out
    assert sha(b_data) in text
    for name in meta["tool_names"]:
        assert name in text


def test_attach_with_policy_writes_policy_files(env: Env) -> None:
    src = env.root / "inputs" / "weather.wasm"
    make_wasm(src)
    pol = env.root / "inputs" / "weather.policy.yaml"
    pol.write_text(POLICY)
    before = int(time.time())
    res = ok(
        env.run(
            "component", "attach", str(src), "--id", "wx", "--policy", pol.as_uri(), "-o", "json"
        )
    )
    after = int(time.time()) + 1
    events = json.loads(res.out)["events"]
    assert [e["type"] for e in events][-2:] == ["component.attached", "policy.attached"]
    pa = events[-1]["data"]
    assert pa["component_id"] == "wx"
    assert pa["policy_content"] == POLICY
    assert pa["source_uri"] == pol.resolve().as_uri()

    files = component_files(env, "wx")
    assert files["policy"].read_bytes() == POLICY.encode()
    meta = json.loads(files["policy_meta"].read_text())
    assert meta == {"attached_at": pa["attached_at"], "source_uri": pol.resolve().as_uri()}
    assert before <= meta["attached_at"] <= after
    assert ok(env.run("policy", "get", "wx")).out == POLICY
