"""The state of a Wassette instance as plain immutable values (no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wassette_state.store.domain.errors import ValidationError

# The stream of instance settings; `check_id` refuses it as a component id.
INSTANCE_STREAM = "_instance"
# Tag names keep the strict pattern ids had before Wassette's own ids were taken as they are.
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TAG_RE = re.compile(TAG_PATTERN)
# Component ids: any file stem Wassette 0.8.0 accepts (`Weird+Name@1`), except what cannot be a
# safe file name: a path separator, NUL or another control character, `.`/`..`, a leading `.` or
# `-` (DESIGN §4.2). The longest file an id gets, `<id>.policy.meta.json`, must fit NAME_MAX.
ID_RULE = "no '/', '\\', control characters, leading '.' or '-', at most 238 bytes"
_ID_CHARS_RE = re.compile(r"^[^./\\\x00-\x1f\x7f-][^/\\\x00-\x1f\x7f]*$")
MAX_ID_BYTES = 255 - len(".policy.meta.json")
_STAMP_KEY = '"validation_stamp":{"file_size":'
_STAMP_RE = re.compile(r'"validation_stamp":\{"file_size":(\d+),"mtime":(\d+),')
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")


def valid_id(value: object) -> bool:
    """Ids become file names: see ID_RULE."""
    if not isinstance(value, str) or value == INSTANCE_STREAM or not _ID_CHARS_RE.match(value):
        return False
    try:
        return len(value.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # a lone surrogate cannot be a file name
        return False


def check_id(value: object, where: str = "component id") -> str:
    """Ids become file names, so anything outside ID_RULE is refused everywhere."""
    if not valid_id(value):
        shown = repr(value) if not isinstance(value, str) else repr(_clip(value))
        raise ValidationError(f"{where}: invalid id {shown} ({ID_RULE})")
    assert isinstance(value, str)
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


# Built once: json.dumps with options constructs a new encoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def compact(obj: Any) -> str:
    """Key order kept: the stored form (tool schemas keep their parameter order), the form
    exports splice and the form the YAML reader's JSON shortcut accepts."""
    return _COMPACT(obj)


class Metadata(Mapping[str, Any]):
    """A component's ComponentMetadata, decoded only when someone looks inside.

    Tool schemas are large and most commands never read them, so the read models hand out
    the stored JSON text; exports and files reuse that text as is.
    """

    __slots__ = ("_doc", "_hash", "_loader", "_raw")

    def __init__(
        self,
        doc: Mapping[str, Any] | None = None,
        raw: str | None = None,
        *,
        ref: str | None = None,
        loader: Callable[[str], str] | None = None,
    ) -> None:
        """From a document, its JSON text, or a content hash (`ref`) plus a `loader` that
        returns the text stored under that hash on first use (the read models hold the text
        once, by hash, and most reads of a whole state never look at it)."""
        if doc is None and raw is None and (ref is None or loader is None):
            raise ValueError("Metadata needs a document, its JSON text or a loader")
        self._doc: dict[str, Any] | None = dict(doc) if doc is not None else None
        self._raw = raw
        self._hash: str | None = ref
        self._loader = loader

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Metadata:
        return value if isinstance(value, Metadata) else cls(doc=value)

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = json.loads(self.raw)
        return self._doc

    @property
    def raw(self) -> str:
        """Compact JSON, key order kept (parameter order matters to a reader)."""
        if self._raw is None:
            if self._doc is None:
                assert self._loader is not None and self._hash is not None
                self._raw = self._loader(self._hash)
                self._loader = None
            else:
                self._raw = _COMPACT(self._doc)
        return self._raw

    @property
    def sha256(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(self.raw.encode()).hexdigest()
        return self._hash

    def stamp(self) -> tuple[int | None, int | None]:
        """(file_size, mtime) of the validation stamp, without decoding the tool schemas when
        the text has the usual layout."""
        if self._doc is None:
            raw = self.raw
            at = raw.find(_STAMP_KEY)  # a plain find, then the pattern there: 30× faster
            m = _STAMP_RE.match(raw, at) if at >= 0 else None
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
            if self._hash is not None and self._hash == other._hash:
                return True  # the same text (content-addressed), loaded or not
            if self._raw is not None and other._raw is not None and self._raw == other._raw:
                return True
            return self.doc == other.doc
        if isinstance(other, Mapping):
            return self.doc == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Metadata({self.doc!r})"


class Policy:
    """A component's policy. Immutable; its text may be fetched by hash on first use."""

    __slots__ = ("_content", "_hash", "_loader", "attached_at", "source_uri")

    def __init__(
        self,
        policy_content: str | None = None,
        source_uri: str | None = None,
        attached_at: int | None = None,
        *,
        ref: str | None = None,
        loader: Callable[[str], str] | None = None,
    ) -> None:
        if policy_content is None and (ref is None or loader is None):
            raise ValueError("Policy needs its text or a loader")
        self._content = policy_content
        self._hash = ref
        self._loader = loader
        self.source_uri = source_uri
        self.attached_at = attached_at

    @property
    def policy_content(self) -> str:
        if self._content is None:
            assert self._loader is not None and self._hash is not None
            self._content = self._loader(self._hash)
            self._loader = None
        return self._content

    @property
    def sha256(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(self.policy_content.encode()).hexdigest()
        return self._hash

    def with_content(self, policy_content: str) -> Policy:
        return Policy(policy_content, self.source_uri, self.attached_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        if (self.source_uri, self.attached_at) != (other.source_uri, other.attached_at):
            return False
        if self._hash is not None and other._hash is not None:
            return self._hash == other._hash
        return self.policy_content == other.policy_content

    def __hash__(self) -> int:
        return hash((self.sha256, self.source_uri, self.attached_at))

    def __repr__(self) -> str:
        return (
            f"Policy(policy_content={self.policy_content!r}, source_uri={self.source_uri!r}, "
            f"attached_at={self.attached_at!r})"
        )


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
