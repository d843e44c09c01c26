"""Secret keys and their values: set, delete, list, and the hints that say how to give the
values a snapshot or manifest cannot carry (values never enter the log)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import (
    NotFound,
    StoreError,
    ValidationError,
)
from wassette_state.store.domain.state import State, check_env_key, check_id
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases.inputs import require_component
from wassette_state.store.usecases.service import Decision, Outcome, Store


def refuse_assignment_as_id(component_id: str) -> None:
    """`secret set KEY=VALUE …` with the id forgotten: say so without repeating the argument,
    which holds a value."""
    if "=" in component_id:
        raise ValidationError(
            "the first argument must be the component id, not a KEY=VALUE assignment "
            "(arguments are not shown: they may hold secret values)"
        )


def secret_set(store: Store, component_id: str, values: dict[str, str]) -> Outcome:
    """Values to the secrets file, key names to the log, as one two-phase change: the new file
    is staged before the commit and put in place after it (store.staging)."""
    from wassette_state.store.usecases import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    store.component(component_id)
    store.check_dirs()
    store.repair_files()
    secrets_dir = store.settings.secrets_dir
    staging.refuse_link(secrets_dir, component_id)
    keys = sorted(values)

    def decide(state: State) -> Decision:
        require_component(state, component_id)
        return Decision(
            [ev.SecretKeysSet(component_id=component_id, keys=keys)],
            summary={"component_id": component_id, "keys": keys},
        )

    def plan(base: State, events: list[ev.Event]) -> staging.Plan:
        # Read under the secrets lock: two `secret set` at once must not lose a value.
        return {component_id: {**secret_files.read_values(secrets_dir, component_id), **values}}

    return store.execute(
        f"secret set {component_id} {' '.join(keys)}",
        decide,
        retry=True,
        scope={component_id},
        stage=staging.SecretsChange(store, plan),
    )


def secret_delete(store: Store, component_id: str, keys: list[str]) -> Outcome:
    from wassette_state.store.usecases import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    if not keys:
        raise ValidationError("no keys given")
    for i, k in enumerate(keys, 1):
        if "=" in k:  # KEY=VALUE where a key name belongs: never repeated
            raise ValidationError(f"key {i}: a key name, not KEY=VALUE (argument not shown)")
        check_env_key(k, f"key {i}")
    store.check_dirs()
    store.repair_files()
    secrets_dir = store.settings.secrets_dir
    comp = require_component(store.state(scope={component_id}), component_id)
    on_disk = secret_files.read_values(secrets_dir, component_id)
    unknown = [k for k in keys if k not in comp.secret_keys and k not in on_disk]
    if unknown:
        raise NotFound(f"component {component_id!r} has no secret {unknown[0]!r}")
    if set(keys) & set(on_disk):
        staging.refuse_link(secrets_dir, component_id)
    gone = set(keys)

    def decide(state: State) -> Decision:
        current = require_component(state, component_id)
        declared = sorted(k for k in gone if k in current.secret_keys)
        out: list[ev.Event] = []
        if declared:
            out.append(ev.SecretKeysDeleted(component_id=component_id, keys=declared))
        return Decision(out, summary={"component_id": component_id, "keys": sorted(gone)})

    def plan(base: State, events: list[ev.Event]) -> staging.Plan:
        values = secret_files.read_values(secrets_dir, component_id)
        if not gone & set(values):
            return {}
        return {component_id: {k: v for k, v in values.items() if k not in gone}}

    with staging.locked(store):
        outcome = store.execute(
            f"secret delete {component_id} {' '.join(keys)}",
            decide,
            retry=True,
            scope={component_id},
            stage=staging.SecretsChange(store, plan),
        )
        if outcome.tx_id is None:
            # Only values the log never declared (added by hand): no transaction to stage for.
            remaining = plan(outcome.state, [])
            if remaining:
                secret_files.write_values(secrets_dir, component_id, remaining[component_id])
    return outcome


@dataclass(frozen=True)
class SecretEntry:
    key: str
    declared: bool
    has_value: bool
    value: str | None


def secret_list(store: Store, component_id: str, show_values: bool = False) -> list[SecretEntry]:
    from wassette_state.store.usecases import staging

    refuse_assignment_as_id(component_id)
    check_id(component_id)
    try:  # a change an interrupted command committed is read, not the old file
        staging.recover(store)
    except StoreError as e:  # a read goes on (a read-only copy): the next change settles it
        logging.getLogger("wassette").warning("%s", e)
    comp = require_component(store.state(scope={component_id}), component_id)
    values = secret_files.read_values(store.settings.secrets_dir, component_id)
    keys = sorted(set(comp.secret_keys) | set(values))
    return [
        SecretEntry(
            key=k,
            declared=k in comp.secret_keys,
            has_value=k in values,
            value=values.get(k) if show_values else None,
        )
        for k in keys
    ]


def secrets_needed(
    store: Store, state: State, ids: list[str] | None = None
) -> dict[str, list[str]]:
    """Declared secret keys with no value on disk, per component."""
    out: dict[str, list[str]] = {}
    for cid in sorted(ids if ids is not None else state.components):
        comp = state.components.get(cid)
        if comp is None or not comp.secret_keys:
            continue
        values = secret_files.read_values(store.settings.secrets_dir, cid)
        missing = [k for k in comp.secret_keys if k not in values]
        if missing:
            out[cid] = missing
    return out
