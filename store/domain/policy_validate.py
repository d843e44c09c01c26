"""Wassette policy documents: the rules a document must follow (no I/O).

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
The value rules here are shared by the edits (policy_edit), which check what they add.
"""

from __future__ import annotations

import ipaddress
import math
import re
import reprlib
from typing import Any, NoReturn

from wassette_state.store.domain.errors import ValidationError

__all__ = ["validate_policy"]

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
