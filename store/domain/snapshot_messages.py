"""How a problem in a state file is worded: one line, where it is, never a secret (no I/O).

Every problem with a state file raises `store.errors.ValidationError` with a one-line message that
names the problem and where it is (`components[3].component_id: invalid id ...`, or a line and
column for syntax errors). Messages never show more than ~60 characters of an offending value
and never show anything that could be a secret value. Shared by the snapshot_* modules.
"""

from __future__ import annotations

import re
from typing import Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.state import ID_RULE, valid_id

__all__ = ["check_id"]

_SHOW_MAX = 60


def _show(value: object) -> str:
    """A short, single-line rendering of a (non-secret) offending value."""
    if isinstance(value, str):
        if len(value) > _SHOW_MAX:
            return f"{value[:_SHOW_MAX]!r}... ({len(value)} chars)"
        return repr(value)
    text = repr(value)
    if len(text) > _SHOW_MAX:
        return text[:_SHOW_MAX] + "..."
    return text


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if len(key) <= _SHOW_MAX else key[:_SHOW_MAX] + "..."
    if not path:
        return key
    if re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _fail(path: str, message: str) -> ValidationError:
    where = path or "top level"
    return ValidationError(_one_line(f"{where}: {message}"))


def check_id(value: str, where: str) -> None:
    """Refuse anything that is not a safe component/tag id (no paths, no NUL, <= 128 chars)."""
    if not isinstance(value, str):
        raise _fail(where, f"expected a string id, got {_type_name(value)}")
    if not valid_id(value):
        raise _fail(where, f"invalid id {_show(value)} ({ID_RULE})")


class _Problem(ValueError):
    """Raised inside pydantic validators; `sub` is appended to pydantic's location."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _spell(link: Any) -> str:
    """The path of a (parent, key) link chain, as `_join` writes it."""
    keys: list[str | int] = []
    while link is not None:
        link, key = link
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = _join(path, key)
    return path
