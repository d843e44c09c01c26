"""WebAssembly component introspection: component bytes -> the MCP tools Wassette would serve.

`describe` compiles the bytes with wasmtime (nothing is instantiated or run), walks the
component's exported functions - top level and inside exported instances (interfaces) - and
maps each function's WIT types to a JSON Schema, one tool per function.

wasmtime is imported lazily inside the functions that need it, so `import store.wasm` stays
cheap for CLI start-up; one `wasmtime.Engine` is created on first use and reused.
Results are cached in-process by sha256 of the bytes (persistent caching lives elsewhere).
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import itertools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wassette_state.store.errors import ValidationError

if TYPE_CHECKING:
    import wasmtime
    from wasmtime.component import FuncType, ValType
    from wasmtime.component._types import ComponentExtern

WASM_MAGIC = b"\x00asm"

# Bytes 4..8 of the header: a u16 version then a u16 layer (0 = core module, 1 = component).
_LAYER_CORE = 0
_LAYER_COMPONENT = 1
_HEADER_LEN = 8

# Wassette itself keeps an interface's `@version` in the tool name (`foo:foo/foo@0.1.0` +
# `generate` -> `foo_foo_foo_0_1_0_generate`). This store strips it by design decision so tool
# names survive a minor version bump (`foo_foo_foo_generate`); flip to False for Wassette's names.
_STRIP_INTERFACE_VERSION = False  # Wassette keeps the version: foo_foo_foo_0_1_0_generate

_NOT_ALLOWED_IN_TOOL_NAME = re.compile(r"[^a-z0-9-]")

_PACKAGE_DOCS_SECTION = "package-docs"
_CUSTOM_SECTION_ID = 0
_COMPONENT_SECTION_ID = 4  # a nested component, inside a component binary
_MAX_NESTING = 16

_CACHE_SIZE = 64


@dataclass(frozen=True)
class Introspection:
    """What a component offers as MCP tools; the three lists are parallel, sorted by tool name."""

    tool_schemas: list[dict[str, Any]]
    function_identifiers: list[dict[str, str | None]]
    tool_names: list[str]


# ---------------------------------------------------------------------------------------------
# header checks (no wasmtime needed)


def is_component(data: bytes) -> bool:
    """True when `data` starts with a WebAssembly component header (layer 1)."""
    return (
        len(data) >= _HEADER_LEN
        and data[:4] == WASM_MAGIC
        and int.from_bytes(data[6:8], "little") == _LAYER_COMPONENT
    )


def _check_header(data: bytes, label: str) -> None:
    if len(data) < 4 or data[:4] != WASM_MAGIC:
        raise ValidationError("not a WebAssembly file (bad magic bytes)")
    if len(data) < _HEADER_LEN:
        raise ValidationError("invalid WebAssembly component: truncated header")
    layer = int.from_bytes(data[6:8], "little")
    if layer == _LAYER_CORE:
        raise ValidationError(
            f"not a WebAssembly component: {label} is a core module; build a component "
            "(e.g. with `wasm-tools component new`)"
        )
    if layer != _LAYER_COMPONENT:
        raise ValidationError(f"invalid WebAssembly component: unknown binary layer {layer}")


# ---------------------------------------------------------------------------------------------
# public entry point + in-process cache

_lock = threading.Lock()
_cache: OrderedDict[str, Introspection] = OrderedDict()
_engine: wasmtime.Engine | None = None
# How many times `_introspect` really ran (the cache's observable effect; read by the tests).
_introspect_count = 0


def describe(data: bytes, *, label: str = "the input") -> Introspection:
    """Introspect a component: its tools, function identifiers and tool names.

    `label` (e.g. a file name) only appears in error messages. Raises `ValidationError` with a
    one-line message when `data` is not a valid component. Each call returns fresh lists, so
    callers may mutate the result without touching the cache.
    """
    data = bytes(data)
    _check_header(data, _one_line(label))
    digest = hashlib.sha256(data).hexdigest()
    with _lock:  # held while compiling, so the same bytes are never introspected twice
        result = _cache.get(digest)
        if result is None:
            result = _introspect(data)
            _cache[digest] = result
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(digest)
    return copy.deepcopy(result)


def _clear_cache() -> None:
    """Forget cached introspections (tests)."""
    with _lock:
        _cache.clear()


def _get_engine() -> wasmtime.Engine:
    global _engine
    if _engine is None:
        import wasmtime

        config = wasmtime.Config()
        # Code is compiled only to read the component's types, never run: skip optimisation
        # (about a third faster on an 18 MB componentize-py component).
        config.cranelift_opt_level = "none"
        _engine = wasmtime.Engine(config)
        # Free it before interpreter teardown: wasmtime's finalizers print TypeErrors when they
        # run after module globals are gone.
        atexit.register(_close_engine)
    return _engine


def _close_engine() -> None:
    global _engine
    engine, _engine = _engine, None
    if engine is not None:
        engine.close()


def _introspect(data: bytes) -> Introspection:
    global _introspect_count
    _introspect_count += 1

    import wasmtime
    from wasmtime.component import Component

    engine = _get_engine()
    try:
        component = Component(engine, data)
        exports = component.type.exports(engine)
    except wasmtime.WasmtimeError as exc:
        raise ValidationError(
            f"invalid WebAssembly component: {_summarize_error(str(exc))}"
        ) from None

    docs = _package_docs(data)
    found: list[tuple[str, dict[str, Any], dict[str, str | None]]] = []
    try:
        _collect(engine, exports, (), docs, found)
    finally:
        del exports
        component.close()
    found.sort(key=lambda tool: tool[0])
    for (name, _, first), (other, _, second) in itertools.pairwise(found):
        if name == other:
            raise ValidationError(
                f"invalid WebAssembly component: exported functions "
                f"{_display(first)} and {_display(second)} both map to the tool name '{name}'"
            )
    return Introspection(
        tool_schemas=[schema for _, schema, _ in found],
        function_identifiers=[ident for _, _, ident in found],
        tool_names=[name for name, _, _ in found],
    )


def _summarize_error(message: str) -> str:
    """wasmtime's multi-line error -> one line: its headline plus the root cause."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "rejected by wasmtime"
    headline = lines[0]
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1 :]
        if causes:
            root = re.sub(r"^\d+:\s*", "", causes[-1])
            return f"{headline}: {root}"
    return headline


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _display(ident: dict[str, str | None]) -> str:
    iface = ident["interface_name"]
    return f"'{iface}#{ident['function_name']}'" if iface else f"'{ident['function_name']}'"


# ---------------------------------------------------------------------------------------------
# exports -> tools


def _collect(
    engine: wasmtime.Engine,
    exports: dict[str, ComponentExtern],
    path: tuple[str, ...],
    docs: list[dict[str, Any]],
    out: list[tuple[str, dict[str, Any], dict[str, str | None]]],
) -> None:
    """Append (tool name, tool schema, identifier) for every function in `exports`, recursing
    into exported instances (`path` is the chain of instance export names)."""
    from wasmtime.component import ComponentInstanceType, FuncType

    for export_name, extern in exports.items():
        try:
            item = extern.ty
        except TypeError:  # an item kind this wasmtime binding cannot represent: not a function
            continue
        if isinstance(item, FuncType):
            out.append(_tool(path, export_name, item, docs))
        elif isinstance(item, ComponentInstanceType) and len(path) < _MAX_NESTING:
            _collect(engine, item.exports(engine), (*path, export_name), docs, out)


def _tool_name(interface_path: tuple[str, ...], function_name: str) -> str:
    """`foo:foo/foo` + `generate` -> `foo_foo_foo_generate`; top-level `fetch` -> `fetch`."""
    parts = [_strip_version(part) for part in interface_path]
    joined = "_".join([*parts, function_name]).lower()
    return _NOT_ALLOWED_IN_TOOL_NAME.sub("_", joined)


def _strip_version(interface: str) -> str:
    # `ns:pkg/iface@1.2.3` -> `ns:pkg/iface` (see _STRIP_INTERFACE_VERSION)
    return interface.split("@", 1)[0] if _STRIP_INTERFACE_VERSION else interface


def _tool(
    path: tuple[str, ...], function_name: str, func: FuncType, docs: list[dict[str, Any]]
) -> tuple[str, dict[str, Any], dict[str, str | None]]:
    name = _tool_name(path, function_name)
    interface_name = "/".join(path) if path else None
    description = _find_docs(docs, path, function_name) or (
        f"Auto-generated schema for function '{function_name}'"
    )

    properties: dict[str, Any] = {}
    required: list[str] = []
    try:
        params = func.params
    except TypeError:  # a parameter type this wasmtime binding cannot represent: never crash
        input_schema: dict[str, Any] = {
            "type": "object",
            "description": "parameters use WIT types this tool cannot describe",
        }
    else:
        for param_name, param_type in params:
            properties[param_name] = _schema(param_type)
            required.append(param_name)
        input_schema = {"type": "object", "properties": properties, "required": required}

    schema: dict[str, Any] = {"name": name, "description": description, "inputSchema": input_schema}
    try:
        result = func.result
    except TypeError:
        result_schema: dict[str, Any] | None = _unsupported("result")
    else:
        result_schema = None if result is None else _schema(result)
    if result_schema is not None:
        schema["outputSchema"] = {
            "type": "object",
            "properties": {"result": result_schema},
            "required": ["result"],
        }
    identifier: dict[str, str | None] = {
        "package_name": None,
        "interface_name": interface_name,
        "function_name": function_name,
    }
    return name, schema, identifier


# ---------------------------------------------------------------------------------------------
# WIT types -> JSON Schema


def _schema(ty: ValType) -> dict[str, Any]:
    from wasmtime import component as wc

    if isinstance(ty, wc.Bool):
        return {"type": "boolean"}
    if isinstance(ty, (wc.U8, wc.U16, wc.U32, wc.U64, wc.S8, wc.S16, wc.S32, wc.S64)):
        return {"type": "number"}
    if isinstance(ty, (wc.F32, wc.F64)):
        return {"type": "number"}
    if isinstance(ty, wc.Char):
        return {"type": "string", "minLength": 1, "maxLength": 1}  # one code point
    if isinstance(ty, wc.String):
        return {"type": "string"}
    if isinstance(ty, wc.ListType):
        return {"type": "array", "items": _schema(ty.element)}
    if isinstance(ty, wc.RecordType):
        fields = ty.fields
        return {
            "type": "object",
            "properties": {name: _schema(field) for name, field in fields},
            "required": [name for name, _ in fields],
        }
    if isinstance(ty, wc.TupleType):
        elements = [_schema(element) for element in ty.elements]
        return {
            "type": "array",
            "prefixItems": elements,
            "minItems": len(elements),
            "maxItems": len(elements),
        }
    if isinstance(ty, wc.VariantType):
        return {"oneOf": [_case(name, payload) for name, payload in ty.cases]}
    if isinstance(ty, wc.EnumType):
        return {"type": "string", "enum": list(ty.names)}
    if isinstance(ty, wc.OptionType):
        return {"anyOf": [{"type": "null"}, _schema(ty.payload)]}
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"ok": {"type": "null"} if ok is None else _schema(ok)},
                    "required": ["ok"],
                },
                {
                    "type": "object",
                    "properties": {"err": {"type": "null"} if err is None else _schema(err)},
                    "required": ["err"],
                },
            ]
        }
    if isinstance(ty, wc.FlagsType):
        return {"type": "object", "properties": {flag: {"type": "boolean"} for flag in ty.names}}
    if isinstance(ty, (wc.OwnType, wc.BorrowType)):
        return {"type": "string"}  # a resource handle
    if isinstance(ty, wc.FutureType):
        return _unsupported("future")
    if isinstance(ty, wc.StreamType):
        return _unsupported("stream")
    if isinstance(ty, wc.ErrorContext):
        return _unsupported("error-context")
    return _unsupported(type(ty).__name__)


def _case(name: str, payload: ValType | None) -> dict[str, Any]:
    if payload is None:
        return {"type": "object", "properties": {"tag": {"const": name}}, "required": ["tag"]}
    return {
        "type": "object",
        "properties": {"tag": {"const": name}, "val": _schema(payload)},
        "required": ["tag", "val"],
    }


def _unsupported(what: str) -> dict[str, Any]:
    return {"type": "string", "description": f"unsupported WIT type: {what}"}


# ---------------------------------------------------------------------------------------------
# doc comments: the `package-docs` custom section written by wit-component
#
# Its payload is one version byte (0 or 1) followed by JSON:
#   {"docs"?, "worlds"?: {world: {"funcs"?, "func_exports"?, "interfaces"?, "interface_exports"?}},
#    "interfaces"?: {iface: {"funcs"?: {fn: "doc" | {"docs": "doc"}}}}}
# Function docs are a plain string (v0) or {"docs": ..., "stability": ...} (v1).


def _package_docs(data: bytes) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for payload in _custom_sections(data, _PACKAGE_DOCS_SECTION.encode(), 0):
        if len(payload) < 2 or payload[0] not in (0, 1):
            continue
        try:
            document = json.loads(payload[1:].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def _custom_sections(binary: bytes, name: bytes, depth: int) -> Iterator[bytes]:
    """Payloads of the custom sections called `name`, in this component and nested ones."""
    pos = _HEADER_LEN
    end_of_binary = len(binary)
    while pos < end_of_binary:
        section_id = binary[pos]
        size, pos = _leb128(binary, pos + 1)
        end = pos + size
        if size < 0 or end > end_of_binary:
            return
        if section_id == _CUSTOM_SECTION_ID:
            name_len, start = _leb128(binary, pos)
            if name_len >= 0 and binary[start : start + name_len] == name:
                yield binary[start + name_len : end]
        elif section_id == _COMPONENT_SECTION_ID and depth < _MAX_NESTING:
            nested = binary[pos:end]
            if is_component(nested):
                yield from _custom_sections(nested, name, depth + 1)
        pos = end


def _leb128(binary: bytes, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 at `pos` -> (value, position after it); (-1, len) when truncated."""
    value = shift = 0
    while pos < len(binary) and shift < 35:
        byte = binary[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return -1, len(binary)


def _find_docs(docs: list[dict[str, Any]], path: tuple[str, ...], function_name: str) -> str | None:
    for document in docs:
        for entry in _doc_entries(document, path, function_name):
            text = entry if isinstance(entry, str) else None
            if isinstance(entry, dict) and isinstance(entry.get("docs"), str):
                text = entry["docs"]
            if text and text.strip():
                return text.strip()
    return None


def _doc_entries(document: dict[str, Any], path: tuple[str, ...], fn: str) -> Iterator[Any]:
    worlds = [w for w in _as_dict(document.get("worlds")).values() if isinstance(w, dict)]
    if not path:  # a function exported by the world itself
        for world in worlds:
            yield _as_dict(world.get("func_exports")).get(fn)
            yield _as_dict(world.get("funcs")).get(fn)
        return
    if len(path) != 1:
        return
    interface = path[0]
    if ":" in interface:  # `ns:pkg/iface@version`: a package-level interface named `iface`
        bare = interface.split("/", 1)[-1].split("@", 1)[0]
        iface = _as_dict(_as_dict(document.get("interfaces")).get(bare))
        yield _as_dict(iface.get("funcs")).get(fn)
    else:  # `export name: interface { ... }` inline in a world
        for world in worlds:
            for key in ("interface_exports", "interfaces"):
                iface = _as_dict(_as_dict(world.get(key)).get(interface))
                yield _as_dict(iface.get("funcs")).get(fn)


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
