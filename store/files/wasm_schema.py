"""WIT types -> JSON Schema, as component2json's `type_to_json_schema` writes it.

Key order included, and resource handles described as Wassette prints them. Needs wasmtime's
types (imported lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wassette_state.store.files.wasm_binary import _MAX_NESTING

if TYPE_CHECKING:
    import wasmtime
    from wasmtime.component import ComponentType, ResourceType, ValType
    from wasmtime.component._types import ComponentExtern

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
