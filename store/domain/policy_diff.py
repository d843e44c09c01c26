"""Policies compared rule by rule (no I/O), for history and drift reports.

Two versions of a policy are shown as the rules one adds to and removes from the other, rather
than as two opaque texts.
"""

from __future__ import annotations

import json
from typing import Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.policy_text import parse_policy

__all__ = ["rule_changes", "rules"]


def rules(doc: dict[str, Any]) -> list[str]:
    """Every rule of a policy as one line (`allow network host=api.x.com`), in document order,
    so two versions can be compared rule by rule instead of as two opaque texts."""
    out: list[str] = []
    perms = doc.get("permissions") or {}
    for kind in ("storage", "network", "environment", "ipc"):
        section = perms.get(kind)
        if not isinstance(section, dict):
            continue
        for verdict in ("allow", "deny"):
            for entry in section.get(verdict) or []:
                if not isinstance(entry, dict):
                    continue
                fields = " ".join(
                    f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in entry.items()
                )
                out.append(f"{verdict} {kind} {fields}")
    resources = perms.get("resources")
    if isinstance(resources, dict):
        limits = resources.get("limits")
        for key, value in limits.items() if isinstance(limits, dict) else []:
            if value is not None:
                out.append(f"limit {key}={value}")
        for key in ("cpu", "memory", "io"):
            if resources.get(key) is not None:
                out.append(f"limit {key}={resources[key]} (legacy)")
    if perms.get("runtime"):
        out.append("runtime " + json.dumps(perms["runtime"], sort_keys=True, default=str))
    return out


def rule_changes(before: str | None, after: str | None) -> dict[str, list[str]]:
    """The rules `after` adds to and removes from `before` (either may be absent or invalid;
    an unreadable text counts as having no rules)."""

    def of(text: str | None) -> list[str]:
        if text is None:
            return []
        try:
            return rules(parse_policy(text))
        except ValidationError:
            return []

    old, new = of(before), of(after)
    return {
        "added": [r for r in new if r not in old],
        "removed": [r for r in old if r not in new],
    }
