"""The real Wassette 0.8.0 reads what this project writes: the fixture itself, end to end."""

from __future__ import annotations

from conftest import Env, ok
from wasm_fixtures import write_component


def test_wassette_serves_a_component_we_attached(env: Env, wassette) -> None:  # type: ignore[no-untyped-def]
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    listed = wassette.json("component", "list")
    assert [c["id"] for c in listed["components"]] == ["fetch"]
    with wassette.mcp() as client:
        assert "fetch" in client.tool_names()
