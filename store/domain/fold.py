"""The projection: state + event -> state. Pure; the read models and `verify` both rely on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.state import Component, Metadata, Paths, Policy, State


def evolve_component(
    current: Component | None, event: ev.Event, metadata: Metadata | None = None
) -> Component | None:
    """One component's next version; None means the component is not in the state.

    `metadata` is an attach's metadata already wrapped (with its JSON text), when the caller
    has it: equal to `event.metadata`, it only saves encoding the tool schemas again.
    """
    match event:
        case ev.ComponentAttached():
            meta = metadata if metadata is not None else Metadata.of(event.metadata)
            if current is None:
                return Component(
                    component_id=event.component_id,
                    source_uri=event.source_uri,
                    wasm_sha256=event.wasm_sha256,
                    metadata=meta,
                )
            return replace(
                current,
                source_uri=event.source_uri,
                wasm_sha256=event.wasm_sha256,
                metadata=meta,
            )
        case ev.ComponentDetached():
            return None
    if current is None:  # decide never emits these for an absent component; tolerate old logs
        return None
    match event:
        case ev.PolicyAttached():
            return replace(
                current,
                policy=Policy(event.policy_content, event.source_uri, event.attached_at),
            )
        case ev.PolicyChanged():
            if current.policy is None:
                policy = Policy(event.policy_content, event.source_uri, event.attached_at)
            else:
                policy = current.policy.with_content(event.policy_content)
            return replace(current, policy=policy)
        case ev.PolicyDetached():
            return replace(current, policy=None)
        case ev.SecretKeysSet():
            return replace(current, secret_keys=tuple(sorted({*current.secret_keys, *event.keys})))
        case ev.SecretKeysDeleted():
            gone = set(event.keys)
            return replace(
                current, secret_keys=tuple(k for k in current.secret_keys if k not in gone)
            )
    return current


def evolve_setting(key: str, current: object, event: ev.Event) -> object:
    """Instance settings: `env:<NAME>` -> value, `paths` -> Paths; None means unset."""
    match event:
        case ev.EnvSet() if key == f"env:{event.key}":
            return event.value
        case ev.EnvUnset() if key == f"env:{event.key}":
            return None
        case ev.PathsSet() if key == "paths":
            return Paths(event.component_dir, event.secrets_dir)
    return current


def setting_key(event: ev.Event) -> str | None:
    match event:
        case ev.EnvSet() | ev.EnvUnset():
            return f"env:{event.key}"
        case ev.PathsSet():
            return "paths"
    return None


def evolve(state: State, event: ev.Event) -> State:
    """Pure single step (copies the top-level maps); `project` is the fast path for many events."""
    return project([event], state)


def project(events: Iterable[ev.Event], state: State | None = None) -> State:
    """Fold many events, mutating private copies of the maps only."""
    base = state or State()
    components = dict(base.components)
    environment = dict(base.environment)
    paths = base.paths
    for event in events:
        cid = getattr(event, "component_id", None)
        if cid is not None:
            nxt = evolve_component(components.get(cid), event)
            if nxt is None:
                components.pop(cid, None)
            else:
                components[cid] = nxt
        elif isinstance(event, ev.EnvSet):
            environment[event.key] = event.value
        elif isinstance(event, ev.EnvUnset):
            environment.pop(event.key, None)
        elif isinstance(event, ev.PathsSet):
            paths = Paths(event.component_dir, event.secrets_dir)
    return State(components=components, environment=environment, paths=paths)
