"""Reading Wassette 0.8.0's log (stderr of `serve`) for who changed what (issue 12.3).

What the binary logs (measured): `create new session session_id=…`, then `Service initialized
as server peer_info=… client_info: Implementation { name: "<client>", … }`; every line a tool
call logs runs inside the span `handle_tools_call{method_name=<tool>}` whose fields print the
request, `arguments: Some({"component_id": String("weather"), "details": Object {"host":
String("api.example.com")}})`; a session that ends logs `serve finished`. Lines carry ANSI
colours even when stderr is not a terminal.

The tool-call lines do not name their session. So the client is known exactly while one
session is open (an agent's usual case); with several open, the actor lists them all
(`mcp:a|b`). Sessions of wassette-state itself (telling Wassette about a change, store.live)
are never taken for an agent. `Reader` is pure: feed it lines, it returns the calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Built-in tools that change the component dir or its policies (the others only read).
CHANGING = frozenset(
    (
        "load-component",
        "unload-component",
        "grant-storage-permission",
        "grant-network-permission",
        "grant-environment-variable-permission",
        "grant-memory-permission",
        "revoke-storage-permission",
        "revoke-network-permission",
        "revoke-environment-variable-permission",
        "reset-permission",
    )
)
OURS = "wassette-state"  # the client name store.mcp introduces itself with

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CLIENT = re.compile(
    r'Service initialized as server .*?client_info: Implementation \{ name: "((?:[^"\\]|\\.)*)"'
)
_CALL = re.compile(r"handle_tools_call\{method_name=([A-Za-z0-9_.:-]+)\}")
_SPAN = re.compile(r"handle_tools_call\{[^}]*\}:handle_\w+\{req=.*?is_client: \w+ \}\}")
_ARGS = re.compile(r"arguments: Some\((\{.*?\})\), input_responses")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)": String\("((?:[^"\\]|\\.)*)"\)')
_ARRAY = re.compile(r'"((?:[^"\\]|\\.)*)": Array \[([^\]]*)\]')


@dataclass(frozen=True)
class Call:
    tool: str
    arguments: str  # `key=value …`, as Wassette logged them
    actor: str  # `mcp:<client>`

    @property
    def command(self) -> str:
        return f"{self.tool} {self.arguments}".strip()


def plain(line: str) -> str:
    return _ANSI.sub("", line)


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


def arguments(line: str) -> str:
    """`component_id=weather host=api.example.com access=read,write` from a call's span."""
    found = _ARGS.search(line)
    if not found:
        return ""
    body = found.group(1)
    parts = [f"{_unescape(k)}={_unescape(v)}" for k, v in _STRING.findall(body)]
    for key, items in _ARRAY.findall(body):
        values = [_unescape(v) for v in re.findall(r'String\("((?:[^"\\]|\\.)*)"\)', items)]
        parts.append(f"{_unescape(key)}={','.join(values)}")
    return " ".join(parts)


@dataclass
class Reader:
    """Feed it Wassette's log lines; it returns each changing tool call once."""

    sessions: list[str] = field(default_factory=list)  # client names of the open sessions
    _last_span: str | None = None

    def actor(self) -> str:
        names = sorted({n for n in self.sessions if n != OURS})
        return "mcp:" + ("|".join(names) if names else "unknown")

    def feed(self, raw: str) -> Call | None:
        line = plain(raw)
        client = _CLIENT.search(line)
        if client:
            self.sessions.append(_unescape(client.group(1)))
            return None
        if "serve finished" in line:
            # which session ended is not logged: the newest (a short-lived one, such as
            # wassette-state's own, is the usual case)
            if self.sessions:
                self.sessions.pop()
            return None
        call = _CALL.search(line)
        if not call or call.group(1) not in CHANGING:
            self._last_span = None
            return None
        # The call's own span (its request and the session's PeerSink, the same on every
        # line it logs): consecutive lines with the same one are one call.
        whole = _SPAN.search(line, call.start())
        span = whole.group(0) if whole else call.group(0) + arguments(line)
        if span == self._last_span:
            return None
        self._last_span = span
        if self.sessions and all(n == OURS for n in self.sessions):
            return None  # wassette-state telling Wassette what it recorded already
        return Call(call.group(1), arguments(line), self.actor())
