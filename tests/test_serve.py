"""`wassette-state serve` (issue 12, point 3): the real Wassette 0.8.0 as a child on the store.

Each test runs the installed CLI's `serve` as a real process with the real binary, speaks MCP
to it as an agent would (its own client name), and reads the store's history: what the agent
changed through Wassette's built-in tools is recorded by `mcp:<client name>` with the tool call
as the command; what other wassette-state commands change is served at once; signals reach
Wassette and the exit status is its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, cli_history, ok, wassette_exe
from real_wassette import TOOL, HttpMcp, RealWassette, free_port
from wasm_fixtures import const_component

V1 = [("answer", 1)]


@dataclass
class Serving:
    proc: subprocess.Popen[str]
    url: str
    out: Path
    err: Path

    @property
    def log(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def environ(env: Env, wassette: RealWassette, **extra: str) -> dict[str, str]:
    """The CLI's environment with no Wassette URL set: a running `serve` is found by itself."""
    return env.environ(
        WASSETTE_STATE_WASSETTE_URL="",
        REAL_WASSETTE_CACHE=wassette.environ()["REAL_WASSETTE_CACHE"],
        **extra,
    )


@contextmanager
def serving(
    env: Env,
    wassette: RealWassette,
    *args: str,
    bin: str = str(TOOL),
    opts: tuple[str, ...] = (),
) -> Iterator[Serving]:
    (env.root / "home").mkdir(exist_ok=True)
    port = free_port()
    out, err = env.root / "serve.out", env.root / "serve.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [
                wassette_exe(),
                "serve",
                *opts,
                "--wassette-bin",
                bin,
                "--",
                "--bind-address",
                f"127.0.0.1:{port}",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            env=environ(env, wassette),
            cwd=env.root,
            text=True,
        )
    s = Serving(proc, f"http://127.0.0.1:{port}/mcp", out, err)
    try:
        deadline = time.monotonic() + 120
        while "Background component loading completed" not in s.log:
            assert proc.poll() is None, s.log[-3000:]
            assert time.monotonic() < deadline, s.log[-3000:]
            time.sleep(0.05)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(env: Env, wassette: RealWassette, *args: str) -> Any:
    proc = subprocess.run(
        [wassette_exe(), *args],
        capture_output=True,
        text=True,
        env=environ(env, wassette),
        cwd=env.root,
        timeout=120,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def agent(s: Serving, name: str = "agent-smith") -> HttpMcp:
    client = HttpMcp(s.url, name)
    client.initialize()
    return client


def recorded(env: Env, actor: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """The history rows by `actor`, once there are `count` transactions of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in cli_history(env) if r["actor"] == actor]
        if len({r["tx"] for r in rows}) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_agent_changes_are_recorded_by_client_name(env: Env, wassette: RealWassette) -> None:
    wasm = env.root / "calc.wasm"
    wasm.write_bytes(const_component(V1))
    ok(env.run("component", "attach", str(wasm)))
    with serving(env, wassette) as s:
        client = agent(s)
        assert client.call("answer")["structuredContent"]["result"] == 1
        res = client.call(
            "grant-network-permission",
            {"component_id": "calc", "details": {"host": "api.example.com"}},
        )
        assert not res.get("isError"), res
        rows = recorded(env, "mcp:agent-smith")
        assert [r["type"] for r in rows] == ["policy.attached"], rows
        assert rows[0]["kind"] == "sync"
        assert rows[0]["command"] == (
            "grant-network-permission component_id=calc host=api.example.com"
        )
        assert "api.example.com" in rows[0]["data"]["policy_content"]
        # a new component the agent loads from outside the component dir
        other = env.root / "other.wasm"
        other.write_bytes(const_component([("other", 5)]))
        res = client.call("load-component", {"path": f"file://{other}"})
        assert not res.get("isError"), res
        rows = recorded(env, "mcp:agent-smith", 2)
        loaded = [r for r in rows if r["type"] == "component.attached"]
        assert [r["component_id"] for r in loaded] == ["other"], rows
        assert loaded[0]["command"] == f"load-component path=file://{other}"
        # rollback takes the agent's grant away, at once, and its next call fails
        before = max(r["tx"] for r in cli_history(env) if r["actor"] != "mcp:agent-smith")
        run(env, wassette, "rollback", "--to", f"tx:{before}", "--yes")
        gone = client.call("other")
        assert gone.get("isError") and "Tool not found" in json.dumps(gone), gone
        policy = client.call("get-policy", {"component_id": "calc"})
        assert "api.example.com" not in json.dumps(policy), policy
        # what wassette-state told Wassette is never recorded as the agent's (nor anyone's)
        time.sleep(1)
        assert [r for r in cli_history(env) if r["kind"] == "sync"] == [
            r for r in cli_history(env) if r["actor"] == "mcp:agent-smith"
        ]
    assert s.proc.returncode == 128 + signal.SIGTERM or s.proc.returncode == 0


def test_cli_changes_are_served_while_serve_runs(env: Env, wassette: RealWassette) -> None:
    with serving(env, wassette) as s:
        doc = json.loads((env.root / "serve.json").read_text())  # beside the store's db
        assert doc["url"] == s.url and doc["pid"] == s.proc.pid
        wasm = env.root / "calc.wasm"
        wasm.write_bytes(const_component(V1))
        res = run(env, wassette, "component", "attach", str(wasm))
        assert res.stderr == "", res.stderr
        assert agent(s).call("answer")["structuredContent"]["result"] == 1
        run(env, wassette, "component", "detach", "calc")
        assert agent(s).call("answer").get("isError")
    assert not (env.root / "serve.json").exists()


def test_drift_before_the_start_is_not_the_agents(env: Env, wassette: RealWassette) -> None:
    wasm = env.root / "calc.wasm"
    wasm.write_bytes(const_component(V1))
    ok(env.run("component", "attach", str(wasm)))
    wassette.ok("permission", "grant", "network", "calc", "by-hand.example.com")
    with serving(env, wassette) as s:
        assert "drift found before Wassette started" in s.log
        rows = cli_history(env)
        assert rows[-1]["actor"] == "filesystem" and rows[-1]["type"] == "policy.attached"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_reach_wassette_and_its_status_is_ours(
    env: Env, wassette: RealWassette, sig: int
) -> None:
    with serving(env, wassette) as s:
        child = json.loads((env.root / "serve.json").read_text())["child"]
        s.proc.send_signal(sig)
        code = s.proc.wait(timeout=30)
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    assert code in (0, 128 + sig), (code, s.log[-2000:])


def test_exit_status_is_the_childs(env: Env, wassette: RealWassette) -> None:
    fake = env.root / "fake-wassette"
    fake.write_text(
        '#!/bin/sh\necho "args: $*"\necho "Background component loading completed"\nexit 7\n'
    )
    fake.chmod(0o755)
    proc = subprocess.run(
        [wassette_exe(), "serve", "--wassette-bin", str(fake), "--", "--disable-builtin-tools"],
        capture_output=True,
        text=True,
        env=environ(env, wassette),
        cwd=env.root,
        timeout=60,
    )
    assert proc.returncode == 7, proc
    args = proc.stdout.splitlines()[0]
    assert args.startswith(f"args: serve --component-dir {env.component_dir} --env-file ")
    assert args.endswith(" --disable-builtin-tools")


def test_missing_wassette_program_is_refused(env: Env, wassette: RealWassette) -> None:
    proc = subprocess.run(
        [wassette_exe(), "serve", "--wassette-bin", str(env.root / "nope")],
        capture_output=True,
        text=True,
        env=environ(env, wassette),
        cwd=env.root,
        timeout=60,
    )
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("Error: cannot start ") and len(proc.stderr.splitlines()) == 1


def test_hand_made_change_is_recorded_as_filesystem_and_served(
    env: Env, wassette: RealWassette
) -> None:
    with serving(env, wassette) as s:
        client = agent(s)
        assert "handmade" not in client.tool_names()
        # by hand, not through Wassette: a new component in the dir
        (env.component_dir / "handmade.wasm").write_bytes(const_component([("handmade", 9)]))
        rows = recorded(env, "filesystem")
        assert [(r["type"], r["component_id"]) for r in rows] == [
            ("paths.set", None),  # the store's first transaction names its dirs
            ("component.attached", "handmade"),
        ]
        assert rows[0]["command"] == "state sync"
        deadline = time.monotonic() + 30  # the watch records it, then serve tells Wassette
        while client.call("handmade").get("isError") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.call("handmade")["structuredContent"]["result"] == 9
        assert "recorded tx" in s.err.read_text()


@pytest.mark.parametrize("keep", [False, True])
def test_agent_unload_and_secret_values(env: Env, wassette: RealWassette, keep: bool) -> None:
    wasm = env.root / "calc.wasm"
    wasm.write_bytes(const_component(V1))
    ok(env.run("component", "attach", str(wasm)))
    ok(env.run("secret", "set", "calc", "TOKEN=t0ken"))
    secrets = env.secrets_dir / "calc.yaml"
    opts = ("--keep-secret-values",) if keep else ()
    with serving(env, wassette, opts=opts) as s:
        res = agent(s).call("unload-component", {"id": "calc"})
        assert not res.get("isError"), res
        rows = recorded(env, "mcp:agent-smith")
        assert [r["type"] for r in rows] == ["component.detached"], rows
        assert rows[0]["command"] == "unload-component id=calc"
    assert secrets.exists() == keep
