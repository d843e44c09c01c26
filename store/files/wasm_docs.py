"""Doc comments of a component's functions, from its `package-docs` custom section.

They become the tools' descriptions, read exactly as Wassette 0.8.0 reads them (see below).
"""

from __future__ import annotations

import json
import math
from typing import Any

from wassette_state.store.files.wasm_binary import _custom_sections

_PACKAGE_DOCS_SECTION = "package-docs"


# ---------------------------------------------------------------------------------------------
# doc comments: the `package-docs` custom section written by wit-component
#
# Its payload is one version byte followed by JSON:
#   {"docs"?, "worlds"?: {world: {"func_exports"?, "interface_exports"?, ...}}, "interfaces"?: …}
# Wassette 0.8.0 reads only the first such section (in binary order, nested modules and
# components included) whose payload is longer than one byte, ignores the version byte, and
# takes a function's description from `worlds.<any world>.func_exports.<function name>.docs`
# (first world in document order), looked up by the bare function name - for functions inside
# interfaces too. The text is used as is (not trimmed; an empty string stays empty). A payload
# that is not strict JSON (serde_json: no NaN/Infinity, no lone surrogate, no number out of f64
# range, at most 127 levels of nesting) means no docs at all.

_SERDE_MAX_DEPTH = 127


def _package_docs(data: bytes) -> Any:
    for payload in _custom_sections(data, _PACKAGE_DOCS_SECTION.encode(), 0):
        if len(payload) > 1:
            return _strict_json(payload[1:])
    return None


def _strict_json(raw: bytes) -> Any:
    """`raw` parsed as serde_json would, or None where serde_json fails."""
    try:
        text = raw.decode("utf-8")
        if not _nests_within(text, _SERDE_MAX_DEPTH):
            return None
        document = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_finite_int,
        )
        json.dumps(document, ensure_ascii=False).encode("utf-8")  # lone surrogates fail here
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _finite_int(text: str) -> int:
    if len(text) > 300 and math.isinf(float(text)):
        raise ValueError("number out of range")
    return int(text)


def _nests_within(text: str, levels: int) -> bool:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > levels:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _find_docs(docs: Any, function_name: str) -> str | None:
    if not isinstance(docs, dict) or not isinstance(docs.get("worlds"), dict):
        return None
    for world in docs["worlds"].values():
        exports = world.get("func_exports") if isinstance(world, dict) else None
        if isinstance(exports, dict):
            entry = exports.get(function_name)
            if isinstance(entry, dict) and isinstance(entry.get("docs"), str):
                text: str = entry["docs"]
                return text
    return None
