"""Wassette policy documents: parse, validate, dump, and the grant/revoke/reset edits (no I/O).

A policy is the YAML document Wassette keeps next to a component (`<id>.policy.yaml`):

    version: "1.0"                       # a string starting with "1."
    description: "..."                   # optional
    permissions:                         # required, may be {}
      storage: {allow: [{uri, access: [read|write]}], deny: [...]}
      network: {allow: [{host} | {cidr}], deny: [...]}
      environment: {allow: [{key}]}
      runtime: {...}                     # free-form
      resources: {limits: {cpu, memory}, cpu, memory, io}
      ipc: {allow: [{uri}], deny: [...]}

Every refusal is a `ValidationError` with a one-line message that names the path, the offending
value (at most ~80 characters of it) and the rule, e.g.
`policy: permissions.network.allow[2].host '*.*.x.com': wildcard only as a '*.' prefix or bare '*'`.

Edits return the new document text plus a `change` record. The text is `dump_policy` of the
edited document, except that an edit which changes nothing (a repeated grant, a reset of an empty
policy) returns the input text itself, comments and all. Edits copy only the containers they touch,
so aliases in the source YAML cannot carry an edit somewhere else.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import reprlib
from typing import Any, NoReturn

import yaml

from wassette_state.store.domain.errors import ValidationError

__all__ = [
    "PERMISSION_KINDS",
    "dump_policy",
    "grant",
    "parse_policy",
    "revoke",
    "validate_policy",
]

PERMISSION_KINDS = ("storage", "network", "environment-variable", "memory")

# Loading: libyaml when present, else pure Python (same documents either way).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Dumping: always the pure-Python emitter. libyaml's emitter is not byte-identical to it (it
# escapes characters beyond U+FFFF, writes `'': x` where the pure one writes `? ''`), and policy
# text must be the same bytes on every machine, with or without libyaml. Policies are tiny.


class _Dumper(yaml.SafeDumper):
    """The safe dumper, with strings that hold a Unicode line break double-quoted."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # The emitter may pick single quotes or a plain scalar for a string holding NEL, LS or PS
    # and write them raw; a reader then folds them into spaces. Double quotes escape them.
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)

_DOC_KEYS = ("$schema", "version", "description", "permissions")
_SECTIONS = ("storage", "network", "environment", "runtime", "resources", "ipc")
_ACCESS = ("read", "write")
_MAX_SHOWN = 80

_MEMORY_SUFFIXED = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)")
_DIGITS = re.compile(r"\d+")
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")

_RULE_URI_EMPTY = "storage URI must not be empty"
_RULE_URI_TRIPLE = "'***' is not allowed in a storage URI"
_RULE_URI_DOUBLE = "'**' only as a whole path segment"
_RULE_URI_STARS = "at most one '*' per path segment"
_RULE_URI_PARENT = "no '..' path segment (a grant must not reach above the directory it names)"
_RULE_ACCESS = "access must be a non-empty list of 'read'/'write'"
_RULE_ACCESS_ITEM = "access must be 'read' or 'write'"
_RULE_HOST_EMPTY = "host must not be empty"
_RULE_HOST_WILDCARD = "wildcard only as a '*.' prefix or bare '*'"
_RULE_HOST_STARS = "at most one '*'"
_RULE_HOST_DOMAIN = "'*.' must be followed by a domain that does not end with '.'"
_RULE_NET_ENTRY = "a network entry needs exactly one of 'host' or 'cidr'"
_RULE_CIDR_SLASH = "CIDR must contain '/' (e.g. '10.0.0.0/8')"
_RULE_CIDR_VALID = "not a valid IPv4/IPv6 CIDR network"
_RULE_KEY_EMPTY = "environment key must not be empty"
_RULE_KEY_STAR = "no '*' wildcard in environment keys"
_RULE_MEMORY = (
    "memory must be a positive number with a Ki/Mi/Gi/Ti suffix or a positive integer of bytes"
)
_RULE_CPU_MILLI = "cpu with an 'm' suffix must be a positive integer of millicores"
_RULE_CPU = "cpu must be millicores ('500m') or a positive number of cores"

_repr = reprlib.Repr()
_repr.maxstring = _MAX_SHOWN
_repr.maxother = _MAX_SHOWN
_repr.maxlevel = 3


# --------------------------------------------------------------------------- messages


def _clip(text: str, limit: int = _MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: object) -> str:
    """A one-line, bounded rendering of an offending value (strings quoted)."""
    if isinstance(value, str):
        return repr(_clip(value))
    return _clip(" ".join(_repr.repr(value).split()))


def _fail(path: str, value: object, rule: str) -> NoReturn:
    raise ValidationError(f"policy: {path} {_show(value)}: {rule}")


def _fail_at(path: str, rule: str) -> NoReturn:
    raise ValidationError(f"policy: {path}: {rule}")


# --------------------------------------------------------------------------- value rules


def _check_uri(path: str, uri: Any) -> None:
    if not isinstance(uri, str):
        _fail(path, uri, "storage URI must be a string")
    if not uri:
        _fail(path, uri, _RULE_URI_EMPTY)
    if "***" in uri:
        _fail(path, uri, _RULE_URI_TRIPLE)
    for segment in uri.replace("\\", "/").split("/"):
        if segment == ".." or _percent_decoded(segment) == "..":
            _fail(path, uri, _RULE_URI_PARENT)
        if "**" in segment and segment != "**":
            _fail(path, uri, _RULE_URI_DOUBLE)
        if segment != "**" and segment.count("*") > 1:
            _fail(path, uri, _RULE_URI_STARS)


def _percent_decoded(segment: str) -> str:
    from urllib.parse import unquote

    return unquote(segment) if "%" in segment else segment


def _check_access(path: str, access: Any) -> list[str]:
    if not isinstance(access, list) or not access:
        _fail(path, access, _RULE_ACCESS)
    for index, item in enumerate(access):
        if item not in _ACCESS or not isinstance(item, str):
            _fail(f"{path}[{index}]", item, _RULE_ACCESS_ITEM)
    return access


def _check_host(path: str, host: Any) -> None:
    if not isinstance(host, str):
        _fail(path, host, "host must be a string")
    if not host:
        _fail(path, host, _RULE_HOST_EMPTY)
    stars = host.count("*")
    if stars and host != "*" and not (stars == 1 and host.startswith("*.")):
        rule = _RULE_HOST_WILDCARD + (f"; {_RULE_HOST_STARS}" if stars > 1 else "")
        _fail(path, host, rule)
    if host.startswith("*.") and (host == "*." or host.endswith(".")):
        _fail(path, host, _RULE_HOST_DOMAIN)


def _check_cidr(path: str, cidr: Any) -> None:
    if not isinstance(cidr, str):
        _fail(path, cidr, "CIDR must be a string")
    if "/" not in cidr:
        _fail(path, cidr, _RULE_CIDR_SLASH)
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        _fail(path, cidr, _RULE_CIDR_VALID)


def _check_key(path: str, key: Any) -> None:
    if not isinstance(key, str):
        _fail(path, key, "environment key must be a string")
    if not key:
        _fail(path, key, _RULE_KEY_EMPTY)
    if "*" in key:
        _fail(path, key, _RULE_KEY_STAR)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_memory(path: str, memory: Any) -> None:
    if isinstance(memory, str):
        match = _MEMORY_SUFFIXED.fullmatch(memory)
        if match and float(match.group(1)) > 0:
            return
        if _DIGITS.fullmatch(memory) and int(memory) > 0:
            return
    elif isinstance(memory, int) and not isinstance(memory, bool) and memory > 0:
        return
    _fail(path, memory, _RULE_MEMORY)


def _check_cpu(path: str, cpu: Any) -> None:
    if isinstance(cpu, str):
        if cpu.endswith("m"):
            if _DIGITS.fullmatch(cpu[:-1]) and int(cpu[:-1]) > 0:
                return
            _fail(path, cpu, _RULE_CPU_MILLI)
        if _DECIMAL.fullmatch(cpu) and float(cpu) > 0:
            return
    elif _is_number(cpu) and math.isfinite(cpu) and cpu > 0:
        return
    _fail(path, cpu, _RULE_CPU)


# --------------------------------------------------------------------------- structure


def _mapping(path: str, value: Any, allowed: tuple[str, ...], *, nullable: bool) -> dict[Any, Any]:
    """`value` as a mapping whose keys are all in `allowed` (None → {} when nullable)."""
    if value is None and nullable:
        return {}
    if not isinstance(value, dict):
        _fail(path, value, "must be a mapping")
    for key in value:
        if key not in allowed or not isinstance(key, str):
            _fail_at(path, f"unknown key {_show(key)} (allowed: {', '.join(allowed)})")
    return value


def _entries(path: str, value: Any) -> list[Any]:
    """An allow/deny list (None → [])."""
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(path, value, "must be a list")
    return value


def _entry(
    path: str, value: Any, allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[Any, Any]:
    entry = _mapping(path, value, allowed, nullable=False)
    for key in required:
        if key not in entry:
            _fail(path, entry, f"missing required key '{key}'")
    return entry


def _validate_storage(path: str, section: Any) -> None:
    section = _mapping(path, section, ("allow", "deny"), nullable=True)
    for which in ("allow", "deny"):
        for index, raw in enumerate(_entries(f"{path}.{which}", section.get(which))):
            where = f"{path}.{which}[{index}]"
            entry = _entry(where, raw, ("uri", "access"), ("uri", "access"))
            _check_uri(f"{where}.uri", entry["uri"])
            _check_access(f"{where}.access", entry["access"])


def _validate_network(path: str, section: Any) -> None:
    section = _mapping(path, section, ("allow", "deny"), nullable=True)
    for which in ("allow", "deny"):
        for index, raw in enumerate(_entries(f"{path}.{which}", section.get(which))):
            where = f"{path}.{which}[{index}]"
            entry = _entry(where, raw, ("host", "cidr"), ())
            if len(entry) != 1:
                _fail(where, entry, _RULE_NET_ENTRY)
            if "host" in entry:
                _check_host(f"{where}.host", entry["host"])
            else:
                _check_cidr(f"{where}.cidr", entry["cidr"])


def _validate_environment(path: str, section: Any) -> None:
    section = _mapping(path, section, ("allow",), nullable=True)
    for index, raw in enumerate(_entries(f"{path}.allow", section.get("allow"))):
        where = f"{path}.allow[{index}]"
        entry = _entry(where, raw, ("key",), ("key",))
        _check_key(f"{where}.key", entry["key"])


def _validate_resources(path: str, section: Any) -> None:
    section = _mapping(path, section, ("limits", "cpu", "memory", "io"), nullable=True)
    limits = _mapping(f"{path}.limits", section.get("limits"), ("cpu", "memory"), nullable=True)
    if limits.get("cpu") is not None:
        _check_cpu(f"{path}.limits.cpu", limits["cpu"])
    if limits.get("memory") is not None:
        _check_memory(f"{path}.limits.memory", limits["memory"])
    # Legacy fields (Wassette: cpu f64, memory u64, io u64).
    cpu = section.get("cpu")
    if cpu is not None and not (_is_number(cpu) and math.isfinite(cpu) and cpu >= 0):
        _fail(f"{path}.cpu", cpu, "legacy cpu must be a non-negative number")
    for name in ("memory", "io"):
        value = section.get(name)
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            _fail(f"{path}.{name}", value, f"legacy {name} must be a non-negative integer")


def _validate_ipc(path: str, section: Any) -> None:
    section = _mapping(path, section, ("allow", "deny"), nullable=True)
    for which in ("allow", "deny"):
        for index, raw in enumerate(_entries(f"{path}.{which}", section.get(which))):
            where = f"{path}.{which}[{index}]"
            entry = _entry(where, raw, ("uri",), ("uri",))
            uri = entry["uri"]
            if not isinstance(uri, str) or not uri:
                _fail(f"{where}.uri", uri, "IPC URI must be a non-empty string")


def _validate_runtime(path: str, section: Any) -> None:
    if section is not None and not isinstance(section, dict):
        _fail(path, section, "must be a mapping")


_SECTION_RULES = {
    "storage": _validate_storage,
    "network": _validate_network,
    "environment": _validate_environment,
    "runtime": _validate_runtime,
    "resources": _validate_resources,
    "ipc": _validate_ipc,
}


def validate_policy(doc: Any) -> None:
    """Validate an already-parsed policy document; raise ValidationError on the first violation."""
    if doc is None:
        _fail_at("document", "is empty (expected a mapping with 'version' and 'permissions')")
    if not isinstance(doc, dict):
        _fail("document", doc, "must be a mapping with 'version' and 'permissions'")
    _mapping("document", doc, _DOC_KEYS, nullable=False)

    if "version" not in doc or doc["version"] is None:
        _fail_at("version", "required (a string starting with '1.', e.g. \"1.0\")")
    version = doc["version"]
    if not isinstance(version, str):
        _fail("version", version, "must be a string starting with '1.' (quote it: \"1.0\")")
    if not version.startswith("1."):
        _fail("version", version, "unsupported version: must start with '1.'")

    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        _fail("description", description, "must be a string")
    schema = doc.get("$schema")
    if schema is not None and not isinstance(schema, str):
        _fail("$schema", schema, "must be a string")

    if doc.get("permissions") is None:
        _fail_at("permissions", "required (use 'permissions: {}' for none)")
    permissions = _mapping("permissions", doc["permissions"], _SECTIONS, nullable=False)
    for name, section in permissions.items():
        _SECTION_RULES[name](f"permissions.{name}", section)


# --------------------------------------------------------------------------- text


def _yaml_error(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "invalid YAML"
        where = ""
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        return f"{_clip(' '.join(problem.split()), 120)}{where}"
    return _clip(" ".join(str(error).split()), 160)


def parse_policy(text: str | bytes) -> dict[str, Any]:
    """Parse and validate a policy document; return it as plain dicts/lists/scalars."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            byte = e.object[e.start]
            raise ValidationError(
                f"policy: not valid UTF-8: {e.reason} (byte 0x{byte:02x} at offset {e.start})"
            ) from e
    if not isinstance(text, str):
        raise ValidationError(f"policy: expected text, got {type(text).__name__}")
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise ValidationError(f"policy: YAML syntax error: {_yaml_error(e)}") from e
    except RecursionError as e:
        raise ValidationError("policy: YAML syntax error: nesting too deep") from e
    except (ValueError, OverflowError) as e:
        # e.g. a timestamp-looking scalar with an impossible date (`2001-13-45`).
        message = _clip(" ".join(str(e).split()), 120)
        raise ValidationError(f"policy: YAML value error: {message}") from e
    except Exception as e:
        # PyYAML's constructors fail in ad-hoc ways on explicitly tagged scalars that do not fit
        # their tag (`!!timestamp x` → AttributeError, `!!bool x` → KeyError, `!!int ''` →
        # IndexError). This is the translation boundary: every such failure is bad input.
        raise ValidationError(
            f"policy: YAML value error: a scalar does not fit its tag ({type(e).__name__})"
        ) from e
    validate_policy(doc)
    result: dict[str, Any] = doc
    return result


def dump_policy(doc: dict[str, Any]) -> str:
    """Deterministic block-style YAML of `doc`, keys in their current order."""
    text: str = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,  # never fold long scalars: output must not depend on the emitter's wrap
    )
    return text


# --------------------------------------------------------------------------- edits


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


# Wassette (its policy crate, through serde) writes every section, in this order, absent ones
# as explicit nulls; `$schema` and comments do not survive. An edit is written that way so a
# later grant made by Wassette itself changes only the grant (DESIGN §7).
_SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "storage": ("allow", "deny"),
    "network": ("allow", "deny"),
    "environment": ("allow",),
    "runtime": ("docker", "hyperlight"),
    "ipc": ("allow", "deny"),
}


def wassette_form(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` laid out as Wassette 0.8.0 writes a policy it has edited."""
    perms = doc.get("permissions") or {}
    out: dict[str, Any] = {}
    for name in ("storage", "network", "environment", "runtime", "resources", "ipc"):
        section = perms.get(name)
        if not isinstance(section, dict):
            out[name] = None
        elif name == "resources":
            out[name] = _resources_form(section)
        else:
            out[name] = {f: section.get(f) for f in _SECTION_FIELDS[name]}
    return {"version": doc["version"], "description": doc.get("description"), "permissions": out}


def _resources_form(section: dict[str, Any]) -> dict[str, Any]:
    limits = section.get("limits")
    out: dict[str, Any] = {
        "limits": {"cpu": limits.get("cpu"), "memory": limits.get("memory")}
        if isinstance(limits, dict)
        else None
    }
    for legacy in ("cpu", "memory", "io"):
        value = section.get(legacy)
        if value is not None:
            # the legacy cpu field is a float to Wassette (`cpu: 2` comes back as `2.0`)
            out[legacy] = float(value) if legacy == "cpu" and _is_number(value) else value
    return out


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


# --------------------------------------------------------------------------- rule diffs


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
