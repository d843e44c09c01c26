"""A tiny MCP client over Streamable HTTP (stdlib only), to talk to a running Wassette.

Enough of the protocol (MCP 2025-06-18, "Streamable HTTP") for `initialize`, `tools/list` and
`tools/call`: every JSON-RPC message is a POST to the one endpoint; the server answers with
`application/json` (one message) or `text/event-stream` (SSE events whose `data` are messages,
the answer among them); it may hand out an `Mcp-Session-Id` on `initialize`, which every later
request carries, and which `close()` ends with a DELETE. A server that forgot the session
(404) is initialized again once. Wassette 0.8.0 speaks both answer styles (`--json-response`).

Why not a library: the official `mcp` SDK pulls in anyio, httpx, pydantic-settings, starlette…
for three requests, and the CLI must start fast; this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from typing import Any

PROTOCOL_VERSION = "2025-06-18"
CLIENT_NAME = "wassette-state"


class McpError(Exception):
    """The server could not be reached, or answered with something other than a result."""


class Unreachable(McpError):
    """Nothing answered at the address (refused, timed out, not HTTP)."""


class ToolError(McpError):
    """A JSON-RPC error, or a tool result flagged `isError` (the text is the server's)."""


def _split_url(url: str) -> tuple[str, str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise McpError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def _sse_messages(body: bytes) -> list[Any]:
    """The JSON messages of an SSE body: each event's `data:` lines joined by a line feed."""
    out: list[Any] = []
    data: list[str] = []
    for raw in [*body.decode("utf-8", "replace").splitlines(), ""]:
        if raw == "":
            if data:
                text = "\n".join(data)
                data = []
                with contextlib.suppress(ValueError):  # a priming event without JSON
                    out.append(json.loads(text))
            continue
        if raw.startswith(":"):
            continue
        field, _, value = raw.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    return out


class Client:
    """One MCP session with a server at `url` (use as a context manager)."""

    def __init__(self, url: str, *, timeout: float = 60.0, connect_timeout: float = 3.0) -> None:
        self.url = url
        self.scheme, self.host, self.port, self.path = _split_url(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.session: str | None = None
        self.server_info: dict[str, Any] = {}
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 0
        self._initialized = False

    # ------------------------------------------------------------ transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self.host, self.port, timeout=self.connect_timeout)
            try:
                conn.connect()
            except OSError as e:
                raise Unreachable(str(e.strerror or e)) from None
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(self, method: str, body: bytes | None) -> tuple[int, str, bytes]:
        # One connection per request: on a kept-alive one, Wassette's chunked answer ends
        # ~40 ms late (its last chunk waits for our delayed ACK); a new local connection costs
        # a tenth of a millisecond.
        headers = {"Accept": "application/json, text/event-stream", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.session is not None:
            headers["Mcp-Session-Id"] = self.session
        if self._initialized:
            headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop()
                if attempt == 2:
                    raise Unreachable(str(e)) from None
                continue
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                if isinstance(e, socket.timeout):
                    raise Unreachable(f"no answer in {self.timeout:g}s") from None
                raise Unreachable(str(e)) from None
            session = resp.getheader("Mcp-Session-Id")
            if session:
                self.session = session
            if resp.getheader("Connection", "").lower() == "close":
                self._drop()
            return resp.status, resp.getheader("Content-Type", ""), data
        raise Unreachable(self.url)  # pragma: no cover

    def _post(self, message: dict[str, Any]) -> Any:
        """Send one message; for a request, return the answer with its id."""
        status, ctype, data = self._exchange("POST", json.dumps(message).encode())
        if status == 202 or "id" not in message:
            if status >= 400:
                raise McpError(f"HTTP {status} for {message['method']}")
            return None
        if status == 404 and self.session is not None:
            raise _SessionGone()
        if status >= 400:
            text = data.decode("utf-8", "replace").strip().splitlines()[:1]
            raise McpError(f"HTTP {status}{': ' + text[0] if text else ''}")
        if "text/event-stream" in ctype:
            messages = _sse_messages(data)
        else:
            try:
                parsed = json.loads(data)
            except ValueError:
                raise McpError("the answer is not JSON") from None
            messages = parsed if isinstance(parsed, list) else [parsed]
        for msg in messages:
            if isinstance(msg, dict) and msg.get("id") == message["id"]:
                if "error" in msg:
                    err = msg["error"] if isinstance(msg["error"], dict) else {}
                    raise ToolError(str(err.get("message") or msg["error"]))
                return msg.get("result")
        raise McpError(f"no answer to {message['method']}")

    # ------------------------------------------------------------ protocol

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if not self._initialized and method != "initialize":
            self.initialize()
        self._next_id += 1
        message = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            return self._post(message)
        except _SessionGone:  # the server restarted or expired the session: start a new one
            self.session = None
            self._initialized = False
            self.initialize()
            return self._post(message)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._post(message)

    def initialize(self, client_name: str = CLIENT_NAME, version: str = "0") -> dict[str, Any]:
        self._next_id += 1
        result = self._post(
            {
                "jsonrpc": "2.0",
                "id": self._next_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": client_name, "version": version},
                },
            }
        )
        self._initialized = True
        self.server_info = dict(result or {})
        self.notify("notifications/initialized")
        return self.server_info

    def tools(self) -> list[dict[str, Any]]:
        """Every tool the server lists (following `nextCursor`)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = self.request("tools/list", {"cursor": cursor} if cursor else {})
            out += list(result.get("tools") or [])
            cursor = result.get("nextCursor")
            if not cursor:
                return out

    def tool_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.tools()]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """`tools/call`; a result flagged `isError` raises ToolError with its text."""
        result = self.request("tools/call", {"name": name, "arguments": arguments or {}})
        result = dict(result or {})
        if result.get("isError"):
            raise ToolError(result_text(result) or f"{name} failed")
        return result

    def close(self) -> None:
        if self.session is not None:  # end the session on the server
            with contextlib.suppress(McpError):
                self._exchange("DELETE", None)
        self.session = None
        self._drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SessionGone(McpError):
    pass


def result_text(result: dict[str, Any]) -> str:
    """The text parts of a tool result, joined."""
    parts = [
        str(c.get("text", ""))
        for c in result.get("content") or []
        if isinstance(c, dict) and c.get("type") == "text"
    ]
    return "\n".join(p for p in parts if p)
