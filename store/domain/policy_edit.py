"""The grant/revoke edits of a policy (no I/O): text in, new text and a change record out.

The text is `dump_policy` of the edited document, except that an edit which changes nothing (a
repeated grant, a reset of an empty policy) returns the input text itself, comments and all.
Edits copy only the containers they touch, so aliases in the source YAML cannot carry an edit
somewhere else.
"""

from __future__ import annotations

from typing import Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.policy_text import dump_policy, parse_policy, wassette_form
from wassette_state.store.domain.policy_validate import (
    _ACCESS,
    _check_access,
    _check_cidr,
    _check_host,
    _check_key,
    _check_memory,
    _check_uri,
    _fail,
    _show,
    validate_policy,
)

__all__ = ["PERMISSION_KINDS", "grant", "revoke"]

PERMISSION_KINDS = ("storage", "network", "environment-variable", "memory")


def _start(content: str | None, component_id: str, *, create: bool) -> dict[str, Any]:
    if content is None:
        if not create:
            raise ValidationError(f"policy: component {_show(component_id)} has no policy")
        return {
            "version": "1.0",
            "description": f"Auto-generated policy for component: {component_id}",
            "permissions": {},
        }
    doc = dict(parse_policy(content))
    doc["permissions"] = dict(doc["permissions"])
    return doc


def _finish(
    doc: dict[str, Any], change: dict[str, Any], content: str | None, *, changed: bool
) -> tuple[str, dict[str, Any]]:
    """The edited text; an edit that changes nothing returns `content` itself, byte for byte
    (comments and layout included), so the caller can tell a no-op from a change."""
    if content is not None and not changed:
        return content, change
    validate_policy(doc)
    return dump_policy(wassette_form(doc)), change


def _check_kind(kind: Any) -> None:
    if kind not in PERMISSION_KINDS or not isinstance(kind, str):
        raise ValidationError(
            f"policy: permission kind {_show(kind)}: unknown kind "
            f"(expected one of {', '.join(PERMISSION_KINDS)})"
        )


def _normalize_access(path: str, access: list[str] | None) -> list[str]:
    """Requested access as a canonical list (read before write, no duplicates)."""
    requested = _check_access(path, access)
    return [a for a in _ACCESS if a in requested]


def _network_entry(value: Any) -> dict[str, str]:
    """`{cidr: v}` for a value with '/' that is not a URL, else `{host: v}` (validated)."""
    if isinstance(value, str) and "/" in value and "://" not in value:
        _check_cidr("network cidr", value)
        return {"cidr": value}
    _check_host("network host", value)
    return {"host": value}


def _section(perms: dict[str, Any], name: str) -> dict[str, Any]:
    """A fresh copy of permissions[name] (None → {}), stored back into `perms`."""
    section = dict(perms.get(name) or {})
    perms[name] = section
    return section


def _allow(section: dict[str, Any]) -> list[Any]:
    allow = list(section.get("allow") or [])
    section["allow"] = allow
    return allow


def _prune(perms: dict[str, Any], name: str) -> None:
    """An emptied `allow` list becomes null and the section stays, as Wassette leaves it."""
    section = perms[name]
    if not section.get("allow"):
        section["allow"] = None


def _reject_access(kind: str, access: list[str] | None) -> None:
    if access is not None:
        _fail("access", access, f"access applies only to storage, not {kind}")


def grant(
    content: str | None,
    component_id: str,
    kind: str,
    value: str,
    access: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Add a permission to a policy (creating the policy when `content` is None)."""
    _check_kind(kind)
    if kind == "storage":
        _check_uri("storage uri", value)
        wanted = _normalize_access("storage access", access)
    elif kind == "network":
        _reject_access(kind, access)
        entry = _network_entry(value)
    elif kind == "environment-variable":
        _reject_access(kind, access)
        _check_key("environment key", value)
    else:
        _reject_access(kind, access)
        if not isinstance(value, str):
            _fail("memory limit", value, "memory limit must be a string")
        _check_memory("memory limit", value)

    doc = _start(content, component_id, create=True)
    perms = doc["permissions"]
    change: dict[str, Any] = {"op": "grant", "kind": kind}
    changed = True

    if kind == "storage":
        allow = _allow(_section(perms, "storage"))
        for index, existing in enumerate(allow):
            if existing["uri"] == value:
                merged = [a for a in _ACCESS if a in existing["access"] or a in wanted]
                changed = set(merged) != set(existing["access"])
                if changed:
                    allow[index] = {**existing, "access": merged}
                break
        else:
            allow.append({"uri": value, "access": wanted})
        change.update(uri=value, access=wanted)
    elif kind in ("network", "environment-variable"):
        if kind == "network":
            allow = _allow(_section(perms, "network"))
        else:
            allow, entry = _allow(_section(perms, "environment")), {"key": value}
        changed = entry not in allow
        if changed:
            allow.append(entry)
        change.update(entry)
    else:
        resources = _section(perms, "resources")
        limits = dict(resources.get("limits") or {})
        resources["limits"] = limits
        changed = limits.get("memory") != value
        limits["memory"] = value
        change.update(limit=value)
    return _finish(doc, change, content, changed=changed)


def revoke(
    content: str | None,
    component_id: str,
    kind: str,
    value: str,
    access: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Remove a granted permission from a policy's allow list (or its memory limit).

    Storage: `access=None` removes the whole entry, otherwise only the listed access (the entry
    goes when none is left). Memory: `value` must equal the current limit, or be "" for any.
    Emptied `allow` lists and sections are dropped; everything else is kept as it was.
    """
    _check_kind(kind)
    if kind != "storage":
        _reject_access(kind, access)
    doc = _start(content, component_id, create=False)
    perms = doc["permissions"]
    change: dict[str, Any] = {"op": "revoke", "kind": kind}

    if kind == "storage":
        wanted = None if access is None else _normalize_access("storage access", access)
        matches = [e for e in (perms.get("storage") or {}).get("allow") or [] if e["uri"] == value]
        if not matches:
            _fail("storage uri", value, "is not granted")
        granted = {a for e in matches for a in e["access"]}
        if wanted is None:
            removed = [a for a in _ACCESS if a in granted]
        else:
            missing = [a for a in wanted if a not in granted]
            if missing:
                _fail(f"storage uri {_show(value)} access", missing, "is not granted")
            removed = wanted
        allow = _allow(_section(perms, "storage"))
        kept: list[Any] = []
        for existing in allow:
            if existing["uri"] == value:
                left = [a for a in existing["access"] if a not in removed]
                if not left:
                    continue
                existing = {**existing, "access": left}
            kept.append(existing)
        allow[:] = kept
        _prune(perms, "storage")
        change.update(uri=value, access=removed)
    elif kind in ("network", "environment-variable"):
        if kind == "network":
            name, entry = "network", _network_entry(value)
        else:
            _check_key("environment key", value)
            name, entry = "environment", {"key": value}
        if entry not in ((perms.get(name) or {}).get("allow") or []):
            _fail(f"{kind} {next(iter(entry))}", value, "is not granted")
        allow = _allow(_section(perms, name))
        allow[:] = [e for e in allow if e != entry]
        _prune(perms, name)
        change.update(entry)
    else:
        limits = ((perms.get("resources") or {}).get("limits")) or {}
        current = limits.get("memory")
        if current is None:
            _fail("memory limit", value, "is not granted (no memory limit is set)")
        if value != "" and value != str(current):
            _fail("memory limit", value, f"is not granted (current limit: {_show(str(current))})")
        resources = _section(perms, "resources")
        limits = dict(limits)
        del limits["memory"]
        resources["limits"] = limits
        if not limits:
            del resources["limits"]
        if not resources:
            del perms["resources"]
        change.update(limit=str(current))
    return _finish(doc, change, content, changed=True)
