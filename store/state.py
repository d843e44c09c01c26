"""The state of a Wassette instance as plain immutable values (no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from store.errors import ValidationError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)
_STAMP_RE = re.compile(r'"validation_stamp":\{"file_size":(\d+),"mtime":(\d+),')
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


class Metadata(Mapping[str, Any]):
    """A component's ComponentMetadata, decoded only when someone looks inside.

    Tool schemas are large and most commands never read them, so the read models hand out
    the stored JSON text; exports and files reuse that text as is.
    """

    __slots__ = ("_doc", "_hash", "_raw")

    def __init__(self, doc: Mapping[str, Any] | None = None, raw: str | None = None) -> None:
        if doc is None and raw is None:
            raise ValueError("Metadata needs a document or its JSON text")
        self._doc: dict[str, Any] | None = dict(doc) if doc is not None else None
        self._raw = raw
        self._hash: str | None = None

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Metadata:
        return value if isinstance(value, Metadata) else cls(doc=value)

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            assert self._raw is not None
            self._doc = json.loads(self._raw)
        return self._doc

    @property
    def raw(self) -> str:
        """Compact JSON, key order kept (parameter order matters to a reader)."""
        if self._raw is None:
            self._raw = json.dumps(self._doc, separators=(",", ":"), ensure_ascii=False)
        return self._raw

    @property
    def sha256(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(self.raw.encode()).hexdigest()
        return self._hash

    def stamp(self) -> tuple[int | None, int | None]:
        """(file_size, mtime) of the validation stamp, without decoding the tool schemas when
        the text has the usual layout."""
        if self._doc is None and self._raw is not None:
            m = _STAMP_RE.search(self._raw)
            if m:
                return int(m.group(1)), int(m.group(2))
        st = self.doc.get("validation_stamp") or {}
        size, mtime = st.get("file_size"), st.get("mtime")
        return (
            size if isinstance(size, int) else None,
            mtime if isinstance(mtime, int) else None,
        )

    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.doc)

    def __len__(self) -> int:
        return len(self.doc)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            if self._raw is not None and other._raw is not None and self._raw == other._raw:
                return True
            return self.doc == other.doc
        if isinstance(other, Mapping):
            return self.doc == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Metadata({self.doc!r})"


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
    metadata: Metadata
    policy: Policy | None = None
    secret_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, Metadata):
            object.__setattr__(self, "metadata", Metadata.of(self.metadata))


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
