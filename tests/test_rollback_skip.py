"""A rollback never records a component whose bytes are gone: it skips and says so."""

from __future__ import annotations

import json
import shutil

from tests import wasm_fixtures as fx
from tests.conftest import Env


def test_rollback_skips_a_component_without_bytes(env: Env) -> None:
    wasm = env.root / "weather.wasm"
    fx.write_component(wasm, kind="weather")
    assert env.run("component", "attach", str(wasm)).code == 0
    assert env.run("env", "set", "A=1").code == 0
    assert env.run("component", "detach", "weather").code == 0
    assert env.run("env", "set", "A=2").code == 0
    shutil.rmtree(env.root / "blobs")
    wasm.unlink()
    result = env.run("state", "rollback", "--to", "tx:2", "--yes", "-o", "json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["skipped"] == [{"component_id": "weather", "reason": out["skipped"][0]["reason"]}]
    assert "not in the blob store" in out["skipped"][0]["reason"]
    assert "Warning: skipped weather" in result.err
    assert out["plan"] == ["set env A"]
    listed = json.loads(env.run("component", "list", "-o", "json").out)
    assert listed["total"] == 0
    assert env.run("state", "verify").code == 0
