"""Parse and render Wassette-compatible state files (JSON or YAML).

This module does no I/O: `parse_snapshot` turns bytes into a validated, frozen `Snapshot`
and `render_snapshot` turns a document dict into deterministic bytes. The caller reads and
writes files (and should not read more than `MAX_SNAPSHOT_BYTES + 1` bytes).

Every problem with a file raises `store.errors.ValidationError` with a one-line message that
names the problem and where it is (`components[3].component_id: invalid id ...`, or a line and
column for syntax errors). Messages never show more than ~60 characters of an offending value
and never show anything that could be a secret value.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.state import ID_RULE, TAG_RE, compact, valid_id

__all__ = [
    "MAX_NESTING_DEPTH",
    "MAX_SNAPSHOT_BYTES",
    "PLACEHOLDER",
    "SUPPORTED_MAJOR",
    "AsOf",
    "ComponentMetadata",
    "Format",
    "FunctionIdentifier",
    "Paths",
    "PolicyCheck",
    "PolicyInfo",
    "SecretsInfo",
    "Snapshot",
    "SnapshotComponent",
    "StoreRef",
    "ToolSchema",
    "ValidationStamp",
    "check_id",
    "format_for",
    "parse_snapshot",
    "render_snapshot",
]

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
SUPPORTED_MAJOR = 0
MAX_NESTING_DEPTH = 64
PLACEHOLDER = "..."


_MAX_INT = 2**63 - 1  # everything ends up in SQLite INTEGER columns
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^(\d{1,9})(?:\.\d{1,9}){0,3}(?:[-+][0-9A-Za-z.+-]{1,64})?$")
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SHOW_MAX = 60

Format = Literal["json", "yaml"]
PolicyCheck = Callable[[str, str], None]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


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


def format_for(path: str) -> Format:
    """`.yaml`/`.yml` (any case) is YAML; everything else, including "-" (stdin/stdout), is JSON."""
    if path.lower().endswith((".yaml", ".yml")):
        return "yaml"
    return "json"


class _Problem(ValueError):
    """Raised inside pydantic validators; `sub` is appended to pydantic's location."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _valid_env_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "=" not in name and "\x00" not in name


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

_STRICT = ConfigDict(frozen=True, strict=True, extra="forbid", populate_by_name=False)


class ValidationStamp(BaseModel):
    model_config = _STRICT

    file_size: int = Field(ge=0, le=_MAX_INT)
    mtime: int = Field(ge=0, le=_MAX_INT)
    content_hash: str | None = None

    @field_validator("content_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64_RE.fullmatch(value):
            raise _Problem(f"expected 64 lowercase hex characters, got {_show(value)}")
        return value


class FunctionIdentifier(BaseModel):
    model_config = _STRICT

    package_name: str | None
    interface_name: str | None
    function_name: str = Field(min_length=1)


class ToolSchema(BaseModel):
    """One MCP tool schema. Unknown keys (e.g. `title`, `annotations`) are kept verbatim."""

    model_config = ConfigDict(frozen=True, strict=True, extra="allow", populate_by_name=False)

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] = Field(alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")


class ComponentMetadata(BaseModel):
    """Wassette's ComponentMetadata. Missing optional fields are filled by `SnapshotComponent`."""

    model_config = _STRICT

    component_id: str
    tool_schemas: list[ToolSchema]
    function_identifiers: list[FunctionIdentifier]
    tool_names: list[str]
    validation_stamp: ValidationStamp
    created_at: int = Field(ge=0, le=_MAX_INT)


class PolicyInfo(BaseModel):
    model_config = _STRICT

    source_uri: str = Field(min_length=1)
    policy_content: str
    attached_at: int = Field(ge=0, le=_MAX_INT)


class SecretsInfo(BaseModel):
    """Names of the secret environment keys. Values never appear in a state file."""

    model_config = _STRICT

    env_keys: list[str]

    @field_validator("env_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, key in enumerate(value):
            if not _valid_env_name(key):
                # The "name" may be `KEY=value`: never show it.
                raise _Problem(
                    "invalid environment variable name (must be non-empty, without '=' or NUL)",
                    f"[{i}]",
                )
            if key in seen:
                raise _Problem(f"duplicate key {_show(key)}", f"[{i}]")
            seen.add(key)
        return sorted(value)


class SnapshotComponent(BaseModel):
    model_config = _STRICT

    component_id: str
    metadata: ComponentMetadata | None = None
    policy: PolicyInfo | None = None
    secrets: SecretsInfo | None = None
    source_uri: str | None = Field(default=None, min_length=1)
    wasm_sha256: str | None = None
    # Paths inside the file (e.g. `components[0].metadata.tool_schemas`) that held a
    # documentation placeholder ("..."); the section holding one is None (unknown).
    placeholders: list[str] = Field(default_factory=list)

    @field_validator("component_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not valid_id(value):
            raise _Problem(f"invalid id {_show(value)} ({ID_RULE})")
        return value

    @field_validator("wasm_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64_RE.fullmatch(value):
            raise _Problem(f"expected 64 lowercase hex characters, got {_show(value)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Refuse secret values before anything else. Fields are required as Wassette's own
        reader (serde) requires them: all of ComponentMetadata's; an absent `Option` field
        (`content_hash`, `policy`, `secrets`) is null."""
        if not isinstance(data, dict):
            return data
        secrets = data.get("secrets")
        if secrets is not None:
            _refuse_secret_values(secrets)
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            stamp = metadata.get("validation_stamp")
            if isinstance(stamp, dict) and "content_hash" not in stamp:
                metadata = {**metadata, "validation_stamp": {**stamp, "content_hash": None}}
                return {**data, "metadata": metadata}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SnapshotComponent:
        meta = self.metadata
        if meta is not None:
            if meta.component_id != self.component_id:
                raise _Problem(
                    f"{_show(meta.component_id)} does not match component_id "
                    f"{_show(self.component_id)}",
                    ".metadata.component_id",
                )
            for i, name in enumerate(meta.tool_names):
                if not name:
                    raise _Problem("expected a non-empty tool name", f".metadata.tool_names[{i}]")
        return self


_SECRET_VALUES = (
    "contains secret values; a state file carries key names only (use 'wassette-state secret set')"
)


def _refuse_secret_values(secrets: object) -> None:
    """`secrets` may only be `{env_keys: [NAME, ...]}`: anything else may carry values, so it
    is refused without ever showing it. (Non-mappings get pydantic's value-free type error.)"""
    if not isinstance(secrets, dict):
        return
    if set(secrets) - {"env_keys"}:
        raise _Problem(_SECRET_VALUES, ".secrets")
    keys = secrets.get("env_keys")
    if isinstance(keys, dict) or (
        isinstance(keys, list) and any(isinstance(k, dict | list) for k in keys)
    ):
        raise _Problem(_SECRET_VALUES, ".secrets")


class Paths(BaseModel):
    model_config = _STRICT

    component_dir: str = Field(min_length=1)
    secrets_dir: str = Field(min_length=1)

    @field_validator("component_dir", "secrets_dir")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise _Problem("path contains a NUL character")
        return value


class AsOf(BaseModel):
    model_config = _STRICT

    seq: int = Field(ge=0, le=_MAX_INT)
    recorded_at: str
    tag: str | None = None

    @field_validator("recorded_at")
    @classmethod
    def _ts(cls, value: str) -> str:
        ok = bool(_TIMESTAMP_RE.fullmatch(value))
        if ok:
            try:
                datetime.fromisoformat(value[:-1])
            except ValueError:
                ok = False
        if not ok:
            raise _Problem(
                f"expected a UTC timestamp like 2026-11-25T10:00:00.000000Z, got {_show(value)}"
            )
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and not TAG_RE.fullmatch(value):
            raise _Problem(f"invalid tag {_show(value)} (must match {TAG_RE.pattern})")
        return value


class StoreRef(BaseModel):
    model_config = _STRICT

    lineage: str
    serial: int = Field(ge=0, le=_MAX_INT)

    @field_validator("lineage")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if not _UUID_RE.fullmatch(value):
            raise _Problem(f"expected a lowercase UUID, got {_show(value)}")
        uuid.UUID(value)
        return value


class Snapshot(BaseModel):
    """A whole state file. Components are sorted by id, environment and env_keys by name."""

    model_config = _STRICT

    version: str
    exported_at: int = Field(ge=0, le=_MAX_INT)
    components: list[SnapshotComponent]
    environment: dict[str, str]
    paths: Paths
    as_of: AsOf | None = None
    store: StoreRef | None = None

    @field_validator("environment", mode="before")
    @classmethod
    def _env_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for i, key in enumerate(value):
                if not _valid_env_name(key):
                    # Do not echo the key: `API_KEY=...` would leak a value.
                    raise _Problem(
                        f"key #{i + 1} is not a valid environment variable name "
                        "(must be non-empty, without '=' or NUL)"
                    )
        return value

    @field_validator("environment")
    @classmethod
    def _env_sorted(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if "\x00" in item:
                raise _Problem("value contains a NUL character", _join("_", key)[1:])
        return dict(sorted(value.items()))

    @field_validator("components")
    @classmethod
    def _unique_sorted(cls, value: list[SnapshotComponent]) -> list[SnapshotComponent]:
        first: dict[str, int] = {}
        for i, comp in enumerate(value):
            if comp.component_id in first:
                raise _Problem(
                    f"duplicate component id {_show(comp.component_id)} "
                    f"(also at components[{first[comp.component_id]}])",
                    f"[{i}].component_id",
                )
            first[comp.component_id] = i
        return sorted(value, key=lambda c: c.component_id)

    def to_doc(self, share: bool = False) -> dict[str, Any]:
        """The canonical document `render_snapshot` consumes (additive fields omitted if None).

        `share`: tool schemas are the model's own objects, not copies (read-only callers)."""
        doc: dict[str, Any] = {
            "version": self.version,
            "exported_at": self.exported_at,
            "components": [_component_doc(c, share) for c in self.components],
            "environment": dict(self.environment),
            "paths": {
                "component_dir": self.paths.component_dir,
                "secrets_dir": self.paths.secrets_dir,
            },
        }
        if self.as_of is not None:
            doc["as_of"] = {
                "seq": self.as_of.seq,
                "recorded_at": self.as_of.recorded_at,
                "tag": self.as_of.tag,
            }
        if self.store is not None:
            doc["store"] = {"lineage": self.store.lineage, "serial": self.store.serial}
        return doc


def _same(value: Any) -> Any:
    return value


def _tool_doc(tool: ToolSchema, share: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        doc["description"] = tool.description
    # Deep copies: the document is the caller's to change; the frozen model must not follow.
    # `share`: a caller that never changes it (the importer) saves copying every schema.
    dup: Callable[[Any], Any] = _same if share else copy.deepcopy
    doc["inputSchema"] = dup(tool.input_schema)
    if tool.output_schema is not None:
        doc["outputSchema"] = dup(tool.output_schema)
    doc.update(dup(tool.model_extra or {}))
    return doc


def _component_doc(comp: SnapshotComponent, share: bool = False) -> dict[str, Any]:
    meta = comp.metadata
    policy = comp.policy
    doc: dict[str, Any] = {
        "component_id": comp.component_id,
        "metadata": None
        if meta is None
        else {
            "component_id": meta.component_id,
            "tool_schemas": [_tool_doc(t, share) for t in meta.tool_schemas],
            "function_identifiers": [
                {
                    "package_name": f.package_name,
                    "interface_name": f.interface_name,
                    "function_name": f.function_name,
                }
                for f in meta.function_identifiers
            ],
            "tool_names": list(meta.tool_names),
            "validation_stamp": {
                "file_size": meta.validation_stamp.file_size,
                "mtime": meta.validation_stamp.mtime,
                "content_hash": meta.validation_stamp.content_hash,
            },
            "created_at": meta.created_at,
        },
        "policy": None
        if policy is None
        else {
            "source_uri": policy.source_uri,
            "policy_content": policy.policy_content,
            "attached_at": policy.attached_at,
        },
        "secrets": None if comp.secrets is None else {"env_keys": list(comp.secrets.env_keys)},
    }
    if comp.source_uri is not None:
        doc["source_uri"] = comp.source_uri
    if comp.wasm_sha256 is not None:
        doc["wasm_sha256"] = comp.wasm_sha256
    return doc


# --------------------------------------------------------------------------------------------
# Decoding: bytes -> plain JSON-like Python values
# --------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"state file: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValidationError(
            f"state file is too large ({len(data)} bytes; the limit is {MAX_SNAPSHOT_BYTES})"
        )
    raw = bytes(data)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValidationError(
            f"state file is not valid UTF-8 (byte offset {exc.start}, line {line})"
        ) from None
    if not text.strip():
        raise ValidationError("state file is empty")
    return text


# A JSON string (or an unterminated one, up to the end: never fails, so scanning is linear).
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKETS = str.maketrans("{}", "[]")


# About 100 containers per component of realistic tool schemas: a 10k-component file stays far
# below this, while a small file of millions of tiny nodes (gigabytes once parsed) is refused.
MAX_NODES = 2_000_000


def _check_node_budget(text: str, fmt: str) -> None:
    """Bound memory before parsing: count what could become containers (over-counting braces
    inside strings only makes this stricter) and, for YAML, lines."""
    nodes = text.count("{") + text.count("[")
    if fmt == "yaml":
        nodes += text.count("\n")
    if nodes > MAX_NODES:
        raise ValidationError(
            f"state file has too many values to read safely (more than {MAX_NODES:,} "
            "containers or entries)"
        )


def _check_json_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_NESTING_DEPTH before json (recursive) sees the text."""
    if not _json_nests_within(text, MAX_NESTING_DEPTH):
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels")


def _json_nests_within(text: str, levels: int) -> bool:
    """Strings and everything but brackets dropped, innermost `[]` pairs removed once per
    level: after `levels` passes a balanced text nested no deeper is empty."""
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text)).translate(_BRACKETS)
    for _ in range(levels):
        if "[]" not in brackets:
            return True
        brackets = brackets.replace("[]", "")
    return "[]" not in brackets


class _DuplicateKeys(dict[str, Any]):
    """Marks a JSON object that had a repeated key; reported with its path after parsing."""

    duplicate: str = ""


class _NonFinite(ValueError):
    pass


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            marked = _DuplicateKeys(pairs)
            marked.duplicate = key
            return marked
        result[key] = value
    return result


def _json_constant(name: str) -> Any:
    raise _NonFinite(name)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _load_json(text: str) -> Any:
    _check_json_depth(text)
    try:
        return json.loads(
            text,
            object_pairs_hook=_json_pairs,
            parse_constant=_json_constant,
            parse_float=_json_float,
        )
    except _NonFinite as exc:
        raise ValidationError(
            f"invalid JSON: {_show(str(exc))} is not allowed (numbers must be finite)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        detail = "an integer has too many digits" if "digits" in str(exc) else "invalid value"
        raise ValidationError(f"invalid JSON: {detail}") from None


# ----- YAML ----------------------------------------------------------------------------------

_Y = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(f"{_Y}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp"))
_SEQ_TAG = f"{_Y}seq"
_MAP_TAG = f"{_Y}map"

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _YamlRefused(Exception):
    def __init__(self, message: str, mark: Any, path: Any = "") -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark
        # A spelled path, or the composer's (parent, key) link chain.
        self.path = path if isinstance(path, str) else _spell(path)


def _mark(mark: Any) -> Any:
    """libyaml and pure-Python marks differ in type; nodes only need line/column."""
    return mark


def _at(mark: Any) -> str:
    if mark is None:
        return ""
    return f" (line {mark.line + 1}, column {mark.column + 1})"


class _StateLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader with our own composer: no aliases/anchors, an allow-list of tags, string
    keys only, no duplicate keys, bounded nesting. Events come from libyaml when available."""

    def get_single_node(self) -> Node | None:
        self.get_event()  # StreamStart
        node: Node | None = None
        if not self.check_event(StreamEndEvent):
            self.get_event()  # DocumentStart
            node = self._compose(0, None)
            self.get_event()  # DocumentEnd
        if not self.check_event(StreamEndEvent):
            event = self.get_event()
            raise _YamlRefused("expected a single YAML document", event.start_mark)
        self.get_event()
        return node

    def _compose(self, depth: int, path: Any) -> Node:
        # `path` is a (parent, key) link chain, spelled out only for an error (see _spell).
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _YamlRefused(
                "YAML anchors/aliases are not allowed in state files", event.start_mark, path
            )
        if isinstance(event, ScalarEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(ScalarNode, event.value, event.implicit)
            if tag not in _SCALAR_TAGS:
                raise self._bad_tag(tag, event, path)
            return ScalarNode(
                tag, event.value, _mark(event.start_mark), _mark(event.end_mark), style=event.style
            )
        if depth >= MAX_NESTING_DEPTH:
            raise _YamlRefused(
                f"state file nests deeper than {MAX_NESTING_DEPTH} levels", event.start_mark, path
            )
        if isinstance(event, SequenceStartEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(SequenceNode, None, event.implicit)
            if tag != _SEQ_TAG:
                raise self._bad_tag(tag, event, path)
            seq = SequenceNode(tag, [], _mark(event.start_mark), None, flow_style=event.flow_style)
            while not self.check_event(SequenceEndEvent):
                seq.value.append(self._compose(depth + 1, (path, len(seq.value))))
            seq.end_mark = self.get_event().end_mark
            return seq
        if isinstance(event, MappingStartEvent):
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(MappingNode, None, event.implicit)
            if tag != _MAP_TAG:
                raise self._bad_tag(tag, event, path)
            mapping = MappingNode(
                tag, [], _mark(event.start_mark), None, flow_style=event.flow_style
            )
            seen: set[str] = set()
            while not self.check_event(MappingEndEvent):
                key_event = self.peek_event()
                key = self._compose(depth + 1, path)
                if not isinstance(key, ScalarNode) or key.tag != f"{_Y}str":
                    raise _YamlRefused(
                        "mapping keys must be strings (quote the key)", key_event.start_mark, path
                    )
                if key.value in seen:
                    raise _YamlRefused(
                        f"duplicate key {_show(key.value)}", key_event.start_mark, path
                    )
                seen.add(key.value)
                value = self._compose(depth + 1, (path, key.value))
                mapping.value.append((key, value))
            mapping.end_mark = self.get_event().end_mark
            return mapping
        raise _YamlRefused("unexpected YAML event", event.start_mark, path)  # pragma: no cover

    @staticmethod
    def _bad_tag(tag: str, event: Any, path: Any) -> _YamlRefused:
        if tag == f"{_Y}merge":
            return _YamlRefused(
                "YAML merge keys ('<<') are not allowed in state files", event.start_mark, path
            )
        return _YamlRefused(
            f"YAML tag {_show(tag)} is not allowed in state files", event.start_mark, path
        )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, OverflowError):
            # e.g. `!!bool maybe`, `!!int x`, an integer with too many digits. The value is
            # not shown: it could be anything.
            kind = node.tag.rsplit(":", 1)[-1]
            raise _YamlRefused(f"invalid {kind} value", node.start_mark) from None

    def construct_yaml_timestamp(self, node: ScalarNode) -> str:
        return cast(str, node.value)  # timestamps stay strings (e.g. as_of.recorded_at)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value = cast(float, super().construct_yaml_float(node))
        if not math.isfinite(value):
            raise _YamlRefused(
                f"{_show(node.value)} is not allowed (numbers must be finite)", node.start_mark
            )
        return value


_StateLoader.add_constructor(f"{_Y}timestamp", _StateLoader.construct_yaml_timestamp)
_StateLoader.add_constructor(f"{_Y}float", _StateLoader.construct_yaml_float)


def _run_yaml_loader(text: str) -> Any:
    loader = _StateLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ----- YAML with spliced metadata lines ------------------------------------------------------
#
# `state export` writes each component's metadata as one line of compact JSON (valid YAML flow
# style). Composing those tens of MB node by node in Python is nearly all of a large YAML
# import, so such lines are read with `json` instead, where that provably gives what the YAML
# reader would: the text must be exactly the compact JSON of what it parses to (the exporter's
# form, whose YAML reading a property test pins), hold no number with an exponent (YAML 1.1
# reads `1e+16` as a string), no character the YAML reader refuses or treats as a line break,
# no repeated key, and nest within the depth limit. Every other case, and any doubt afterwards,
# goes through the YAML reader unchanged, so results and error messages are the same.

_SPLICED_LINE = re.compile(r"^( *metadata: )(\{.*\})$", re.MULTILINE)
_SPLICE_UNSAFE = re.compile(
    "[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]"
)
_SPLICE_MIN = 256  # shorter lines are not worth it


class _NotSpliceable(Exception):
    pass


def _splice_float(text: str) -> float:
    if "e" in text or "E" in text:
        raise _NotSpliceable(text)
    return float(text)


def _splice_constant(name: str) -> Any:
    raise _NotSpliceable(name)


def _json_line_value(text: str) -> Any:
    """The value of one spliced line, or _NotSpliceable."""
    if (text.isascii() and "\x7f" in text) or (not text.isascii() and _SPLICE_UNSAFE.search(text)):
        raise _NotSpliceable("character")
    try:
        # No pairs hook: a repeated key keeps only its last value, so the text is then not
        # the compact form of the result and the line is refused below.
        value = json.loads(text, parse_float=_splice_float, parse_constant=_splice_constant)
    except (ValueError, RecursionError):
        raise _NotSpliceable("json") from None
    if compact(value) != text:
        raise _NotSpliceable("not the exporter's form")
    # Collections below the component's metadata (YAML depth 3) must stay under the limit.
    if not _json_nests_within(text, MAX_NESTING_DEPTH - 3):
        raise _NotSpliceable("depth")
    return value


def _load_yaml_spliced(text: str) -> Any | None:
    """The document with metadata lines read as JSON, or None to read it all as YAML."""
    values: list[Any] = []
    tag = f"__wassette_spliced_{uuid.uuid4().hex}_"

    def swap(m: re.Match[str]) -> str:
        if len(m.group(2)) < _SPLICE_MIN:
            return m.group(0)
        try:
            values.append(_json_line_value(m.group(2)))
        except _NotSpliceable:
            return m.group(0)
        return f"{m.group(1)}{tag}{len(values) - 1}"

    reduced = _SPLICED_LINE.sub(swap, text)
    if not values:
        return None
    try:
        doc = _run_yaml_loader(reduced)
    except Exception:  # the YAML reader, on the original text, says what is wrong
        return None
    comps = doc.get("components") if isinstance(doc, dict) else None
    placed = 0
    for comp in comps if isinstance(comps, list) else []:
        meta = comp.get("metadata") if isinstance(comp, dict) else None
        if isinstance(meta, str) and meta.startswith(tag):
            index = int(meta[len(tag) :])
            comp["metadata"] = values[index]
            placed += 1
    # Each placeholder must have landed where it was made, as a component's metadata (a line
    # that only looked like one, e.g. inside a block scalar, shows up as a miss here).
    return doc if placed == len(values) else None


def _load_yaml(text: str, splice: bool = True) -> Any:
    spliced = _load_yaml_spliced(text) if splice else None
    if spliced is not None:
        return spliced
    try:
        return _run_yaml_loader(text)
    except _YamlRefused as exc:
        where = f"{exc.path}: " if exc.path else ""
        raise ValidationError(f"invalid YAML: {where}{exc.message}{_at(exc.mark)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = _one_line(exc.problem or exc.context or "syntax error")
        if "nesting depth" in problem:  # libyaml's own (higher) limit, hit while scanning ahead
            problem = f"state file nests deeper than {MAX_NESTING_DEPTH} levels"
        raise ValidationError(f"invalid YAML{_at(mark)}: {problem[:160]}") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {_one_line(str(exc))[:160]}") from None
    except RecursionError:
        raise ValidationError(f"state file nests deeper than {MAX_NESTING_DEPTH} levels") from None
    except (ValueError, TypeError, KeyError, OverflowError):  # backstop; never echo the value
        raise ValidationError("invalid YAML: a value does not match its type") from None


def _check_plain(value: Any) -> None:
    """Checks shared by JSON, YAML and documents handed to `render_snapshot`: only JSON types
    (string keys, finite numbers, encodable strings), no duplicate keys, bounded nesting."""
    # A node's path is kept as (parent, key) links and spelled out only for an error: a large
    # snapshot has millions of nodes and building every path string cost more than the checks.
    stack: list[tuple[Any, Any, int]] = [(None, value, 0)]
    while stack:
        link, item, depth = stack.pop()
        if isinstance(item, dict):
            if isinstance(item, _DuplicateKeys):
                raise _fail(_spell(link), f"duplicate key {_show(item.duplicate)}")
            if depth >= MAX_NESTING_DEPTH:
                raise _fail(_spell(link), f"nests deeper than {MAX_NESTING_DEPTH} levels")
            for key in reversed(list(item)):
                if not isinstance(key, str):
                    raise _fail(
                        _spell(link), f"mapping keys must be strings, got {_type_name(key)}"
                    )
                if not key.isascii():
                    _check_text(_spell(link), key)
                stack.append(((link, key), item[key], depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_NESTING_DEPTH:
                raise _fail(_spell(link), f"nests deeper than {MAX_NESTING_DEPTH} levels")
            for i in range(len(item) - 1, -1, -1):
                stack.append(((link, i), item[i], depth + 1))
        elif isinstance(item, str):
            if not item.isascii():  # only non-ASCII text can hold a surrogate
                _check_text(_spell(link), item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _fail(_spell(link), "numbers must be finite")
        elif item is not None and not isinstance(item, bool | int):
            raise _fail(_spell(link), f"not a JSON value ({type(item).__name__})")


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


def _check_text(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, "string contains an unpaired surrogate escape") from None


# --------------------------------------------------------------------------------------------
# Placeholders (documentation examples use "..." for elided values)
# --------------------------------------------------------------------------------------------


def _is_placeholder(value: object) -> bool:
    if value == PLACEHOLDER:
        return True
    return isinstance(value, list) and any(item == PLACEHOLDER for item in value)


def _placeholders_in(section: object, path: str) -> list[str]:
    found: list[str] = []
    if _is_placeholder(section):
        return [path]
    if isinstance(section, dict):
        for key, value in section.items():
            sub = _join(path, key)
            if _is_placeholder(value):
                found.append(sub)
            elif isinstance(value, dict) and key == "validation_stamp":
                found.extend(_join(sub, k) for k, v in value.items() if _is_placeholder(v))
    return found


def _strip_placeholders(comp: dict[str, Any], path: str) -> dict[str, Any]:
    """Replace sections holding a placeholder by None and record where they were."""
    if "placeholders" in comp:
        raise _fail(_join(path, "placeholders"), "unknown field")
    try:
        _refuse_secret_values(comp.get("secrets"))
    except _Problem as exc:
        raise _fail(path + exc.sub, exc.message) from None
    found: list[str] = []
    cleaned = dict(comp)
    for section in ("metadata", "policy", "secrets", "source_uri", "wasm_sha256"):
        if section not in comp:
            continue
        here = _placeholders_in(comp[section], _join(path, section))
        if here:
            found.extend(here)
            cleaned[section] = None
    # Wassette's reader requires a component's metadata (not an Option): only a documentation
    # placeholder inside it stands for it (the component is then skipped on import).
    if "metadata" not in comp:
        raise _fail(_join(path, "metadata"), "missing required field")
    if comp["metadata"] is None:
        raise _fail(_join(path, "metadata"), "expected a mapping, got null")
    if found:
        cleaned["placeholders"] = found
    return cleaned


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_PYDANTIC_MESSAGES = {
    "missing": "missing required field",
    "extra_forbidden": "unknown field",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "bool_type": "expected a boolean",
    "none_required": "expected null",
}


def _translate(exc: PydanticValidationError) -> ValidationError:
    err = exc.errors(include_url=False, include_input=True)[0]
    path = ""
    for part in err["loc"]:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path = _join(path, part)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _Problem):
        return _fail(path + inner.sub, inner.message)
    if kind in _PYDANTIC_MESSAGES:
        message = _PYDANTIC_MESSAGES[kind]
        if kind.endswith("_type") or kind == "int_parsing":
            message += f", got {_type_name(err.get('input'))}"
        return _fail(path, message)
    if kind == "greater_than_equal":
        return _fail(path, f"must be >= {ctx.get('ge')}")
    if kind == "less_than_equal":
        return _fail(path, f"must be <= {ctx.get('le')}")
    if kind == "string_too_short":
        return _fail(path, "must not be empty")
    if kind == "too_short":
        return _fail(path, "must not be empty")
    # Fallback: pydantic's own wording never includes the input value.
    return _fail(path, _one_line(str(err.get("msg", "invalid value"))))


def _check_version(doc: dict[str, Any]) -> None:
    if "version" not in doc:
        raise _fail("version", "missing required field")
    version = doc["version"]
    if not isinstance(version, str):
        raise _fail("version", f"expected a string, got {_type_name(version)}")
    if not version.strip():
        raise _fail("version", "must be a non-empty string")
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise _fail("version", f'invalid version {_show(version)} (expected e.g. "0.1.0")')
    major = int(match.group(1))
    if major > SUPPORTED_MAJOR:
        raise _fail(
            "version",
            f"{_show(version)} is newer than this tool supports "
            f"(major version {SUPPORTED_MAJOR} only)",
        )


def _validate(doc: Any) -> tuple[Snapshot, dict[str, int]]:
    """Validate a plain document; returns the snapshot and each component id's file index."""
    if doc is None:
        raise ValidationError("state file is empty")
    if not isinstance(doc, dict):
        raise _fail("", f"expected a mapping, got {_type_name(doc)}")
    _check_version(doc)
    prepared = dict(doc)
    components = doc.get("components")
    if isinstance(components, list):
        prepared["components"] = [
            _strip_placeholders(c, f"components[{i}]") if isinstance(c, dict) else c
            for i, c in enumerate(components)
        ]
    try:
        snapshot = Snapshot.model_validate(prepared)
    except PydanticValidationError as exc:
        raise _translate(exc) from None
    index = {c["component_id"]: i for i, c in enumerate(prepared["components"])}
    return snapshot, index


def _run_policy_checks(snapshot: Snapshot, index: dict[str, int], check: PolicyCheck) -> None:
    for comp in sorted(snapshot.components, key=lambda c: index[c.component_id]):
        if comp.policy is None:
            continue
        where = f"components[{index[comp.component_id]}].policy.policy_content"
        try:
            check(comp.policy.policy_content, where)
        except ValidationError as exc:
            message = _one_line(str(exc))
            if not message.startswith(where):
                message = f"{where}: {message}"
            raise ValidationError(message) from exc


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def parse_snapshot(
    data: bytes, fmt: Format, *, policy_check: PolicyCheck | None = None
) -> Snapshot:
    """Parse and fully validate a state file; raise `ValidationError` on any problem."""
    if fmt not in ("json", "yaml"):
        raise ValidationError(f"unknown state file format {_show(fmt)} (expected json or yaml)")
    text = _decode(data)
    _check_node_budget(text, fmt)
    with gc_paused():  # millions of fresh containers, no cycles among them
        doc = _load_json(text) if fmt == "json" else _load_yaml(text)
        _check_plain(doc)
        snapshot, index = _validate(doc)
    if policy_check is not None:
        _run_policy_checks(snapshot, index, policy_check)
    return snapshot


class _StateDumper(_BaseDumper):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: Any, value: str) -> Any:
    # Literal block style only for plain multi-line text: other line breaks (\r, NEL, U+2028)
    # and control characters would not survive a block scalar.
    # Other non-printable text is double-quoted: escapes are the only form every emitter
    # (libyaml and pure Python) writes back losslessly.
    style: str | None = None
    if "\n" in value and all(line.isprintable() for line in value.split("\n")):
        style = "|"
    elif not value.isprintable():
        style = '"'

    return dumper.represent_scalar(f"{_Y}str", value, style=style)


_StateDumper.add_representer(str, _represent_str)


def render_snapshot(doc: dict[str, Any], fmt: Format) -> bytes:
    """Render a document deterministically. The document is validated (and put in canonical
    order) first, so whatever is rendered parses back to the same `Snapshot`."""
    if fmt not in ("json", "yaml"):
        raise ValidationError(f"unknown state file format {_show(fmt)} (expected json or yaml)")
    _check_plain(doc)
    snapshot, _ = _validate(doc)
    for comp in snapshot.components:
        if comp.placeholders:
            raise _fail(comp.placeholders[0], "cannot render a placeholder value ('...')")
    canonical = snapshot.to_doc()
    if fmt == "json":
        text = json.dumps(canonical, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    out = yaml.dump(
        canonical,
        Dumper=_StateDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        encoding="utf-8",
    )
    return out
