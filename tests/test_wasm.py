"""store.wasm: component detection, introspection into MCP tool schemas, errors and caching.

Expected schemas are written out by hand from what Wassette 0.8.0 writes for the same components
(tests/test_wassette_parity.py compares with the real binary); `assert_same` also compares the
JSON text, so key order is part of every expectation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime import component as wc

from tests import wasm_fixtures as fx
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.files import wasm, wasm_binary, wasm_exports, wasm_schema

NUMBER = {"type": "number"}
STRING = {"type": "string"}
NULL = {"type": "null"}
CHAR = {"type": "string", "description": "1 unicode codepoint"}


def handle(kind: str, index: int) -> dict[str, Any]:
    """A resource handle as Wassette describes it (with 0 for its per-run heap address)."""
    return {
        "type": "string",
        "description": f"{kind}'d resource: ResourceType {{ kind: Uninstantiated "
        f"{{ component: 0, index: ResourceIndex({index}) }} }}",
    }


def assert_same(actual: Any, expected: Any) -> None:
    assert actual == expected
    assert json.dumps(actual) == json.dumps(expected)  # same key order too


def tools_by_name(data: bytes) -> dict[str, dict[str, Any]]:
    result = wasm.describe(data)
    return {tool["name"]: tool for tool in result.tool_schemas}


def inputs(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def output(schema: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"result": schema}, "required": ["result"]}


# ---------------------------------------------------------------------------------------------
# is_component / header checks


def test_magic() -> None:
    assert wasm_binary.WASM_MAGIC == b"\x00asm"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (fx.simple_component(), True),
        (fx.all_types_component(), True),
        (b"\x00asm\x0d\x00\x01\x00", True),  # the bare component header
        (fx.core_module_bytes(), False),
        (b"\x00asm\x01\x00\x00\x00", False),  # the bare core module header
        (b"", False),
        (b"\x00asm", False),
        (b"\x00asm\x0d\x00", False),
        (b"garbage that is not wasm at all", False),
        (b"\x7fELF\x02\x01\x01\x00", False),
    ],
)
def test_is_component(data: bytes, expected: bool) -> None:
    assert wasm_binary.is_component(data) is expected


def test_core_module_is_refused_with_a_hint() -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(fx.core_module_bytes(), label="tool.wasm")
    message = str(info.value)
    assert message.startswith("not a WebAssembly component: tool.wasm is a core module;")
    assert "wasm-tools component new" in message


def test_core_module_default_label() -> None:
    with pytest.raises(ValidationError, match="the input is a core module"):
        wasm.describe(fx.core_module_bytes())


@pytest.mark.parametrize("data", [b"", b"\x00as", b"hello world", b"\x7fELF\x02\x01\x01\x00"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(data)
    assert str(info.value) == "not a WebAssembly file (bad magic bytes)"


def test_truncated_header_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(b"\x00asm\x0d\x00")
    assert str(info.value) == "invalid WebAssembly component: truncated header"


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(b"\x00asm\x0d\x00\x02\x00")
    assert str(info.value) == "invalid WebAssembly component: unknown binary layer 2"


def test_component_rejected_by_wasmtime() -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(fx.invalid_component_bytes())
    message = str(info.value)
    assert message.startswith("invalid WebAssembly component: ")
    assert "out of bounds" in message  # wasmtime's root cause is kept
    assert "\n" not in message


def test_component_with_a_wrong_core_signature_is_rejected() -> None:
    good = fx.component_wat([("f", [("x", "string")], None)])
    bad = good.replace('(func (export "f0") (param i32 i32)', '(func (export "f0") (param i32)')
    assert bad != good
    with pytest.raises(ValidationError) as info:
        wasm.describe(bytes(wasmtime.wat2wasm(bad)))
    message = str(info.value)
    assert message.startswith("invalid WebAssembly component: failed to parse WebAssembly module:")
    assert "do not match" in message
    assert "\n" not in message


def test_error_summary_is_one_line() -> None:
    text = (
        "failed to parse\n\nCaused by:\n    0: outer problem\n    1: root problem (at offset 0x1)"
    )
    assert wasm._summarize_error(text) == "failed to parse: root problem (at offset 0x1)"
    assert wasm._summarize_error("just one line") == "just one line"
    assert wasm._summarize_error("") == "rejected by wasmtime"


def test_multi_line_label_is_flattened() -> None:
    with pytest.raises(ValidationError) as info:
        wasm.describe(fx.core_module_bytes(), label="a\nb.wasm")
    assert "\n" not in str(info.value)
    assert "a b.wasm is a core module" in str(info.value)


# ---------------------------------------------------------------------------------------------
# every WIT type -> JSON Schema (hand-written expectations)

POINT_SCHEMA = {
    "type": "object",
    "properties": {"x": NUMBER, "y": NUMBER, "label": STRING},
    "required": ["x", "y", "label"],
}
SHAPE_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"tag": {"const": "circle"}, "val": {"type": "number"}},
            "required": ["tag", "val"],
        },
        {
            "type": "object",
            "properties": {"tag": {"const": "square"}, "val": {"type": "number"}},
            "required": ["tag", "val"],
        },
        {
            "type": "object",
            "properties": {"tag": {"const": "empty"}},
            "required": ["tag"],
        },
    ]
}
COLOR_SCHEMA = {"type": "string", "enum": ["red", "green", "blue"]}
PERMISSIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "read": {"type": "boolean"},
        "write": {"type": "boolean"},
        "exec": {"type": "boolean"},
    },
}

EXPECTED_TYPES: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "primitives": (
        {
            "type": "object",
            "properties": {
                "a": {"type": "boolean"},
                "b": {"type": "number"},
                "c": {"type": "number"},
                "d": {"type": "number"},
                "e": {"type": "number"},
                "f": {"type": "number"},
                "g": {"type": "number"},
                "h": {"type": "number"},
                "i": {"type": "number"},
                "j": {"type": "number"},
                "k": {"type": "number"},
                "l": CHAR,
                "m": {"type": "string"},
            },
            "required": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"],
        },
        {"type": "object", "properties": {"result": {"type": "boolean"}}, "required": ["result"]},
    ),
    "lists": (
        {
            "type": "object",
            "properties": {
                "xs": {"type": "array", "items": {"type": "number"}},
                "rows": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            },
            "required": ["xs", "rows"],
        },
        output({"type": "array", "items": {"type": "number"}}),
    ),
    "records": (
        inputs(p=POINT_SCHEMA),
        output(
            {
                "type": "object",
                "properties": {
                    "start": POINT_SCHEMA,
                    "end": POINT_SCHEMA,
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["start", "end", "tags"],
            }
        ),
    ),
    "tuples": (
        inputs(
            t={
                "type": "array",
                "prefixItems": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}],
                "minItems": 3,
                "maxItems": 3,
            }
        ),
        output(
            {
                "type": "array",
                "prefixItems": [{"type": "number"}, CHAR],
                "minItems": 2,
                "maxItems": 2,
            }
        ),
    ),
    "variants": (inputs(s=SHAPE_SCHEMA), output(SHAPE_SCHEMA)),
    "enums": (inputs(c=COLOR_SCHEMA), output(COLOR_SCHEMA)),
    "options": (
        inputs(o={"anyOf": [{"type": "null"}, {"type": "string"}]}),
        output({"anyOf": [{"type": "null"}, {"anyOf": [{"type": "null"}, {"type": "number"}]}]}),
    ),
    "result-both": (
        {"type": "object", "properties": {}, "required": []},
        output(
            {
                "oneOf": [
                    {"type": "object", "properties": {"ok": NUMBER}, "required": ["ok"]},
                    {"type": "object", "properties": {"err": STRING}, "required": ["err"]},
                ]
            }
        ),
    ),
    "result-ok": (
        inputs(),
        output(
            {
                "oneOf": [
                    {"type": "object", "properties": {"ok": STRING}, "required": ["ok"]},
                    {"type": "object", "properties": {"err": NULL}, "required": ["err"]},
                ]
            }
        ),
    ),
    "result-err": (
        inputs(),
        output(
            {
                "oneOf": [
                    {"type": "object", "properties": {"ok": NULL}, "required": ["ok"]},
                    {"type": "object", "properties": {"err": STRING}, "required": ["err"]},
                ]
            }
        ),
    ),
    "result-none": (
        inputs(),
        output(
            {
                "oneOf": [
                    {"type": "object", "properties": {"ok": NULL}, "required": ["ok"]},
                    {"type": "object", "properties": {"err": NULL}, "required": ["err"]},
                ]
            }
        ),
    ),
    "flags": (inputs(p=PERMISSIONS_SCHEMA), output(PERMISSIONS_SCHEMA)),
    "own-handle": (inputs(h=handle("own", 0)), output(handle("own", 0))),
    "borrow-handle": (inputs(h=handle("borrow", 0)), output(NUMBER)),
    "nothing": ({"type": "object", "properties": {}, "required": []}, None),
    "many": (
        inputs(**{f"p{i}": NUMBER for i in range(17)}),
        output({"type": "array", "prefixItems": [NUMBER, NUMBER], "minItems": 2, "maxItems": 2}),
    ),
}


def test_every_fixture_function_has_an_expectation() -> None:
    assert sorted(EXPECTED_TYPES) == sorted(name for name, _, _ in fx.ALL_TYPES_FUNCS)
    assert sorted(tools_by_name(fx.all_types_component())) == sorted(EXPECTED_TYPES)


@pytest.mark.parametrize("function", sorted(EXPECTED_TYPES))
def test_type_mapping_top_level(function: str) -> None:
    expected_input, expected_output = EXPECTED_TYPES[function]
    tool = tools_by_name(fx.all_types_component())[function]
    expected: dict[str, Any] = {
        "name": function,
        "description": f"Auto-generated schema for function '{function}'",
        "inputSchema": expected_input,
    }
    if expected_output is not None:
        expected["outputSchema"] = expected_output
    assert_same(tool, expected)


@pytest.mark.parametrize("function", sorted(EXPECTED_TYPES))
def test_type_mapping_inside_an_interface(function: str) -> None:
    expected_input, expected_output = EXPECTED_TYPES[function]
    name = f"test_types_all_1_0_0_{function}"
    tool = tools_by_name(fx.all_types_interface_component())[name]
    assert_same(tool["inputSchema"], expected_input)
    assert_same(tool.get("outputSchema"), expected_output)


def test_tool_key_order() -> None:
    tools = tools_by_name(fx.all_types_component())
    assert list(tools["lists"]) == ["name", "description", "inputSchema", "outputSchema"]
    assert list(tools["nothing"]) == ["name", "description", "inputSchema"]


def test_function_without_result_has_no_output_schema() -> None:
    tools = tools_by_name(fx.top_level_component())
    assert "outputSchema" not in tools["ping"]
    assert_same(tools["ping"]["inputSchema"], {"type": "object", "properties": {}, "required": []})
    assert_same(tools["fetch"]["outputSchema"], output(STRING))


def test_async_types_as_wassette_describes_them() -> None:
    tools = tools_by_name(fx.async_types_component())
    future = {"type": "object", "description": "Future type (async operation)"}
    stream = {"type": "array", "description": "Stream type (async iteration)"}
    assert_same(tools["futures"]["inputSchema"], inputs(f=future, g=future))
    assert_same(tools["futures"]["outputSchema"], output(future))
    assert_same(tools["streams"]["inputSchema"], inputs(s=stream))
    assert_same(tools["streams"]["outputSchema"], output(stream))
    assert_same(
        wasm_schema._schema(wc.ErrorContext()),
        {"type": "object", "description": "Error context type"},
    )


def test_unknown_types_become_described_strings() -> None:
    assert_same(
        wasm_schema._schema(object()),  # type: ignore[arg-type]
        {"type": "string", "description": "unsupported WIT type: object"},
    )


def test_resource_handles_are_numbered_imports_first() -> None:
    """wasmtime numbers resources imported ones first (wasi:io error 0, pollable 1), then the
    defined ones (a 2, b 3)."""
    tools = tools_by_name(fx.resources_component())
    assert_same(tools["make-b"]["outputSchema"], output(handle("own", 3)))
    assert_same(tools["use-both"]["inputSchema"], inputs(x=handle("borrow", 2), y=handle("own", 3)))
    assert_same(tools["use-both"]["outputSchema"], output({"anyOf": [NULL, handle("own", 2)]}))
    assert_same(tools["poll"]["inputSchema"], inputs(p=handle("borrow", 1)))
    assert_same(tools["poll"]["outputSchema"], output({"type": "array", "items": handle("own", 3)}))


# ---------------------------------------------------------------------------------------------
# naming and identifiers


def test_interface_naming() -> None:
    result = wasm.describe(fx.interface_component())
    assert result.tool_names == ["foo_foo_foo_generate"]
    assert result.function_identifiers == [
        {"package_name": None, "interface_name": "foo:foo/foo", "function_name": "generate"}
    ]
    assert_same(
        result.tool_schemas,
        [
            {
                "name": "foo_foo_foo_generate",
                "description": "Auto-generated schema for function 'foo_foo_foo_generate'",
                "inputSchema": {
                    "type": "object",
                    "properties": {"prompt": {"type": "string"}},
                    "required": ["prompt"],
                },
                "outputSchema": {
                    "type": "object",
                    "properties": {"result": {"type": "string"}},
                    "required": ["result"],
                },
            }
        ],
    )


def test_weather_interface_and_top_level_function() -> None:
    result = wasm.describe(fx.weather_component())
    # export order: the top-level function is exported before the interface
    assert result.tool_names == ["version", "component_weather_weather_get-weather"]
    assert result.function_identifiers == [
        {"package_name": None, "interface_name": None, "function_name": "version"},
        {
            "package_name": None,
            "interface_name": "component:weather/weather",
            "function_name": "get-weather",
        },
    ]
    weather = result.tool_schemas[1]
    assert weather["description"] == (
        "Auto-generated schema for function 'component_weather_weather_get-weather'"
    )
    assert_same(
        weather["inputSchema"],
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    assert_same(
        weather["outputSchema"],
        {
            "type": "object",
            "properties": {
                "result": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
                    "required": ["city", "celsius"],
                }
            },
            "required": ["result"],
        },
    )


def test_interface_version_is_kept_like_wassette() -> None:
    result = wasm.describe(fx.versioned_interface_component())
    assert result.tool_names == ["foo_foo_foo_0_1_0_generate"]
    assert result.function_identifiers[0]["interface_name"] == "foo:foo/foo@0.1.0"


def test_top_level_naming() -> None:
    result = wasm.describe(fx.top_level_component())
    assert result.tool_names == ["fetch", "ping"]
    assert result.function_identifiers == [
        {"package_name": None, "interface_name": None, "function_name": "fetch"},
        {"package_name": None, "interface_name": None, "function_name": "ping"},
    ]
    assert [t["name"] for t in result.tool_schemas] == result.tool_names


def test_nested_instances_are_named_after_the_innermost_one() -> None:
    result = wasm.describe(fx.nested_component())
    # `inner` inside `x:y/outer@2.0.0`, then `top`, then the top-level instance `inner`: the
    # same tool name twice, kept twice like Wassette does
    assert result.tool_names == ["inner_go", "x_y_outer_2_0_0_top", "inner_go"]
    assert result.function_identifiers == [
        {"package_name": None, "interface_name": "inner", "function_name": "go"},
        {"package_name": None, "interface_name": "x:y/outer@2.0.0", "function_name": "top"},
        {"package_name": None, "interface_name": "inner", "function_name": "go"},
    ]
    assert [t["description"] for t in result.tool_schemas] == [
        "Auto-generated schema for function 'inner_go'",
        "Auto-generated schema for function 'x_y_outer_2_0_0_top'",
        "Auto-generated schema for function 'inner_go'",
    ]


def test_tool_names_up_to_128_characters() -> None:
    longest = "a" * wasm.MAX_TOOL_NAME
    assert wasm.describe(fx.simple_component([(longest, [], None)])).tool_names == [longest]
    data = fx.build_component(interfaces={"a:b/" + "c" * 121: [("dd", [], None)]})
    assert wasm.describe(data).tool_names == ["a_b_" + "c" * 121 + "_dd"]  # 128 exactly


def test_a_longer_tool_name_is_refused() -> None:
    """Wassette 0.8.0 panics on it (ToolNameTooLong): refused with the function's name."""
    data = fx.build_component(interfaces={"a:b/" + "c" * 122: [("dd", [], None)]})
    with pytest.raises(ValidationError) as info:
        wasm.describe(data)
    message = str(info.value)
    assert "129 characters" in message and "'a:b/ccc" in message and "#dd'" in message
    assert "Wassette 0.8.0 cannot load" in message


@pytest.mark.parametrize(
    ("interface", "function", "expected"),
    [
        (None, "fetch", "fetch"),
        ("foo:foo/foo", "generate", "foo_foo_foo_generate"),
        ("component:weather/weather", "get-weather", "component_weather_weather_get-weather"),
        ("wasi:http/types@0.2.0", "request", "wasi_http_types_0_2_0_request"),
        ("My:Pkg/Iface", "Do.It", "my_pkg_iface_do_it"),
        ("local:time-server/time", "[method]clock.now", "local_time-server_time__method_clock_now"),
        ("a:b/c@1.0.0-rc.1+build.5", "f", "a_b_c_1_0_0-rc_1_build_5_f"),
    ],
)
def test_tool_name_normalization(interface: str | None, function: str, expected: str) -> None:
    assert wasm_exports._tool_name(interface, function) == expected


# ---------------------------------------------------------------------------------------------
# doc comments from the package-docs section


def test_doc_comments_become_descriptions() -> None:
    tools = tools_by_name(fx.documented_component())
    assert tools["add"]["description"] == "Add two numbers."
    # looked up by the bare function name, so the interface function gets `generate`'s docs
    assert (
        tools["foo_foo_foo_generate"]["description"]
        == (fx.DOCS["worlds"]["calc"]["func_exports"]["generate"]["docs"])
    )
    # plain-string docs and interface docs are not read (Wassette 0.8.0 does not)
    assert tools["sub"]["description"] == "Auto-generated schema for function 'sub'"


def test_interface_docs_are_not_read() -> None:
    docs = {
        "interfaces": {"tools": {"funcs": {"run": {"docs": "Run."}}}},
        "worlds": {"w": {"interface_exports": {"tools": {"funcs": {"run": {"docs": "Run."}}}}}},
    }
    base = fx.build_component(interfaces={"t:t/tools": [("run", [], None)]})
    tools = tools_by_name(fx.with_package_docs(base, docs, version=1))
    assert (
        tools["t_t_tools_run"]["description"]
        == "Auto-generated schema for function 't_t_tools_run'"
    )


ADD = fx.simple_component([("add", [("a", "s32"), ("b", "s32")], "s32")])
AUTO_ADD = "Auto-generated schema for function 'add'"


def add_docs(payload: bytes, binary: bytes = ADD) -> str:
    tools = tools_by_name(fx.with_custom_section(binary, "package-docs", payload))
    return str(tools["add"]["description"])


def func_exports(*worlds: dict[str, Any]) -> bytes:
    document = {"worlds": {f"w{i}": {"func_exports": w} for i, w in enumerate(worlds)}}
    return b"\x01" + json.dumps(document).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (func_exports({"add": {"docs": "Add."}}), "Add."),
        (func_exports({"add": {"docs": ""}}), ""),  # empty docs are used as they are
        (func_exports({"add": {"docs": "  Add\n\n"}}), "  Add\n\n"),
        (func_exports({"add": {"docs": "Add.", "stability": {"stable": {}}}}), "Add."),
        (b"\x07" + func_exports({"add": {"docs": "Add."}})[1:], "Add."),  # any version byte
        # the first world that documents the function wins
        (
            func_exports({"sub": {"docs": "Sub."}}, {"add": {"docs": "B"}}, {"add": {"docs": "C"}}),
            "B",
        ),
        # what Wassette does not read
        (func_exports({"add": "plain string"}), AUTO_ADD),
        (func_exports({"add": {"docs": 42}}), AUTO_ADD),
        (func_exports({"add": {"docs": None}}), AUTO_ADD),
        (
            b"\x00" + json.dumps({"worlds": {"w": {"funcs": {"add": {"docs": "x"}}}}}).encode(),
            AUTO_ADD,
        ),
        (
            b"\x00" + json.dumps({"interfaces": {"w": {"funcs": {"add": {"docs": "x"}}}}}).encode(),
            AUTO_ADD,
        ),
        (b"\x00" + json.dumps({"worlds": [1]}).encode(), AUTO_ADD),
        (b"\x00[1, 2]", AUTO_ADD),
        (b"\x00{not json", AUTO_ADD),
        (b"", AUTO_ADD),
        (b"\x00", AUTO_ADD),
    ],
)
def test_doc_lookup(payload: bytes, expected: str) -> None:
    assert add_docs(payload) == expected


DOCUMENTED_ADD = '{"worlds": {"w": {"func_exports": {"add": {"docs": "x"}}}}, "n": %s}'


def nested_arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "text",
    [
        DOCUMENTED_ADD % "NaN",
        DOCUMENTED_ADD % "1e999",
        DOCUMENTED_ADD % ("1" + "0" * 400),
        '{"worlds": {"w": {"func_exports": {"add": {"docs": "\\ud800"}}}}}',
        DOCUMENTED_ADD % nested_arrays(127),  # 128 levels with the outer object
        DOCUMENTED_ADD % "1" + " trailing",
    ],
    ids=["nan", "float-out-of-range", "int-out-of-range", "lone-surrogate", "too-deep", "trailing"],
)
def test_docs_that_serde_json_rejects_are_ignored(text: str) -> None:
    """serde_json fails on these (checked with the real binary), so Wassette reads no docs."""
    assert add_docs(b"\x01" + text.encode()) == AUTO_ADD


def test_docs_nesting_127_levels_are_read() -> None:
    assert add_docs(b"\x01" + (DOCUMENTED_ADD % nested_arrays(126)).encode()) == "x"


def test_only_the_first_package_docs_section_counts() -> None:
    broken = fx.with_custom_section(ADD, "package-docs", b"\x00{broken")
    assert add_docs(func_exports({"add": {"docs": "later"}}), broken) == AUTO_ADD
    # ... but one that is only a version byte is skipped
    empty = fx.with_custom_section(ADD, "package-docs", b"\x01")
    assert add_docs(func_exports({"add": {"docs": "later"}}), empty) == "later"


def nested_section(section_id: int, binary: bytes) -> bytes:
    return bytes([section_id]) + fx._leb128(len(binary)) + binary


def test_package_docs_in_a_nested_component_are_found() -> None:
    inner = fx.with_custom_section(
        bytes(wasmtime.wat2wasm("(component)")),
        "package-docs",
        func_exports({"add": {"docs": "Add."}}),
    )
    tools = tools_by_name(ADD + nested_section(4, inner))
    assert tools["add"]["description"] == "Add."


def test_package_docs_in_a_nested_core_module_are_found() -> None:
    module = bytes(wasmtime.wat2wasm("(module)"))
    module += fx.with_custom_section(b"", "package-docs", func_exports({"add": {"docs": "Add."}}))
    component = bytes(
        wasmtime.wat2wasm(
            """(component
              (core module $m (func (export "f") (param i32 i32) (result i32) unreachable))
              (core instance $i (instantiate $m))
              (func $add (param "a" s32) (param "b" s32) (result s32)
                (canon lift (core func $i "f")))
              (export "add" (func $add)))"""
        )
    )
    tools = tools_by_name(component + nested_section(1, module))  # an unused module
    assert tools["add"]["description"] == "Add."


# ---------------------------------------------------------------------------------------------
# determinism and caching


def test_output_is_in_export_order_and_parallel() -> None:
    result = wasm.describe(fx.mixed_component())
    assert result.tool_names == ["zeta", "alpha", "b_b_b_run", "a_a_a_run", "a_a_a_stop"]
    assert [t["name"] for t in result.tool_schemas] == result.tool_names
    assert [i["function_name"] for i in result.function_identifiers] == [
        "zeta",
        "alpha",
        "run",
        "run",
        "stop",
    ]


def test_export_order_is_kept() -> None:
    funcs: list[fx.Func] = [("zeta", [], None), ("alpha", [("n", "u32")], "u32")]
    first = wasm.describe(fx.build_component(funcs))
    second = wasm.describe(fx.build_component(list(reversed(funcs))))
    assert first.tool_names == ["zeta", "alpha"]
    assert second.tool_names == ["alpha", "zeta"]
    assert first.tool_schemas == list(reversed(second.tool_schemas))


def test_describe_is_deterministic_across_fresh_introspections() -> None:
    data = fx.all_types_component()
    wasm._clear_cache()
    first = wasm.describe(data)
    wasm._clear_cache()
    second = wasm.describe(data)
    assert json.dumps(first.tool_schemas) == json.dumps(second.tool_schemas)
    assert first == second


def test_same_bytes_are_introspected_once() -> None:
    data = fx.simple_component([("cache-probe", [("x", "u8")], None)])
    wasm._clear_cache()
    before = wasm._introspect_count
    first = wasm.describe(data)
    assert wasm._introspect_count == before + 1
    second = wasm.describe(bytes(bytearray(data)))  # same bytes, another object
    assert wasm._introspect_count == before + 1
    assert first == second
    other = fx.simple_component([("cache-probe-2", [], None)])
    wasm.describe(other)
    assert wasm._introspect_count == before + 2


def test_callers_cannot_corrupt_the_cache() -> None:
    data = fx.top_level_component()
    first = wasm.describe(data)
    first.tool_schemas[0]["name"] = "mutated"
    first.tool_names.clear()
    second = wasm.describe(data)
    assert second.tool_names == ["fetch", "ping"]
    assert second.tool_schemas[0]["name"] == "fetch"


def test_introspection_is_a_frozen_dataclass() -> None:
    result = wasm.describe(fx.simple_component())
    with pytest.raises(AttributeError):
        result.tool_names = []  # type: ignore[misc]


def test_import_does_not_load_wasmtime() -> None:
    code = (
        "import sys, wassette_state.store.files.wasm; "
        "assert 'wasmtime' not in sys.modules, 'wasmtime imported'"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_write_component(tmp_path: Path) -> None:
    path = tmp_path / "c.wasm"
    data = fx.write_component(path, "interface")
    assert path.read_bytes() == data
    assert wasm.describe(data).tool_names == ["foo_foo_foo_generate"]
    assert not wasm_binary.is_component(fx.write_component(tmp_path / "m.wasm", "core-module"))


# ---------------------------------------------------------------------------------------------
# a component built by a real toolchain


@pytest.mark.slow
def test_componentize_py_component() -> None:
    started = time.monotonic()
    data = fx.componentize_py_component()  # built once per session, shared with other tests
    assert wasm_binary.is_component(data)

    result = wasm.describe(data, label="calc.wasm")
    print(f"componentize-py + describe: {time.monotonic() - started:.1f}s, {len(data)} bytes")
    assert "add" in result.tool_names
    index = result.tool_names.index("add")
    assert result.function_identifiers[index] == {
        "package_name": None,
        "interface_name": None,
        "function_name": "add",
    }
    assert_same(
        result.tool_schemas[index],
        {
            "name": "add",
            "description": "Auto-generated schema for function 'add'",
            "inputSchema": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
            "outputSchema": {
                "type": "object",
                "properties": {"result": {"type": "number"}},
                "required": ["result"],
            },
        },
    )
