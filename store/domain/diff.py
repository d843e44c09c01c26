"""Differences between two states, and the events that turn one into the other (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.state import Component, State


@dataclass(frozen=True)
class Change:
    component_id: str | None  # None for instance settings
    field: str
    before: Any
    after: Any
    # A policy change: the rules it adds and removes (`policy_diff.rule_changes`).
    rules: dict[str, list[str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "component_id": self.component_id,
            "field": self.field,
            "before": self.before,
            "after": self.after,
        }
        if self.rules is not None:
            out["rules_added"] = self.rules["added"]
            out["rules_removed"] = self.rules["removed"]
        return out


def _policy_view(c: Component | None) -> dict[str, Any] | None:
    if c is None or c.policy is None:
        return None
    return {
        "source_uri": c.policy.source_uri,
        "policy_content": c.policy.policy_content,
        "attached_at": c.policy.attached_at,
    }


def diff(a: State, b: State) -> list[Change]:
    """What differs from a to b: per component field, then env vars, then paths."""
    from wassette_state.store.domain.policy_diff import rule_changes

    out: list[Change] = []
    for cid in sorted(set(a.components) | set(b.components)):
        ca, cb = a.components.get(cid), b.components.get(cid)
        if ca is None or cb is None:
            out.append(
                Change(cid, "component", "present" if ca else None, "present" if cb else None)
            )
        if (ca.wasm_sha256 if ca else None) != (cb.wasm_sha256 if cb else None):
            out.append(
                Change(
                    cid,
                    "wasm_sha256",
                    ca.wasm_sha256 if ca else None,
                    cb.wasm_sha256 if cb else None,
                )
            )
        if ca and cb and ca.source_uri != cb.source_uri:
            out.append(Change(cid, "source_uri", ca.source_uri, cb.source_uri))
        if ca and cb and ca.wasm_sha256 == cb.wasm_sha256 and ca.metadata != cb.metadata:
            out.append(Change(cid, "metadata", "(previous metadata)", "(new metadata)"))
        pa, pb = _policy_view(ca), _policy_view(cb)
        if pa != pb:
            rules = rule_changes(
                pa["policy_content"] if pa else None, pb["policy_content"] if pb else None
            )
            out.append(Change(cid, "policy", pa, pb, rules))
        ka = list(ca.secret_keys) if ca else []
        kb = list(cb.secret_keys) if cb else []
        if ka != kb:
            out.append(Change(cid, "secret_keys", ka, kb))
    for key in sorted(set(a.environment) | set(b.environment)):
        va, vb = a.environment.get(key), b.environment.get(key)
        if va != vb:
            out.append(Change(None, f"env.{key}", va, vb))
    if a.paths != b.paths:
        out.append(
            Change(
                None,
                "paths",
                a.paths.__dict__ if a.paths else None,
                b.paths.__dict__ if b.paths else None,
            )
        )
    return out


def reconcile(
    current: State,
    target: State,
    *,
    prune: bool = True,
    components: set[str] | None = None,
    environment: bool = True,
) -> tuple[list[ev.Event], list[str]]:
    """Events (and a readable plan) that make `current` equal to `target`.

    `prune=False` leaves components and env vars that the target lacks (an import's merge);
    paths are local and never reconciled.
    """
    out: list[ev.Event] = []
    plan: list[str] = []
    ids = set(target.components) if components is None else set(components)
    if prune:
        ids |= set(current.components)
    for cid in sorted(ids):
        cur, want = current.components.get(cid), target.components.get(cid)
        if want is None:
            if cur is not None:
                out.append(ev.ComponentDetached(component_id=cid))
                plan.append(f"detach {cid}")
            continue
        if (
            cur is None
            or cur.wasm_sha256 != want.wasm_sha256
            or cur.metadata != want.metadata
            or cur.source_uri != want.source_uri
        ):
            out.append(
                ev.ComponentAttached(
                    component_id=cid,
                    source_uri=want.source_uri,
                    wasm_sha256=want.wasm_sha256,
                    metadata=want.metadata.doc,
                )
            )
            plan.append(f"attach {cid} (sha256 {want.wasm_sha256[:12]})")
        # A re-attach keeps policy and keys (see fold), a first attach starts without them.
        base_policy = _policy_view(cur)
        base_keys = set(cur.secret_keys) if cur is not None else set()
        want_policy = _policy_view(want)
        if want_policy is None:
            if base_policy is not None:
                out.append(ev.PolicyDetached(component_id=cid))
                plan.append(f"detach policy of {cid}")
        elif want_policy != base_policy:
            assert want.policy is not None
            out.append(
                ev.PolicyAttached(
                    component_id=cid,
                    source_uri=want.policy.source_uri or "",
                    policy_content=want.policy.policy_content,
                    attached_at=want.policy.attached_at or 0,
                )
            )
            plan.append(f"attach policy to {cid}")
        want_keys = set(want.secret_keys)
        if want_keys - base_keys:
            keys = sorted(want_keys - base_keys)
            out.append(ev.SecretKeysSet(component_id=cid, keys=keys))
            plan.append(f"declare secret keys {', '.join(keys)} for {cid}")
        if base_keys - want_keys:
            keys = sorted(base_keys - want_keys)
            out.append(ev.SecretKeysDeleted(component_id=cid, keys=keys))
            plan.append(f"delete secret keys {', '.join(keys)} of {cid}")
    if environment:
        for key, value in sorted(target.environment.items()):
            if current.environment.get(key) != value:
                out.append(ev.EnvSet(key=key, value=value))
                plan.append(f"set env {key}")
        if prune:
            for key in sorted(set(current.environment) - set(target.environment)):
                out.append(ev.EnvUnset(key=key))
                plan.append(f"unset env {key}")
    return out, plan
