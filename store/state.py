"""The state of a Wassette instance as plain immutable values (no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from store.errors import ValidationError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")


def check_id(value: object, where: str = "component id") -> str:
    """Ids become file names, so anything outside the pattern is refused everywhere."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        shown = repr(value) if not isinstance(value, str) else repr(_clip(value))
        raise ValidationError(f"{where}: invalid id {shown} (must match {ID_PATTERN})")
    return value


def check_env_key(value: str, where: str = "key") -> str:
    if not ENV_KEY_RE.fullmatch(value):
        raise ValidationError(
            f"{where}: invalid name {_clip(value)!r} (letters, digits, '_', '.', '-'; "
            "must not start with a digit)"
        )
    return value


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Policy:
    policy_content: str
    source_uri: str | None = None
    attached_at: int | None = None


@dataclass(frozen=True)
class Component:
    component_id: str
    source_uri: str
    wasm_sha256: str
    metadata: dict[str, Any]
    policy: Policy | None = None
    secret_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paths:
    component_dir: str
    secrets_dir: str


@dataclass(frozen=True)
class State:
    components: dict[str, Component] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    paths: Paths | None = None


EMPTY = State()
