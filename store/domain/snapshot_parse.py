"""Parse a state file: bytes -> a validated, frozen `Snapshot` (no I/O).

`parse_snapshot` decodes the bytes, bounds their size, reads them as JSON or YAML, checks that
only plain JSON values are left, records documentation placeholders ("...") and validates the
whole against the models, translating pydantic's errors into one-line messages. The caller reads
the file (and should not read more than `MAX_SNAPSHOT_BYTES + 1` bytes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.snapshot_json import _DuplicateKeys, _load_json
from wassette_state.store.domain.snapshot_messages import (
    _fail,
    _join,
    _one_line,
    _Problem,
    _show,
    _spell,
    _type_name,
)
from wassette_state.store.domain.snapshot_model import (
    MAX_NESTING_DEPTH,
    MAX_SNAPSHOT_BYTES,
    PLACEHOLDER,
    SUPPORTED_MAJOR,
    Format,
    Snapshot,
    _refuse_secret_values,
)
from wassette_state.store.domain.snapshot_yaml import _load_yaml

__all__ = ["MAX_NODES", "PolicyCheck", "parse_snapshot"]

_VERSION_RE = re.compile(r"^(\d{1,9})(?:\.\d{1,9}){0,3}(?:[-+][0-9A-Za-z.+-]{1,64})?$")
PolicyCheck = Callable[[str, str], None]


# --------------------------------------------------------------------------------------------
# Decoding: bytes -> plain JSON-like Python values
# --------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"state file: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValidationError(
            f"state file is too large ({len(data)} bytes; the limit is {MAX_SNAPSHOT_BYTES})"
        )
    raw = bytes(data)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValidationError(
            f"state file is not valid UTF-8 (byte offset {exc.start}, line {line})"
        ) from None
    if not text.strip():
        raise ValidationError("state file is empty")
    return text


# About 100 containers per component of realistic tool schemas: a 10k-component file stays far
# below this, while a small file of millions of tiny nodes (gigabytes once parsed) is refused.
MAX_NODES = 2_000_000


def _check_node_budget(text: str, fmt: str) -> None:
    """Bound memory before parsing: count what could become containers (over-counting braces
    inside strings only makes this stricter) and, for YAML, lines."""
    nodes = text.count("{") + text.count("[")
    if fmt == "yaml":
        nodes += text.count("\n")
    if nodes > MAX_NODES:
        raise ValidationError(
            f"state file has too many values to read safely (more than {MAX_NODES:,} "
            "containers or entries)"
        )


def _check_plain(value: Any) -> None:
    """Checks shared by JSON, YAML and documents handed to `render_snapshot`: only JSON types
    (string keys, finite numbers, encodable strings), no duplicate keys, bounded nesting."""
    # A node's path is kept as (parent, key) links and spelled out only for an error: a large
    # snapshot has millions of nodes and building every path string cost more than the checks.
    stack: list[tuple[Any, Any, int]] = [(None, value, 0)]
    while stack:
        link, item, depth = stack.pop()
        if isinstance(item, dict):
            if isinstance(item, _DuplicateKeys):
                raise _fail(_spell(link), f"duplicate key {_show(item.duplicate)}")
            if depth >= MAX_NESTING_DEPTH:
                raise _fail(_spell(link), f"nests deeper than {MAX_NESTING_DEPTH} levels")
            for key in reversed(list(item)):
                if not isinstance(key, str):
                    raise _fail(
                        _spell(link), f"mapping keys must be strings, got {_type_name(key)}"
                    )
                if not key.isascii():
                    _check_text(_spell(link), key)
                stack.append(((link, key), item[key], depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_NESTING_DEPTH:
                raise _fail(_spell(link), f"nests deeper than {MAX_NESTING_DEPTH} levels")
            for i in range(len(item) - 1, -1, -1):
                stack.append(((link, i), item[i], depth + 1))
        elif isinstance(item, str):
            if not item.isascii():  # only non-ASCII text can hold a surrogate
                _check_text(_spell(link), item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _fail(_spell(link), "numbers must be finite")
        elif item is not None and not isinstance(item, bool | int):
            raise _fail(_spell(link), f"not a JSON value ({type(item).__name__})")


def _check_text(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, "string contains an unpaired surrogate escape") from None


# --------------------------------------------------------------------------------------------
# Placeholders (documentation examples use "..." for elided values)
# --------------------------------------------------------------------------------------------


def _is_placeholder(value: object) -> bool:
    if value == PLACEHOLDER:
        return True
    return isinstance(value, list) and any(item == PLACEHOLDER for item in value)


def _placeholders_in(section: object, path: str) -> list[str]:
    found: list[str] = []
    if _is_placeholder(section):
        return [path]
    if isinstance(section, dict):
        for key, value in section.items():
            sub = _join(path, key)
            if _is_placeholder(value):
                found.append(sub)
            elif isinstance(value, dict) and key == "validation_stamp":
                found.extend(_join(sub, k) for k, v in value.items() if _is_placeholder(v))
    return found


def _strip_placeholders(comp: dict[str, Any], path: str) -> dict[str, Any]:
    """Replace sections holding a placeholder by None and record where they were."""
    if "placeholders" in comp:
        raise _fail(_join(path, "placeholders"), "unknown field")
    try:
        _refuse_secret_values(comp.get("secrets"))
    except _Problem as exc:
        raise _fail(path + exc.sub, exc.message) from None
    found: list[str] = []
    cleaned = dict(comp)
    for section in ("metadata", "policy", "secrets", "source_uri", "wasm_sha256"):
        if section not in comp:
            continue
        here = _placeholders_in(comp[section], _join(path, section))
        if here:
            found.extend(here)
            cleaned[section] = None
    # Wassette's reader requires a component's metadata (not an Option): only a documentation
    # placeholder inside it stands for it (the component is then skipped on import).
    if "metadata" not in comp:
        raise _fail(_join(path, "metadata"), "missing required field")
    if comp["metadata"] is None:
        raise _fail(_join(path, "metadata"), "expected a mapping, got null")
    if found:
        cleaned["placeholders"] = found
    return cleaned


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_PYDANTIC_MESSAGES = {
    "missing": "missing required field",
    "extra_forbidden": "unknown field",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "bool_type": "expected a boolean",
    "none_required": "expected null",
}


def _translate(exc: PydanticValidationError) -> ValidationError:
    err = exc.errors(include_url=False, include_input=True)[0]
    path = ""
    for part in err["loc"]:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path = _join(path, part)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _Problem):
        return _fail(path + inner.sub, inner.message)
    if kind in _PYDANTIC_MESSAGES:
        message = _PYDANTIC_MESSAGES[kind]
        if kind.endswith("_type") or kind == "int_parsing":
            message += f", got {_type_name(err.get('input'))}"
        return _fail(path, message)
    if kind == "greater_than_equal":
        return _fail(path, f"must be >= {ctx.get('ge')}")
    if kind == "less_than_equal":
        return _fail(path, f"must be <= {ctx.get('le')}")
    if kind == "string_too_short":
        return _fail(path, "must not be empty")
    if kind == "too_short":
        return _fail(path, "must not be empty")
    # Fallback: pydantic's own wording never includes the input value.
    return _fail(path, _one_line(str(err.get("msg", "invalid value"))))


def _check_version(doc: dict[str, Any]) -> None:
    if "version" not in doc:
        raise _fail("version", "missing required field")
    version = doc["version"]
    if not isinstance(version, str):
        raise _fail("version", f"expected a string, got {_type_name(version)}")
    if not version.strip():
        raise _fail("version", "must be a non-empty string")
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise _fail("version", f'invalid version {_show(version)} (expected e.g. "0.1.0")')
    major = int(match.group(1))
    if major > SUPPORTED_MAJOR:
        raise _fail(
            "version",
            f"{_show(version)} is newer than this tool supports "
            f"(major version {SUPPORTED_MAJOR} only)",
        )


def _validate(doc: Any) -> tuple[Snapshot, dict[str, int]]:
    """Validate a plain document; returns the snapshot and each component id's file index."""
    if doc is None:
        raise ValidationError("state file is empty")
    if not isinstance(doc, dict):
        raise _fail("", f"expected a mapping, got {_type_name(doc)}")
    _check_version(doc)
    prepared = dict(doc)
    components = doc.get("components")
    if isinstance(components, list):
        prepared["components"] = [
            _strip_placeholders(c, f"components[{i}]") if isinstance(c, dict) else c
            for i, c in enumerate(components)
        ]
    try:
        snapshot = Snapshot.model_validate(prepared)
    except PydanticValidationError as exc:
        raise _translate(exc) from None
    index = {c["component_id"]: i for i, c in enumerate(prepared["components"])}
    return snapshot, index


def _run_policy_checks(snapshot: Snapshot, index: dict[str, int], check: PolicyCheck) -> None:
    for comp in sorted(snapshot.components, key=lambda c: index[c.component_id]):
        if comp.policy is None:
            continue
        where = f"components[{index[comp.component_id]}].policy.policy_content"
        try:
            check(comp.policy.policy_content, where)
        except ValidationError as exc:
            message = _one_line(str(exc))
            if not message.startswith(where):
                message = f"{where}: {message}"
            raise ValidationError(message) from exc


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def parse_snapshot(
    data: bytes, fmt: Format, *, policy_check: PolicyCheck | None = None
) -> Snapshot:
    """Parse and fully validate a state file; raise `ValidationError` on any problem."""
    if fmt not in ("json", "yaml"):
        raise ValidationError(f"unknown state file format {_show(fmt)} (expected json or yaml)")
    text = _decode(data)
    _check_node_budget(text, fmt)
    with gc_paused():  # millions of fresh containers, no cycles among them
        doc = _load_json(text) if fmt == "json" else _load_yaml(text)
        _check_plain(doc)
        snapshot, index = _validate(doc)
    if policy_check is not None:
        _run_policy_checks(snapshot, index, policy_check)
    return snapshot
