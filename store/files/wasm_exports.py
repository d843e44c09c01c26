"""A component's exports -> tools: Wassette's `component_exports_to_tools_with_docs`.

One tool per exported function, in export order, recursing into exported instances; tool names
and identifiers as Wassette makes them. Needs wasmtime's types (imported lazily).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.files.wasm_binary import _MAX_NESTING
from wassette_state.store.files.wasm_docs import _find_docs
from wassette_state.store.files.wasm_schema import _Resources, _schema, _unsupported

if TYPE_CHECKING:
    import wasmtime
    from wasmtime.component import ComponentType, FuncType
    from wasmtime.component._types import ComponentExtern

# Tool names: each part (interface export name, function name) lowercased, every character
# outside `[a-z0-9-]` replaced by `_`, parts joined by `_`. An interface keeps its `@version`
# (`foo:foo/foo@0.1.0` + `generate` -> `foo_foo_foo_0_1_0_generate`), like Wassette.
_NOT_ALLOWED_IN_TOOL_NAME = re.compile(r"[^a-z0-9-]")


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
