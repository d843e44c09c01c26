"""Ids that Wassette would map to the same secrets file are refused, in attach and import."""

from __future__ import annotations

import json

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, tree_bytes


def test_attach_refuses_an_id_sharing_a_secrets_file(env: Env) -> None:
    wasm = env.root / "w.wasm"
    fx.write_component(wasm, kind="weather")
    assert env.run("component", "attach", str(wasm), "--id", "a_b").code == 0
    before = tree_bytes(env.root)
    result = env.run("component", "attach", str(wasm), "--id", "a__b")
    assert_refused(env, result, 2, "would share the secrets file a_b.yaml with component 'a_b'")
    assert tree_bytes(env.root) == before


def test_import_refuses_ids_sharing_a_secrets_file(env: Env) -> None:
    wasm = env.root / "w.wasm"
    fx.write_component(wasm, kind="weather")
    assert env.run("component", "attach", str(wasm), "--id", "x.y").code == 0
    exported = env.root / "out.json"
    assert env.run("state", "export", str(exported)).code == 0
    doc = json.loads(exported.read_text())
    twin = json.loads(json.dumps(doc["components"][0]))
    twin["component_id"] = twin["metadata"]["component_id"] = "x_y"
    doc["components"].append(twin)
    exported.write_text(json.dumps(doc))
    # 'x.y' keeps its dot and 'x_y' stays 'x_y': different files, so this imports.
    result = env.run("state", "import", str(exported))
    assert result.code == 0, result.err
    doc["components"][1]["component_id"] = doc["components"][1]["metadata"]["component_id"] = "x__y"
    exported.write_text(json.dumps(doc))
    before = tree_bytes(env.root)
    clash = env.run("state", "import", str(exported))
    assert_refused(env, clash, 2, "would share the secrets file x_y.yaml")
    assert tree_bytes(env.root) == before
