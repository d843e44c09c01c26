"""A state as a manifest (no I/O): the document, the notes of what it cannot carry, the bytes.

A manifest carries less than a state (no secrets, no environment, no deny lists, ...): every
loss is a `Note` the export reports, never dropped silently. `permissions_of` puts a policy in
the canonical form of what a manifest can carry, to compare the two.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from wassette_state.store.domain.manifest_model import (
    MANIFEST_VERSION,
    POLICY_DESCRIPTION,
    Format,
    Note,
)

# ------------------------------------------------------------------ permissions, compared


def permissions_of(policy: str | Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """The permissions a manifest can carry, in a canonical form (sets, sorted), to compare a
    policy with what Wassette provisions from a manifest: network hosts, storage `(uri,
    access)` and environment keys."""
    from wassette_state.store.domain.policy_text import parse_policy

    if policy is None:
        return {"network": [], "storage": [], "environment": []}
    doc = parse_policy(policy) if isinstance(policy, str) else policy
    perms = doc.get("permissions") or {}

    def allow(kind: str) -> list[Any]:
        section = perms.get(kind) or {}
        return list(section.get("allow") or []) if isinstance(section, dict) else []

    return {
        "network": sorted({e["host"] for e in allow("network") if "host" in e}),
        "storage": sorted(
            {(e["uri"], tuple(sorted(set(e.get("access") or ())))) for e in allow("storage")}
        ),
        "environment": sorted({e["key"] for e in allow("environment")}),
    }


# ------------------------------------------------------------------ writing


@dataclass
class _Split:
    """A policy cut into what the manifest carries and what it does not."""

    network: list[str] = field(default_factory=list)
    storage: list[dict[str, Any]] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (what, detail)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _split_policy(doc: Mapping[str, Any]) -> _Split:
    out = _Split()
    perms = doc.get("permissions") or {}
    net = perms.get("network") or {}
    for entry in net.get("allow") or ():
        if "host" in entry:
            out.network.append(entry["host"])
        else:
            out.lost.append(("network.cidr", f"allow {_show(entry)}: a manifest allows hosts only"))
    if net.get("deny"):
        out.lost.append(("network.deny", f"{_show(net['deny'])}: a manifest has no deny lists"))
    storage = perms.get("storage") or {}
    for entry in storage.get("allow") or ():
        uri = entry.get("uri")
        if isinstance(uri, str) and uri.startswith("fs://"):
            out.storage.append({"uri": uri, "access": list(entry.get("access") or ())})
        else:
            out.lost.append(
                ("storage.uri", f"allow {_show(entry)}: a manifest takes fs:// uris only")
            )
    if storage.get("deny"):
        out.lost.append(("storage.deny", f"{_show(storage['deny'])}: a manifest has no deny lists"))
    env = perms.get("environment") or {}
    for entry in env.get("allow") or ():
        if entry["key"] not in out.environment:  # Wassette refuses a key twice; same permission
            out.environment.append(entry["key"])
    for kind in ("runtime", "resources", "ipc"):
        if perms.get(kind):
            hint = (
                " (its memory_bytes/cpu_time_ms set no limit in Wassette 0.8.0)"
                if kind == "resources"
                else ""
            )
            out.lost.append((kind, f"{_show(perms[kind])}: not in a manifest{hint}"))
    return out


def _name_and_notes(cid: str, doc: Mapping[str, Any], split: _Split) -> tuple[str, list[Note]]:
    """The `name` to write and what of the policy's head the manifest loses. Wassette writes
    the description `Auto-generated policy for <name>`, so a description of that form is
    carried by its name; any other is lost (the name is then the id, a readable label)."""
    notes: list[Note] = []
    description = doc.get("description")
    name = cid
    if isinstance(description, str) and description.startswith(POLICY_DESCRIPTION):
        rest = description[len(POLICY_DESCRIPTION) :]
        if rest:
            name = rest
    elif description is not None:
        notes.append(
            Note(
                cid,
                "policy.description",
                f"{_show(description)[:120]}: Wassette writes '{POLICY_DESCRIPTION}{cid}'",
            )
        )
    elif split.network or split.storage or split.environment:
        notes.append(
            Note(cid, "policy.description", f"none: Wassette writes '{POLICY_DESCRIPTION}{cid}'")
        )
    if str(doc.get("version")) != "1.0":
        notes.append(
            Note(cid, "policy.version", f"{_show(doc.get('version'))}: Wassette writes '1.0'")
        )
    if "$schema" in doc:
        notes.append(Note(cid, "policy.$schema", f"{_show(doc['$schema'])[:120]}: not kept"))
    return name, notes


def component_entry(
    cid: str, uri: str, sha256: str, policy: str | None, secret_keys: tuple[str, ...]
) -> tuple[dict[str, Any], list[Note]]:
    """One `components[]` entry and the notes of what it cannot carry."""
    from wassette_state.store.domain.policy_text import parse_policy

    notes: list[Note] = []
    perms: dict[str, Any] = {}
    name = cid
    if policy is None:
        notes.append(
            Note(
                cid,
                "policy",
                "none: written as 'permissions: {}', which provisions no policy into a component "
                "dir without one, but leaves a policy already there in place (a manifest cannot "
                "remove one)",
            )
        )
    else:
        doc = parse_policy(policy)
        split = _split_policy(doc)
        name, head = _name_and_notes(cid, doc, split)
        notes.extend(head)
        notes.extend(Note(cid, what, detail) for what, detail in split.lost)
        if split.network:
            perms["network"] = {"allow": [{"host": h} for h in split.network]}
        if split.storage:
            perms["storage"] = {"allow": split.storage}
        if split.environment:
            perms["environment"] = {"allow": [{"key": k} for k in split.environment]}
        if not perms:
            notes.append(
                Note(
                    cid,
                    "policy",
                    "grants nothing a manifest carries: written as 'permissions: {}', so "
                    "Wassette writes no policy file for it (and keeps one already there)",
                )
            )
    if secret_keys:
        keys = ", ".join(secret_keys)
        notes.append(
            Note(
                cid,
                "secret_keys",
                f"{keys}: a manifest carries no secrets; Wassette reads their values from its "
                f"secrets dir: copy the secrets file, or give them as KEY=VALUE lines on the "
                f"stdin of '{_stdin_command(cid)}'",
            )
        )
    entry: dict[str, Any] = {"uri": uri, "name": name, "digest": f"sha256:{sha256}"}
    entry["permissions"] = perms
    return entry, notes


def manifest_doc(
    components: Mapping[str, tuple[str | None, str, str | None, tuple[str, ...]]],
    environment: Mapping[str, str],
) -> tuple[dict[str, Any], list[Note]]:
    """A manifest for `components` (id → (uri or None, wasm sha256, policy text or None,
    secret keys)) and everything it cannot carry. A component without a uri (no file named
    `<id>.wasm` holds its bytes) is left out and reported. Sorted by id: deterministic."""
    entries: list[dict[str, Any]] = []
    notes: list[Note] = []
    for cid in sorted(components):
        uri, sha, policy, keys = components[cid]
        if uri is None:
            notes.append(
                Note(
                    cid,
                    "component",
                    f"left out: no file named {cid}.wasm holds its bytes (sha256 {sha[:12]}…) "
                    "where it was attached from or in the component dir, and Wassette names a "
                    "component after its file; export with --wasm-dir DIR to write one",
                )
            )
            continue
        entry, more = component_entry(cid, uri, sha, policy, keys)
        entries.append(entry)
        notes.extend(more)
    if environment:
        notes.append(
            Note(
                None,
                "environment",
                f"{', '.join(sorted(environment))}: a manifest has no environment variables; "
                "give them to 'wassette serve' with --env KEY=VALUE or --env-file FILE",
            )
        )
    return {"version": MANIFEST_VERSION, "components": entries}, notes


def file_uri(path: str) -> str:
    """The uri Wassette reads as `path`: the path as is, never percent-encoded."""
    return "file://" + path


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_manifest(doc: dict[str, Any], fmt: Format) -> bytes:
    """Deterministic YAML (block style, pure-Python emitter) or pretty JSON."""
    if fmt == "json":
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    text: str = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
    )
    return text.encode()


def _stdin_command(component_id: str) -> str:
    """The hint's command: values on stdin, never on a command line others read in /proc."""
    from wassette_state.store.domain.secret_hints import secret_set_command

    return secret_set_command(component_id, [], "wassette-state")
