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


class McpError(Exception):
    """A JSON-RPC error answer."""
