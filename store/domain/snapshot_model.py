"""The state file's document: its limits, its frozen pydantic models, its canonical form.

A `Snapshot` is a whole Wassette-compatible state file, validated; `Snapshot.to_doc` is the
canonical document `render_snapshot` writes. The models refuse secret values before anything
else: a state file carries secret key names only. `format_for` tells JSON from YAML by name.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wassette_state.store.domain.snapshot_messages import _join, _Problem, _show
from wassette_state.store.domain.state import ID_RULE, TAG_RE, valid_id

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
    "PolicyInfo",
    "SecretsInfo",
    "Snapshot",
    "SnapshotComponent",
    "StoreRef",
    "ToolSchema",
    "ValidationStamp",
    "format_for",
]

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
SUPPORTED_MAJOR = 0
MAX_NESTING_DEPTH = 64
PLACEHOLDER = "..."


_MAX_INT = 2**63 - 1  # everything ends up in SQLite INTEGER columns
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

Format = Literal["json", "yaml"]


def format_for(path: str) -> Format:
    """`.yaml`/`.yml` (any case) is YAML; everything else, including "-" (stdin/stdout), is JSON."""
    if path.lower().endswith((".yaml", ".yml")):
        return "yaml"
    return "json"


def _valid_env_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "=" not in name and "\x00" not in name


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
