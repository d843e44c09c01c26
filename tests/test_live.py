"""A running Wassette serves every change at once (issue 12, point 1; DESIGN §9).

Each test starts the real Wassette 0.8.0 (`serve --streamable-http` on a free 127.0.0.1 port)
on the test's own dirs, runs the installed CLI with `WASSETTE_STATE_WASSETTE_URL` (or config.toml's
`bind_address`, or a restart command) and then speaks MCP to that Wassette itself: right after
the command exits, with no waiting and no retry, the new state is what Wassette serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, Result, assert_refused, cli_history, ok, tree_bytes
from real_wassette import HttpMcp, RealWassette, Served, free_port, wait_for_tool
from test_wassette_env import env_probe
from wasm_fixtures import const_component

V1 = [("answer", 1)]
V2 = [("answer", 2), ("extra", 7)]


def live(env: Env, url: str, *args: str, **extra: str) -> Result:
    return env.run(*args, extra_env={"WASSETTE_STATE_WASSETTE_URL": url, **extra})


def write(env: Env, name: str, funcs: list[tuple[str, int]]) -> Path:
    path = env.root / f"{name}.wasm"
    path.write_bytes(const_component(funcs))
    return path


def answer(client: HttpMcp, tool: str) -> Any:
    """A tool's answer; fails the test when the call fails."""
    result = client.call(tool)
    assert not result.get("isError"), result
    return result["structuredContent"]["result"]


def gone(client: HttpMcp, tool: str) -> None:
    assert tool not in client.tool_names()
    result = client.call(tool)
    assert result.get("isError"), result
    assert "Tool not found" in json.dumps(result), result


def quiet(res: Result) -> Result:
    """Exit 0, and nothing on stderr: Wassette was told without a word."""
    ok(res)
    assert res.err == "", res.err
    return res


@pytest.fixture
def served(env: Env, wassette: RealWassette) -> Any:
    with wassette.serve() as s:
        yield s


# ------------------------------------------------------------------ what Wassette serves


def test_attached_component_is_callable_when_the_command_exits(env: Env, served: Served) -> None:
    client = served.client()
    assert "answer" not in client.tool_names()
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    assert answer(client, "answer") == 1  # the same session, no wait
    assert answer(served.client(), "answer") == 1  # and a new one


def test_reattached_bytes_serve_their_new_function(env: Env, served: Served) -> None:
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    client = served.client()
    assert answer(client, "answer") == 1
    gone(client, "extra")
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V2))))
    assert answer(client, "extra") == 7
    assert answer(client, "answer") == 2


def test_detached_component_disappears(env: Env, served: Served) -> None:
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    client = served.client()
    assert answer(client, "answer") == 1
    quiet(live(env, served.url, "component", "detach", "calc"))
    gone(client, "answer")
    # Wassette's unload deleted nothing the store still needs: no drift, the secrets are kept
    assert not list(env.component_dir.glob("calc.*"))
    assert "no drift" in ok(live(env, served.url, "state", "sync")).out


def test_rollback_and_undo_are_served(env: Env, served: Served) -> None:
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V2))))
    client = served.client()
    assert answer(client, "extra") == 7
    quiet(live(env, served.url, "rollback", "--to", "tx:1", "--yes"))
    assert answer(client, "answer") == 1
    gone(client, "extra")
    quiet(live(env, served.url, "undo", "--yes"))
    assert answer(client, "extra") == 7
    quiet(live(env, served.url, "rollback", "--to", "seq:0", "--yes"))
    gone(client, "answer")


def test_import_is_served(env: Env, served: Served) -> None:
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    state = env.root / "state.json"
    ok(env.run("export", str(state)))
    quiet(live(env, served.url, "component", "detach", "calc"))
    client = served.client()
    gone(client, "answer")
    quiet(live(env, served.url, "import", str(state)))
    assert answer(client, "answer") == 1


def test_sync_of_a_hand_made_change_is_served(env: Env, served: Served) -> None:
    quiet(live(env, served.url, "component", "attach", str(write(env, "calc", V1))))
    client = served.client()
    assert answer(client, "answer") == 1
    # by hand: new bytes, and Wassette's stale precompiled copy removed
    (env.component_dir / "calc.wasm").write_bytes(const_component(V2))
    (env.component_dir / "calc.cwasm").unlink()
    assert answer(client, "answer") == 1  # Wassette does not notice
    res = ok(live(env, served.url, "state", "sync"))
    assert "recorded" in res.out and res.err == ""
    assert answer(client, "extra") == 7


# ------------------------------------------------------------------ policy and secrets

PROBE_ENV = {"GREETING": "hello", "OTHER": "other"}


def probe(client: HttpMcp) -> dict[str, str]:
    return dict(answer(client, "env"))


@pytest.fixture
def probe_served(env: Env, wassette: RealWassette) -> Any:
    """Wassette with GREETING and OTHER in its own environment (what a policy may allow)."""
    with wassette.serve(**PROBE_ENV) as s:
        wasm = env.root / "envprobe.wasm"
        wasm.write_bytes(env_probe())
        policy = env.root / "probe.policy.yaml"
        policy.write_text('version: "1.0"\npermissions:\n  environment:\n    allow:\n')
        policy.write_text(policy.read_text() + "      - key: GREETING\n")
        quiet(live(env, s.url, "component", "attach", str(wasm), "--policy", str(policy)))
        yield s


def test_grant_and_revoke_take_effect(env: Env, probe_served: Served) -> None:
    url = probe_served.url
    client = probe_served.client()
    assert probe(client) == {"GREETING": "hello"}
    quiet(live(env, url, "permission", "grant", "environment-variable", "envprobe", "OTHER"))
    assert probe(client) == {"GREETING": "hello", "OTHER": "other"}
    quiet(live(env, url, "permission", "revoke", "environment-variable", "envprobe", "GREETING"))
    assert probe(client) == {"OTHER": "other"}
    # no policy at all: Wassette 0.8.0 then gives its whole environment (a reload alone would
    # keep the old policy in memory; reset-permission drops it)
    quiet(live(env, url, "policy", "detach", "envprobe"))
    seen = probe(client)
    assert seen["GREETING"] == "hello" and seen["OTHER"] == "other"
    policy = env.root / "only-other.yaml"
    policy.write_text(
        'version: "1.0"\npermissions:\n  environment:\n    allow:\n    - key: OTHER\n'
    )
    quiet(live(env, url, "policy", "attach", "envprobe", str(policy)))
    assert probe(client) == {"OTHER": "other"}
    quiet(live(env, url, "rollback", "--to", "tx:1", "--yes"))
    assert probe(client) == {"GREETING": "hello"}


def test_secrets_are_served(env: Env, probe_served: Served) -> None:
    url = probe_served.url
    client = probe_served.client()
    quiet(live(env, url, "secret", "set", "envprobe", "API_TOKEN=t0ken"))
    assert probe(client) == {"GREETING": "hello", "API_TOKEN": "t0ken"}
    quiet(live(env, url, "secret", "set", "envprobe", "API_TOKEN=rotated"))
    assert probe(client)["API_TOKEN"] == "rotated"
    quiet(live(env, url, "secret", "delete", "envprobe", "API_TOKEN"))
    assert probe(client) == {"GREETING": "hello"}


# ------------------------------------------------------------------ where Wassette is


def test_discovered_from_config_toml_bind_address(env: Env, wassette: RealWassette) -> None:
    port = free_port()
    config = env.root / "xdg-config" / "wassette" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'bind_address = "127.0.0.1:{port}"\n')
    with wassette.serve(port=0) as s:  # no flag: Wassette listens where config.toml says
        assert s.port == port
        # no URL given (not even 'off'): the CLI reads the same config.toml
        res = env.run(
            "component",
            "attach",
            str(write(env, "calc", V1)),
            extra_env={"WASSETTE_STATE_WASSETTE_URL": ""},
        )
        quiet(res)
        assert answer(s.client(), "answer") == 1


def test_unreachable_wassette_warns_and_keeps_the_change(env: Env) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    res = ok(live(env, url, "component", "attach", str(write(env, "calc", V1))))
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: recorded, but Wassette at "), lines
    assert url in lines[0] and "WASSETTE_STATE_WASSETTE_URL" in lines[0]
    assert [e["type"] for e in cli_history(env)][-1] == "component.attached"
    assert (env.component_dir / "calc.wasm").exists()
    # JSON output stays clean on stdout
    res = ok(live(env, url, "-o", "json", "component", "detach", "calc"))
    assert json.loads(res.out)["status"] == "ok" and "Warning" in res.err


def test_not_configured_says_so_in_one_line(env: Env) -> None:
    res = ok(
        env.run(
            "component",
            "attach",
            str(write(env, "calc", V1)),
            extra_env={"WASSETTE_STATE_WASSETTE_URL": ""},
        )
    )
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Note: no running Wassette was told"), lines
    # 'off' says there is none: nothing said
    assert quiet(env.run("component", "detach", "calc"))
    # a command that changes nothing says nothing
    res = ok(env.run("history", extra_env={"WASSETTE_STATE_WASSETTE_URL": ""}))
    assert res.err == ""


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/mcp", "http://", "127.0.0.1:9001", "http://127.0.0.1:99999/mcp"],
)
def test_bad_url_is_refused_before_anything_is_recorded(env: Env, url: str) -> None:
    ok(env.run("env", "set", "A=1"))
    before = tree_bytes(env.root)
    res = live(env, url, "component", "attach", str(write(env, "calc", V1)))
    assert_refused(env, res, 2, "Wassette URL")
    after = tree_bytes(env.root)
    after.pop("calc.wasm")  # the test's own input file
    before.pop("calc.wasm", None)
    assert after == before


def test_bad_bind_address_in_config_toml_is_refused(env: Env) -> None:
    config = env.root / "xdg-config" / "wassette" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('bind_address = "nowhere"\n')
    res = env.run("env", "set", "A=1", extra_env={"WASSETTE_STATE_WASSETTE_URL": ""})
    assert_refused(env, res, 2, "bind_address")
    assert not env.db.exists()


def test_env_change_needs_a_restart_and_says_so(env: Env, served: Served) -> None:
    res = ok(live(env, served.url, "env", "set", "LEVEL=debug"))
    lines = res.err.splitlines()
    assert len(lines) == 1 and "only when it starts" in lines[0] and "LEVEL" in lines[0], lines


# ------------------------------------------------------------------ the restart command

RESTART = """\
#!/bin/sh
# Restart the Wassette that serves this store as `wassette-state start-command` says, and
# return once it has loaded the store's components.
set -e
cd "$SITE"
if [ -f wassette.pid ]; then
    pid=$(cat wassette.pid)
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fi
line=$(wassette-state start-command)
: > wassette.log
(eval "exec env $line --streamable-http --bind-address 127.0.0.1:$PORT" >> wassette.log 2>&1) &
echo $! > wassette.pid
i=0
until grep -q "Background component loading completed" wassette.log; do
    i=$((i + 1)); [ $i -lt 2400 ] || { echo "wassette did not start" >&2; exit 1; }
    sleep 0.05
done
echo restarted >&2
"""


@pytest.fixture
def restart(env: Env, wassette: RealWassette) -> Any:
    """The environment of a CLI whose restart command (re)starts a real Wassette on the store,
    and that Wassette's endpoint."""
    from real_wassette import TOOL

    port = free_port()
    bin_dir = env.root / "bin"
    bin_dir.mkdir()
    (bin_dir / "wassette").symlink_to(TOOL)
    script = env.root / "restart-wassette"
    script.write_text(RESTART)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    extra = {
        "WASSETTE_STATE_RESTART_COMMAND": str(script),
        "SITE": str(env.root),
        "PORT": str(port),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REAL_WASSETTE_CACHE": wassette.environ()["REAL_WASSETTE_CACHE"],
        "GREETING": "from the process",
    }
    yield extra, f"http://127.0.0.1:{port}/mcp"
    pid = env.root / "wassette.pid"
    if pid.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.read_text()), signal.SIGTERM)


def test_restart_command_serves_changes_without_an_endpoint(env: Env, restart: Any) -> None:
    extra, url = restart
    extra = {**extra, "WASSETTE_STATE_WASSETTE_URL": ""}
    res = ok(env.run("component", "attach", str(write(env, "calc", V1)), extra_env=extra))
    assert res.err == "restarted\n", res.err  # the script's own output, on stderr
    client = HttpMcp(url)
    client.initialize()
    assert answer(client, "answer") == 1
    res = ok(env.run("component", "attach", str(write(env, "calc", V2)), extra_env=extra))
    assert res.err == "restarted\n", res.err
    client = HttpMcp(url)
    client.initialize()
    assert answer(client, "extra") == 7


def test_restart_command_serves_env_and_an_unreachable_endpoint(env: Env, restart: Any) -> None:
    extra, url = restart
    extra = {**extra, "WASSETTE_STATE_WASSETTE_URL": url}
    wasm = env.root / "envprobe.wasm"
    wasm.write_bytes(env_probe())
    # nothing listens yet: the MCP call fails, so the restart command starts Wassette
    res = ok(env.run("component", "attach", str(wasm), extra_env=extra))
    assert res.err == "restarted\n", res.err
    # reachable now: a grant is one MCP call, no restart
    res = ok(
        env.run(
            "permission", "grant", "environment-variable", "envprobe", "GREETING", extra_env=extra
        )
    )
    assert res.err == "", res.err
    client = HttpMcp(url)
    client.initialize()
    assert probe(client) == {"GREETING": "from the process"}
    # the environment is read at start only: an env change runs the restart command
    res = ok(env.run("env", "set", "GREETING=from the store", extra_env=extra))
    assert res.err == "restarted\n", res.err
    client = HttpMcp(url)
    client.initialize()
    assert probe(client) == {"GREETING": "from the store"}


def test_failing_restart_command_warns(env: Env) -> None:
    res = ok(
        env.run(
            "env",
            "set",
            "A=1",
            extra_env={
                "WASSETTE_STATE_WASSETTE_URL": "",
                "WASSETTE_STATE_RESTART_COMMAND": "exit 3",
            },
        )
    )
    lines = res.err.splitlines()
    assert len(lines) == 1 and "exited with status 3" in lines[0], lines
    assert "WASSETTE_STATE_RESTART_COMMAND" in lines[0]


# ------------------------------------------------------------------ the MCP client itself


def test_client_speaks_json_answers_without_sessions(env: Env, wassette: RealWassette) -> None:
    """Wassette's other answer style: plain JSON, stateless (no Mcp-Session-Id)."""
    with wassette.serve("--json-response", "true", "--legacy-sessions", "false") as s:
        quiet(live(env, s.url, "component", "attach", str(write(env, "calc", V1))))
        assert answer(s.client(), "answer") == 1
        quiet(live(env, s.url, "component", "detach", "calc"))
        gone(s.client(), "answer")


def test_client_starts_a_new_session_when_wassette_restarted(
    env: Env, wassette: RealWassette
) -> None:
    from wassette_state.store.live import mcp

    quiet(env.run("component", "attach", str(write(env, "calc", V1))))
    with wassette.serve() as first:
        port = first.port
        client = mcp.Client(first.url)
        client.initialize()
        old = client.session
        assert old and "answer" in wait_for_tool(client, "answer")
    with wassette.serve(port=port):  # same address, a Wassette that never saw the session
        assert "answer" in wait_for_tool(client, "answer")
        assert client.session and client.session != old
        assert mcp.result_text(client.call("list-components"))
        client.close()
        with pytest.raises(mcp.ToolError, match="Tool not found"):
            mcp.Client(first.url).call("no-such-tool")


def test_client_unreachable_and_not_mcp(env: Env) -> None:
    import http.server
    import threading

    from wassette_state.store.live import mcp

    with pytest.raises(mcp.Unreachable):
        mcp.Client(f"http://127.0.0.1:{free_port()}/mcp", connect_timeout=1).initialize()

    class NotMcp(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotMcp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        with pytest.raises(mcp.McpError, match="not JSON"):
            mcp.Client(url).initialize()
        # the CLI: one warning line, exit 0, the change kept
        res = ok(live(env, url, "component", "attach", str(write(env, "calc", V1))))
        lines = res.err.splitlines()
        assert len(lines) == 1 and "could not be told: the answer is not JSON" in lines[0], lines
        assert (env.component_dir / "calc.wasm").exists()
    finally:
        server.shutdown()


def test_sse_messages() -> None:
    from wassette_state.store.live.mcp import _sse_messages

    body = (
        b": comment\r\n\r\nid: 1\r\nevent: message\r\n"
        b'data: {"id": 1,\r\ndata:  "result": {}}\r\n\r\n'
        b'data:\n\ndata: not json\n\ndata:{"id": 2}'
    )
    assert _sse_messages(body) == [{"id": 1, "result": {}}, {"id": 2}]


# ------------------------------------------------------------------ the plan (pure)


def _events(*items: tuple[str, str | None, dict[str, Any]]) -> list[Any]:
    from wassette_state.store.persistence.log import StoredEvent

    out = []
    for n, (type_, cid, data) in enumerate(items, 1):
        stream = cid if cid is not None else "$instance"
        payload = {**data, "component_id": cid} if cid is not None else data
        out.append(StoredEvent(n, 1, 0, "a", "change", "c", stream, n, type_, 1, payload, "h"))
    return out


def test_plan_per_change_kind() -> None:
    from wassette_state.store.live import notify as lv

    change = lv.touched(
        _events(
            ("paths.set", None, {}),
            ("component.attached", "new", {}),
            ("policy.detached", "bare", {}),
            ("policy.detached", "regranted", {}),
            ("policy.changed", "regranted", {}),
            ("secret.keys_set", "secret", {"keys": ["K"]}),
            ("component.detached", "old", {}),
            ("env.set", None, {"key": "LEVEL", "value": "x"}),
        )
    )
    assert change.env_keys == {"LEVEL"}
    present = {"new": False, "bare": False, "regranted": True, "secret": True}
    plan = lv.plan(change, present)
    assert plan.unload == ["old"]
    assert plan.load == ["bare", "new", "regranted", "secret"]
    assert plan.reset == ["bare"]  # only where a policy went away
    calls = plan.calls("/c d")
    assert [c[0] for c in calls] == ["unload-component"] + ["load-component"] * 4 + [
        "reset-permission"
    ]
    assert calls[1][1] == {"path": "file:///c d/bare.wasm"}  # as is: Wassette does not decode
    # a component detached by one command and re-attached by another before the telling:
    # the state read then decides (load, never unload)
    assert lv.plan(lv.touched(_events(("component.detached", "x", {}))), {"x": False}).load == ["x"]
    assert not lv.touched(_events(("paths.set", None, {})))


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1:9001", "http://127.0.0.1:9001/mcp"),
        ("0.0.0.0:80", "http://127.0.0.1:80/mcp"),
        ("[::]:9001", "http://[::1]:9001/mcp"),
        ("[::1]:7", "http://[::1]:7/mcp"),
        ("localhost:9001", "http://localhost:9001/mcp"),
    ],
)
def test_bind_url(bind: str, url: str) -> None:
    from wassette_state.store.files.config import bind_url

    assert bind_url(bind) == url


@pytest.mark.parametrize("bind", ["9001", "host:", ":9001", "h:0", "h:65536", "h:x"])
def test_bind_url_refused(bind: str) -> None:
    from wassette_state.store.domain.errors import ValidationError
    from wassette_state.store.files.config import bind_url

    with pytest.raises(ValidationError, match="HOST:PORT"):
        bind_url(bind)
