"""The real Wassette 0.8.0 reads what this project writes: the fixture itself, end to end."""

from __future__ import annotations

import json

from conftest import Env, ok
from real_wassette import wait_for_tool
from wasm_fixtures import write_component


def test_wassette_serves_a_component_we_attached(env: Env, wassette) -> None:  # type: ignore[no-untyped-def]
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    listed = wassette.json("component", "list")
    assert [c["id"] for c in listed["components"]] == ["fetch"]
    with wassette.mcp() as client:
        assert "fetch" in wait_for_tool(client, "fetch")
        # the fixture's body is `unreachable`: the trap proves Wassette ran our bytes
        result = client.call("fetch", {"url": "x"})
        assert "unreachable" in json.dumps(result), result
