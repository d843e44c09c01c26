"""Event models (pure): what each event type carries, its version, and how old versions upcast.

The data dicts are the JSON stored in the log; models validate them on the way in and out.
Secret *values* have no field anywhere here: only key names are events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from wassette_state.store.domain.state import INSTANCE_STREAM

__all__ = ["INSTANCE_STREAM"]  # re-exported: events name their streams


class _Event(BaseModel):
    # Built on first use: read-only commands never validate an event, and start-up counts.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class ComponentAttached(_Event):
    type: Literal["component.attached"] = "component.attached"
    component_id: str
    source_uri: str
    wasm_sha256: str
    metadata: dict[str, Any]


class ComponentDetached(_Event):
    type: Literal["component.detached"] = "component.detached"
    component_id: str


class PolicyAttached(_Event):
    type: Literal["policy.attached"] = "policy.attached"
    component_id: str
    source_uri: str
    policy_content: str
    attached_at: int


class PolicyChanged(_Event):
    type: Literal["policy.changed"] = "policy.changed"
    component_id: str
    policy_content: str
    change: dict[str, Any]
    # Used only when the change creates the component's first policy (a grant on none).
    source_uri: str | None = None
    attached_at: int | None = None


class PolicyDetached(_Event):
    type: Literal["policy.detached"] = "policy.detached"
    component_id: str


class SecretKeysSet(_Event):
    type: Literal["secret.keys_set"] = "secret.keys_set"
    component_id: str
    keys: list[str]


class SecretKeysDeleted(_Event):
    type: Literal["secret.keys_deleted"] = "secret.keys_deleted"
    component_id: str
    keys: list[str]


class EnvSet(_Event):
    type: Literal["env.set"] = "env.set"
    key: str
    value: str


class EnvUnset(_Event):
    type: Literal["env.unset"] = "env.unset"
    key: str


class PathsSet(_Event):
    type: Literal["paths.set"] = "paths.set"
    component_dir: str
    secrets_dir: str


Event = Annotated[
    ComponentAttached
    | ComponentDetached
    | PolicyAttached
    | PolicyChanged
    | PolicyDetached
    | SecretKeysSet
    | SecretKeysDeleted
    | EnvSet
    | EnvUnset
    | PathsSet,
    Field(discriminator="type"),
]
_adapter: TypeAdapter[Event] | None = None


def event_adapter() -> TypeAdapter[Event]:
    global _adapter
    if _adapter is None:
        _adapter = TypeAdapter(Event)
    return _adapter


_MEMBERS: tuple[type[_Event], ...] = get_args(get_args(Event)[0])  # the Event union's
EVENT_TYPES: tuple[str, ...] = tuple(m.model_fields["type"].default for m in _MEMBERS)
# the types whose events belong to one component's stream (the rest are instance settings)
COMPONENT_EVENT_TYPES = frozenset(
    m.model_fields["type"].default for m in _MEMBERS if "component_id" in m.model_fields
)
ENV_EVENT_TYPES = frozenset(t for t in EVENT_TYPES if t.startswith("env."))

# Current version of every type; bump one and register an upcaster from the old version.
TYPE_VERSIONS: dict[str, int] = dict.fromkeys(EVENT_TYPES, 1)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type, from_version) -> function turning that version's data into from_version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcast(type_: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring stored data of an old type version up to the current one, step by step."""
    current = TYPE_VERSIONS.get(type_)
    if current is None:
        raise ValueError(f"unknown event type {type_!r}")
    while version < current:
        step = UPCASTERS.get((type_, version))
        if step is None:
            raise ValueError(f"no upcaster for {type_} v{version}")
        data = step(data)
        version += 1
    if version > current:
        raise ValueError(f"{type_} v{version} is newer than this tool (v{current})")
    return data


def stream_of(event: Event) -> str:
    """Component events go to the component's stream, settings to the instance stream."""
    return getattr(event, "component_id", None) or INSTANCE_STREAM


def to_data(event: Event) -> dict[str, Any]:
    """The stored form: every field but the discriminator."""
    # Shallow on purpose: events are frozen and their dicts never mutated, and a deep dump of
    # 50 KB of tool schemas per attach is the slowest step of a large import.
    return {k: v for k, v in event.__dict__.items() if k != "type" and v is not None}


def from_data(type_: str, version: int, data: dict[str, Any]) -> Event:
    return event_adapter().validate_python({**upcast(type_, version, data), "type": type_})


_MODELS: dict[str, type[BaseModel]] = {m.model_fields["type"].default: m for m in _MEMBERS}


def from_data_trusted(type_: str, version: int, data: dict[str, Any]) -> Event:
    """Build without validating: only for data this code validated when it appended it."""
    found = _MODELS.get(type_)
    if found is None:
        raise ValueError(f"unknown event type {type_!r}")
    return found.model_construct(**upcast(type_, version, data))  # type: ignore[return-value]
