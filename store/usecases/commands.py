"""Commands that change state: validate input, decide events (pure closures), execute.

Each function validates everything before it writes anything, so a refused command leaves the
database and the files byte-identical.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import (
    NotFound,
    ValidationError,
)
from wassette_state.store.domain.state import State, check_env_key, check_id
from wassette_state.store.usecases.inputs import (
    build_metadata,
    check_secrets_name,
    load_component,
    load_policy,
    local_path,
    require_component,
)
from wassette_state.store.usecases.service import Decision, Outcome, Store

# ------------------------------------------------------------------ inputs


# ------------------------------------------------------------------ components


def attach(
    store: Store, source: str, component_id: str | None = None, policy_file: str | None = None
) -> Outcome:
    # The policy first: a refusal must not leave even an introspection cache entry behind.
    policy = load_policy(policy_file) if policy_file else None
    path = local_path(source, "component file")
    check_secrets_name(store.component_ids(), component_id or path.stem)
    loaded = load_component(store, source, component_id)
    now = int(time.time())

    def decide(state: State) -> Decision:
        check_secrets_name(set(state.components), loaded.component_id)
        existing = state.components.get(loaded.component_id)
        out: list[ev.Event] = []
        if existing is None or existing.wasm_sha256 != loaded.sha256:
            out.append(
                ev.ComponentAttached(
                    component_id=loaded.component_id,
                    source_uri=loaded.source_uri,
                    wasm_sha256=loaded.sha256,
                    metadata=build_metadata(loaded, now),
                )
            )
        if policy is not None and (
            existing is None
            or existing.policy is None
            or existing.policy.policy_content != policy.content
            or existing.policy.source_uri != policy.source_uri
        ):
            out.append(
                ev.PolicyAttached(
                    component_id=loaded.component_id,
                    source_uri=policy.source_uri,
                    policy_content=policy.content,
                    attached_at=now,
                )
            )
        return Decision(
            out,
            summary={
                "component_id": loaded.component_id,
                "tools": len(loaded.tools.tool_names),
                "unchanged": not out,
            },
        )

    store.blobs.put(loaded.data, loaded.sha256)
    outcome = store.execute(
        f"component attach {loaded.source_uri} --id {loaded.component_id}", decide
    )
    if outcome.tx_id is None:
        # Nothing to record, but after `attach` the component's files must be there (someone
        # may have removed them): materializing writes only what differs.
        store.materialize({loaded.component_id})
    return outcome


def detach(store: Store, component_id: str, keep_secret_values: bool = False) -> Outcome:
    """The component leaves the state with its files and, unless `keep_secret_values`, its
    secrets file: a component attached later under this id inherits no values."""
    from wassette_state.store.usecases import staging

    check_id(component_id)

    def decide(state: State) -> Decision:
        require_component(state, component_id)
        return Decision([ev.ComponentDetached(component_id=component_id)])

    return store.execute(
        f"component detach {component_id}"
        + (" --keep-secret-values" if keep_secret_values else ""),
        decide,
        scope={component_id},
        stage=staging.SecretsChange(
            store, staging.leaving_values(store, keep_secret_values), keep_secret_values
        ),
    )


# ------------------------------------------------------------------ policies


def policy_attach(store: Store, component_id: str, source: str) -> Outcome:
    check_id(component_id)
    policy = load_policy(source)
    now = int(time.time())

    def decide(state: State) -> Decision:
        comp = require_component(state, component_id)
        if comp.policy and (comp.policy.policy_content, comp.policy.source_uri) == (
            policy.content,
            policy.source_uri,
        ):
            return Decision([], summary={"unchanged": True})
        return Decision(
            [
                ev.PolicyAttached(
                    component_id=component_id,
                    source_uri=policy.source_uri,
                    policy_content=policy.content,
                    attached_at=now,
                )
            ]
        )

    return store.execute(
        f"policy attach {component_id} {policy.source_uri}", decide, scope={component_id}
    )


def policy_detach(store: Store, component_id: str) -> Outcome:
    check_id(component_id)

    def decide(state: State) -> Decision:
        comp = require_component(state, component_id)
        if comp.policy is None:
            raise NotFound(f"component {component_id!r} has no policy attached")
        return Decision([ev.PolicyDetached(component_id=component_id)])

    return store.execute(f"policy detach {component_id}", decide, scope={component_id})


def permission(
    store: Store,
    op: str,
    component_id: str,
    kind: str | None = None,
    value: str | None = None,
    access: list[str] | None = None,
) -> Outcome:
    """grant / revoke / reset as `policy.changed`; safe to re-decide, so it retries."""
    from wassette_state.store.domain.policy_edit import grant, revoke

    check_id(component_id)
    component_dir = store.settings.component_dir
    now = int(time.time())

    # The edit of each policy text decided on: the validation below and the decision usually
    # see the same text, and rendering the edited policy (YAML) is the command's main CPU cost.
    edits: dict[str | None, tuple[str, dict[str, Any]]] = {}

    def decide(state: State) -> Decision:
        comp = require_component(state, component_id)
        content = comp.policy.policy_content if comp.policy else None
        if op in ("grant", "revoke"):
            assert kind is not None and value is not None
            if content not in edits:
                edit = grant if op == "grant" else revoke
                edits[content] = edit(content, component_id, kind, value, access)
            new, change = edits[content][0], copy.deepcopy(edits[content][1])
        else:
            # As Wassette's reset does: the policy goes away (file and meta), not just its
            # permissions.
            change = {"op": "reset"}
            if comp.policy is None:
                return Decision([], summary={"unchanged": True, "change": change})
            return Decision(
                [ev.PolicyDetached(component_id=component_id)], summary={"change": change}
            )
        if new == content:
            return Decision([], summary={"unchanged": True, "change": change})
        creating = comp.policy is None
        policy_path = component_dir / f"{component_id}.policy.yaml"
        return Decision(
            [
                ev.PolicyChanged(
                    component_id=component_id,
                    policy_content=new,
                    change=change,
                    source_uri=policy_path.as_uri() if creating else None,
                    attached_at=now if creating else None,
                )
            ],
            summary={"change": change},
        )

    words = " ".join(x for x in (op, kind or "", component_id, value or "") if x)
    if access:
        words += f" --access {','.join(access)}"
    # Validate before touching anything (the decide closure re-validates on the live state).
    decide(store.state(scope={component_id}))
    return store.execute(f"permission {words}", decide, retry=True, scope={component_id})


# ------------------------------------------------------------------ secrets


# ------------------------------------------------------------------ environment


def env_set(store: Store, values: dict[str, str]) -> Outcome:
    def decide(state: State) -> Decision:
        changed: list[ev.Event] = [
            ev.EnvSet(key=k, value=v)
            for k, v in sorted(values.items())
            if state.environment.get(k) != v
        ]
        return Decision(changed, summary={"keys": sorted(values)})

    return store.execute(f"env set {' '.join(sorted(values))}", decide, retry=True, scope=set())


def env_unset(store: Store, keys: list[str]) -> Outcome:
    if not keys:
        raise ValidationError("no keys given")
    for i, k in enumerate(keys, 1):
        if "=" in k:  # KEY=VALUE where a name belongs: never repeated
            raise ValidationError(f"key {i}: a variable name, not KEY=VALUE (argument not shown)")
        check_env_key(k, f"key {i}")
    environment = store.state(scope=set()).environment  # one read for all keys, not one per key
    missing = [k for k in keys if k not in environment]
    if missing:
        raise NotFound(f"environment variable {missing[0]!r} is not set")

    def decide(state: State) -> Decision:
        return Decision(
            [ev.EnvUnset(key=k) for k in sorted(set(keys)) if k in state.environment],
            summary={"keys": sorted(set(keys))},
        )

    return store.execute(f"env unset {' '.join(keys)}", decide, retry=True, scope=set())
