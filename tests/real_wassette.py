"""The real Wassette 0.8.0 binary (`../shared/tools/real-wassette`) driven from tests.

It runs on the test's own dirs (HOME and XDG under the test's temp dir, the component and secrets
dirs of the `Env`), so a file this project writes is checked by Wassette reading it. Setting the
binary up is done once per session; when it cannot be set up the test fails, never skips.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import SHARED, Env, Result

TOOL = SHARED / "tools" / "real-wassette"


@functools.cache
def cache_dir() -> str:
    """The binary's cache, outside any test's HOME so it is set up once, not once per test."""
    cache = os.environ.get("REAL_WASSETTE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "real-wassette"
    )
    if not TOOL.exists():
        raise RuntimeError(f"{TOOL} is missing: the tests need ../shared beside the repo")
    proc = subprocess.run(
        [str(TOOL), "--setup-only"],
        env={**os.environ, "REAL_WASSETTE_CACHE": cache},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"real-wassette could not be set up: {proc.stderr.strip()[-2000:]}")
    return cache


@dataclass
class RealWassette:
    """Wassette on one Env's dirs: `run` its CLI, or `mcp()` to speak MCP to `wassette run`."""

    env: Env
    extra_env: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
        base.update(
            REAL_WASSETTE_CACHE=cache_dir(),
            HOME=str(self.env.root / "home"),
            XDG_DATA_HOME=str(self.env.root / "xdg-data"),
            XDG_CONFIG_HOME=str(self.env.root / "xdg-config"),
            WASSETTE_COMPONENT_DIR=str(self.env.component_dir),
            WASSETTE_SECRETS_DIR=str(self.env.secrets_dir),
        )
        base.update(self.extra_env)
        base.update(extra)
        return base

    def run(self, *args: str, timeout: float = 120, **extra: str) -> Result:
        (self.env.root / "home").mkdir(exist_ok=True)
        proc = subprocess.run(
            [str(TOOL), *args],
            capture_output=True,
            text=True,
            env=self.environ(**extra),
            cwd=self.env.root,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **extra: str) -> Result:
        res = self.run(*args, **extra)
        assert res.code == 0, (args, res.code, res.out[-2000:], res.err[-2000:])
        return res

    def json(self, *args: str, **extra: str) -> Any:
        return json.loads(self.ok(*args, **extra).out)

    def metadata(self, component_id: str) -> dict[str, Any]:
        """The metadata file Wassette wrote for an id in the Env's component dir."""
        path = self.env.component_dir / f"{component_id}.metadata.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    @contextmanager
    def mcp(self, *args: str, **extra: str) -> Iterator[McpClient]:
        """`wassette run` over stdio with an initialized MCP session."""
        (self.env.root / "home").mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [str(TOOL), "run", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environ(**extra),
            cwd=self.env.root,
        )
        client = McpClient(proc)
        try:
            client.initialize()
            yield client
        finally:
            client.close()

    @contextmanager
    def serve(self, *args: str, port: int | None = None, **extra: str) -> Iterator[Served]:
        """`wassette serve --streamable-http` on a free 127.0.0.1 port (or `port`; with
        `port=0` no `--bind-address` is passed: config.toml's or the default applies), ready
        when its health check answers; stopped afterwards. Its log goes to a file."""
        (self.env.root / "home").mkdir(exist_ok=True)
        for attempt in range(5):  # another process may take a free port before Wassette does
            chosen = free_port() if port is None else port
            bind = ["--bind-address", f"127.0.0.1:{chosen}"] if chosen else []
            served = Served.start(self, ["serve", "--streamable-http", *bind, *args], extra)
            try:
                served.wait_ready(chosen)
            except _PortTaken:
                served.stop()
                if port is None and attempt < 4:
                    continue
                raise
            except BaseException:
                served.stop()
                raise
            break
        try:
            yield served
        finally:
            served.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _PortTaken(RuntimeError):
    pass


@dataclass
class Served:
    """A running `wassette serve`: its process, log file and MCP endpoint."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @classmethod
    def start(cls, wassette: RealWassette, args: list[str], extra: dict[str, str]) -> Served:
        log_path = (
            wassette.env.root
            / f"wassette-serve-{len(list(wassette.env.root.glob('wassette-serve-*')))}.log"
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(TOOL), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=wassette.environ(**extra),
                cwd=wassette.env.root,
            )
        return cls(proc, log_path)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def wait_ready(self, port: int, timeout: float = 120) -> None:
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "in use" in self.log:
                    raise _PortTaken(self.log[-2000:])
                raise RuntimeError(
                    f"wassette serve exited {self.proc.returncode}: {self.log[-2000:]}"
                )
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/mcp", _plain(self.log))
            if found:
                self.port = int(found.group(1))
                assert port in (0, self.port), (port, self.port)
                return
            time.sleep(0.05)
        raise TimeoutError(f"wassette serve did not start: {self.log[-2000:]}")

    def client(self, name: str = "wassette-state-tests") -> HttpMcp:
        client = HttpMcp(self.url, name)
        client.initialize()
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _plain(text: str) -> str:
    """Wassette's log without its ANSI colours."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class HttpMcp:
    """The test's own MCP client for Streamable HTTP (urllib, independent of store/live/mcp.py):
    JSON or SSE answers, the `Mcp-Session-Id` header."""

    def __init__(self, url: str, name: str = "wassette-state-tests") -> None:
        self.url = url
        self.name = name
        self.session: str | None = None
        self._next_id = 0

    def _post(self, message: dict[str, Any]) -> Any:
        import urllib.request

        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        req = urllib.request.Request(
            self.url, data=json.dumps(message).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            self.session = resp.headers.get("Mcp-Session-Id") or self.session
            body = resp.read().decode()
            ctype = resp.headers.get("Content-Type", "")
        if "id" not in message:
            return None
        if "text/event-stream" in ctype:
            found = [
                json.loads(line[5:])
                for line in body.splitlines()
                if line.startswith("data:") and line[5:].strip().startswith("{")
            ]
        else:
            found = [json.loads(body)]
        for msg in found:
            if msg.get("id") == message["id"]:
                if "error" in msg:
                    raise McpError(msg["error"])
                return msg["result"]
        raise AssertionError(f"no answer to {message}: {body!r}")

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._next_id += 1
        return self._post(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}}
        )

    def initialize(self) -> Any:
        result = self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": self.name, "version": "1"},
            },
        )
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def tool_names(self) -> list[str]:
        return [t["name"] for t in self.request("tools/list")["tools"]]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """The `tools/call` result as is (`isError` set when the tool failed)."""
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})


class McpClient:
    """A minimal MCP client over a child's stdio: JSON-RPC lines, one request at a time."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._next_id = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 60
    ) -> Any:
        self._next_id += 1
        rid = self._next_id
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty as e:
                err = "".join(self.stderr)[-2000:]
                raise TimeoutError(f"no answer to {method}; stderr: {err}") from e
            if line is None:
                raise RuntimeError(f"wassette exited; stderr: {''.join(self.stderr)[-2000:]}")
            line = line.strip()
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg.get("id") != rid:
                continue  # a notification or a server request
            if "error" in msg:
                raise McpError(msg["error"])
            return msg["result"]

    def initialize(self) -> Any:
        result = self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "wassette-state-tests", "version": "1"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def tool_names(self) -> list[str]:
        return [t["name"] for t in self.request("tools/list")["tools"]]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})

    def close(self) -> None:
        if self.proc.stdin is not None:
            with suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_for_tool(client: Any, name: str, timeout: float = 60) -> list[str]:
    """The tool names once `name` is among them: Wassette loads the components it finds at
    start in the background, and its first `tools/list` may come before that load is done."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        names = client.tool_names()
        if name in names or time.monotonic() > deadline:
            return names
        time.sleep(0.1)


class McpError(Exception):
    """A JSON-RPC error answer."""
