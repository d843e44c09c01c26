"""WebAssembly component introspection: component bytes -> the MCP tools Wassette would serve.

`describe` compiles the bytes with wasmtime (nothing is instantiated or run), walks the
component's exported functions - top level and inside exported instances (interfaces) - and
maps each function's WIT types to a JSON Schema, one tool per function.

The result is what Wassette 0.8.0 writes into `<id>.metadata.json` for the same bytes (its
`component2json` crate), field for field and key order included: tools in export order, tool
names, descriptions, schemas. The only part that cannot be reproduced is the heap address Wassette
prints inside the description of a resource handle (see `_Resources`).
tests/test_wassette_parity.py checks this against the real binary.

wasmtime is imported lazily inside the functions that need it, so `import store.wasm` stays
cheap for CLI start-up; one `wasmtime.Engine` is created on first use and reused.
Results are cached in-process by sha256 of the bytes (persistent caching lives elsewhere).
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wassette_state.store.domain.errors import ValidationError

if TYPE_CHECKING:
    import wasmtime
    from wasmtime.component import ComponentType, FuncType, ResourceType, ValType
    from wasmtime.component._types import ComponentExtern

WASM_MAGIC = b"\x00asm"

# Bytes 4..8 of the header: a u16 version then a u16 layer (0 = core module, 1 = component).
_LAYER_CORE = 0
_LAYER_COMPONENT = 1
_HEADER_LEN = 8

# Tool names: each part (interface export name, function name) lowercased, every character
# outside `[a-z0-9-]` replaced by `_`, parts joined by `_`. An interface keeps its `@version`
# (`foo:foo/foo@0.1.0` + `generate` -> `foo_foo_foo_0_1_0_generate`), like Wassette.
_NOT_ALLOWED_IN_TOOL_NAME = re.compile(r"[^a-z0-9-]")
# MCP's limit; Wassette 0.8.0 panics on a longer generated name, so such a component is refused.
MAX_TOOL_NAME = 128

_PACKAGE_DOCS_SECTION = "package-docs"
_CUSTOM_SECTION_ID = 0
# Sections holding a nested binary: a core module (1) or a component (4), inside a component.
_NESTED_SECTION_IDS = (1, 4)
_MAX_NESTING = 64

_CACHE_SIZE = 64

# Bumped whenever `describe` can return something else for the same bytes; a persistent cache of
# its results must include it in its key (2: Wassette 0.8.0's export order, descriptions, char
# and resource schemas, innermost interface names).
DERIVATION_VERSION = 2


@dataclass(frozen=True)
class Introspection:
    """What a component offers as MCP tools; the three lists are parallel, in export order
    (Wassette's order; two functions may map to the same tool name, as they do in Wassette)."""

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
        component_type = component.type
        exports = component_type.exports(engine)
    except wasmtime.WasmtimeError as exc:
        raise ValidationError(
            f"invalid WebAssembly component: {_summarize_error(str(exc))}"
        ) from None

    walker = _Walker(engine, component_type, _package_docs(data))
    try:
        walker.collect(exports, None, 0)
    finally:
        del exports, walker.resources
        component.close()
    found = walker.found
    for name, _, ident in found:
        if len(name) > MAX_TOOL_NAME:
            raise ValidationError(
                f"invalid WebAssembly component: exported function {_display(ident)} maps to "
                f"the tool name '{name[:40]}…', {len(name)} characters long; MCP allows "
                f"{MAX_TOOL_NAME} (Wassette 0.8.0 cannot load this component)"
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
# exports -> tools (Wassette's component2json, `component_exports_to_tools_with_docs`)


class _Walker:
    """Collects (tool name, tool schema, identifier) for every exported function, in export
    order, recursing into exported instances."""

    def __init__(self, engine: wasmtime.Engine, component_type: ComponentType, docs: Any) -> None:
        self.engine = engine
        self.docs = docs
        self.resources = _Resources(engine, component_type)
        self.found: list[tuple[str, dict[str, Any], dict[str, str | None]]] = []

    def collect(
        self, exports: dict[str, ComponentExtern], interface: str | None, depth: int
    ) -> None:
        """`interface` is the export name of the instance holding `exports` - only the
        innermost one: Wassette names a function of a nested instance after that instance
        alone (`x:y/outer` > `inner` > `go` -> `inner_go`)."""
        from wasmtime.component import ComponentInstanceType, FuncType

        for export_name, extern in exports.items():
            try:
                item = extern.ty
            except TypeError:  # an item kind this wasmtime binding cannot represent: not a function
                continue
            if isinstance(item, FuncType):
                self.found.append(self._tool(interface, export_name, item))
            elif isinstance(item, ComponentInstanceType):
                if depth >= _MAX_NESTING:
                    raise ValidationError(
                        f"invalid WebAssembly component: instances nest more than {_MAX_NESTING} "
                        "levels deep"
                    )
                self.collect(item.exports(self.engine), export_name, depth + 1)

    def _tool(
        self, interface: str | None, function_name: str, func: FuncType
    ) -> tuple[str, dict[str, Any], dict[str, str | None]]:
        name = _tool_name(interface, function_name)
        description = _find_docs(self.docs, function_name)
        if description is None:
            description = f"Auto-generated schema for function '{name}'"

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
                required.append(param_name)
                properties[param_name] = _schema(param_type, self.resources)
            input_schema = {"type": "object", "properties": properties, "required": required}

        schema: dict[str, Any] = {
            "name": name,
            "description": description,
            "inputSchema": input_schema,
        }
        try:
            result = func.result
        except TypeError:
            result_schema: dict[str, Any] | None = _unsupported("result")
        else:
            result_schema = None if result is None else _schema(result, self.resources)
        if result_schema is not None:
            schema["outputSchema"] = {
                "type": "object",
                "properties": {"result": result_schema},
                "required": ["result"],
            }
        identifier: dict[str, str | None] = {
            "package_name": None,
            "interface_name": interface,
            "function_name": function_name,
        }
        return name, schema, identifier


def _tool_name(interface: str | None, function_name: str) -> str:
    """`foo:foo/foo` + `generate` -> `foo_foo_foo_generate`; top-level `fetch` -> `fetch`;
    `foo:foo/foo@0.1.0` keeps its version: `foo_foo_foo_0_1_0_generate`."""
    parts = [function_name] if interface is None else [interface, function_name]
    return "_".join(_NOT_ALLOWED_IN_TOOL_NAME.sub("_", part.lower()) for part in parts)


# ---------------------------------------------------------------------------------------------
# resource handles
#
# Wassette describes `own<r>`/`borrow<r>` with Rust's debug print of the resource's type:
# own'd resource: ResourceType { kind: Uninstantiated { component: 94…, index: ResourceIndex(2) } }
# `component` is the address of the compiled component's type tables in Wassette's memory: it
# changes on every run, so it cannot be reproduced; this store writes 0 there. `index` is the
# resource's place in wasmtime's index space of the component's resources: every imported one
# first (in import order), then the defined ones. The wasmtime binding only tells resource types
# apart (equality), so the defined ones are numbered in order of first appearance among the
# exports - their definition order for components made by wit-component (cargo-component,
# componentize-py, jco); a composition that defines them in nested components instantiated in
# another order than it exports them can number them differently.

_RESOURCE_COMPONENT_ADDRESS = 0


class _Resources:
    def __init__(self, engine: wasmtime.Engine, component_type: ComponentType) -> None:
        self._engine = engine
        self._component_type: ComponentType | None = component_type
        self._known: list[ResourceType] = []

    def describe(self, kind: str, resource: ResourceType) -> dict[str, Any]:
        index = self.index(resource)
        return {
            "type": "string",
            "description": (
                f"{kind}'d resource: ResourceType {{ kind: Uninstantiated {{ component: "
                f"{_RESOURCE_COMPONENT_ADDRESS}, index: ResourceIndex({index}) }} }}"
            ),
        }

    def index(self, resource: ResourceType) -> int:
        if self._component_type is not None:  # numbered on first use only: most have none
            component_type, self._component_type = self._component_type, None
            self._walk(component_type.imports(self._engine), 0)
            self._walk(component_type.exports(self._engine), 0)
        return self._add(resource)

    def _add(self, resource: ResourceType) -> int:
        for index, known in enumerate(self._known):
            if known == resource:
                return index
        self._known.append(resource)
        return len(self._known) - 1

    def _walk(self, externs: dict[str, ComponentExtern], depth: int) -> None:
        from wasmtime.component import ComponentInstanceType, FuncType, ResourceType

        for extern in externs.values():
            try:
                item = extern.ty
            except TypeError:
                continue
            if isinstance(item, ResourceType):
                self._add(item)
            elif isinstance(item, ComponentInstanceType) and depth < _MAX_NESTING:
                self._walk(item.exports(self._engine), depth + 1)
            elif isinstance(item, FuncType):
                try:
                    types = [ty for _, ty in item.params] + [item.result]
                except TypeError:
                    continue
                for ty in types:
                    self._handles(ty, 0)

    def _handles(self, ty: ValType | None, depth: int) -> None:
        """Resources used by a type, in order (first appearance counts)."""
        from wasmtime import component as wc

        if ty is None or depth > _MAX_NESTING:
            return
        if isinstance(ty, (wc.OwnType, wc.BorrowType)):
            self._add(ty.ty)
        elif isinstance(ty, wc.ListType):
            self._handles(ty.element, depth + 1)
        elif isinstance(ty, wc.RecordType):
            for _, field in ty.fields:
                self._handles(field, depth + 1)
        elif isinstance(ty, wc.TupleType):
            for element in ty.elements:
                self._handles(element, depth + 1)
        elif isinstance(ty, wc.VariantType):
            for _, payload in ty.cases:
                self._handles(payload, depth + 1)
        elif isinstance(ty, wc.OptionType):
            self._handles(ty.payload, depth + 1)
        elif isinstance(ty, wc.ResultType):
            self._handles(ty.ok, depth + 1)
            self._handles(ty.err, depth + 1)


# ---------------------------------------------------------------------------------------------
# WIT types -> JSON Schema (component2json's `type_to_json_schema`, key order included)


def _schema(ty: ValType, resources: _Resources | None = None) -> dict[str, Any]:
    from wasmtime import component as wc

    if isinstance(ty, wc.Bool):
        return {"type": "boolean"}
    if isinstance(ty, (wc.U8, wc.U16, wc.U32, wc.U64, wc.S8, wc.S16, wc.S32, wc.S64)):
        return {"type": "number"}
    if isinstance(ty, (wc.F32, wc.F64)):
        return {"type": "number"}
    if isinstance(ty, wc.Char):
        return {"type": "string", "description": "1 unicode codepoint"}
    if isinstance(ty, wc.String):
        return {"type": "string"}
    if isinstance(ty, wc.ListType):
        return {"type": "array", "items": _schema(ty.element, resources)}
    if isinstance(ty, wc.RecordType):
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, field in ty.fields:
            required.append(name)
            properties[name] = _schema(field, resources)
        return {"type": "object", "properties": properties, "required": required}
    if isinstance(ty, wc.TupleType):
        elements = [_schema(element, resources) for element in ty.elements]
        return {
            "type": "array",
            "prefixItems": elements,
            "minItems": len(elements),
            "maxItems": len(elements),
        }
    if isinstance(ty, wc.VariantType):
        return {"oneOf": [_case(name, payload, resources) for name, payload in ty.cases]}
    if isinstance(ty, wc.EnumType):
        return {"type": "string", "enum": list(ty.names)}
    if isinstance(ty, wc.OptionType):
        return {"anyOf": [{"type": "null"}, _schema(ty.payload, resources)]}
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "null"} if ok is None else _schema(ok, resources)
                    },
                    "required": ["ok"],
                },
                {
                    "type": "object",
                    "properties": {
                        "err": {"type": "null"} if err is None else _schema(err, resources)
                    },
                    "required": ["err"],
                },
            ]
        }
    if isinstance(ty, wc.FlagsType):
        return {"type": "object", "properties": {flag: {"type": "boolean"} for flag in ty.names}}
    if isinstance(ty, (wc.OwnType, wc.BorrowType)):
        kind = "own" if isinstance(ty, wc.OwnType) else "borrow"
        if resources is None:
            return {"type": "string", "description": f"{kind}'d resource"}
        return resources.describe(kind, ty.ty)
    if isinstance(ty, wc.FutureType):
        return {"type": "object", "description": "Future type (async operation)"}
    if isinstance(ty, wc.StreamType):
        return {"type": "array", "description": "Stream type (async iteration)"}
    if isinstance(ty, wc.ErrorContext):
        return {"type": "object", "description": "Error context type"}
    return _unsupported(type(ty).__name__)


def _case(name: str, payload: ValType | None, resources: _Resources | None) -> dict[str, Any]:
    if payload is None:
        return {"type": "object", "properties": {"tag": {"const": name}}, "required": ["tag"]}
    return {
        "type": "object",
        "properties": {"tag": {"const": name}, "val": _schema(payload, resources)},
        "required": ["tag", "val"],
    }


def _unsupported(what: str) -> dict[str, Any]:
    return {"type": "string", "description": f"unsupported WIT type: {what}"}


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


def _custom_sections(binary: bytes, name: bytes, depth: int) -> Iterator[bytes]:
    """Payloads of the custom sections called `name`, in binary order, nested core modules and
    components included (as wasmparser's `parse_all` visits them)."""
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
        elif section_id in _NESTED_SECTION_IDS and depth < _MAX_NESTING:
            nested = binary[pos:end]
            if nested[:4] == WASM_MAGIC:
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
