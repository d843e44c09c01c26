"""store.wasm: component detection, introspection into MCP tool schemas, errors and caching.

Expected schemas are written out by hand from the WIT -> JSON Schema mapping of the design;
`assert_same` also compares the JSON text, so key order is part of every expectation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime import component as wc

from tests import wasm_fixtures as fx
from wassette_state.store import wasm
from wassette_state.store.errors import ValidationError

NUMBER = {"type": "number"}
STRING = {"type": "string"}
NULL = {"type": "null"}


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
    assert wasm.WASM_MAGIC == b"\x00asm"


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
    assert wasm.is_component(data) is expected


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
                "l": {"type": "string", "minLength": 1, "maxLength": 1},
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
                "prefixItems": [
                    {"type": "number"},
                    {"type": "string", "minLength": 1, "maxLength": 1},
                ],
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
    "own-handle": (inputs(h=STRING), output(STRING)),
    "borrow-handle": (inputs(h=STRING), output(NUMBER)),
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


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: wc.ErrorContext(), "error-context"),
        (lambda: wc.FutureType.__new__(wc.FutureType), "future"),  # type: ignore[type-abstract]
        (lambda: wc.StreamType.__new__(wc.StreamType), "stream"),  # type: ignore[type-abstract]
        (lambda: object(), "object"),
    ],
)
def test_unsupported_types_become_described_strings(make: Any, what: str) -> None:
    assert_same(
        wasm._schema(make()), {"type": "string", "description": f"unsupported WIT type: {what}"}
    )


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
                "description": "Auto-generated schema for function 'generate'",
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
    assert result.tool_names == ["component_weather_weather_get-weather", "version"]
    assert result.function_identifiers == [
        {
            "package_name": None,
            "interface_name": "component:weather/weather",
            "function_name": "get-weather",
        },
        {"package_name": None, "interface_name": None, "function_name": "version"},
    ]
    weather = result.tool_schemas[0]
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


NESTED_WAT = """
(component
  (core module $m (func (export "f") unreachable))
  (core instance $core (instantiate $m))
  (func $f (canon lift (core func $core "f")))
  (instance $inner (export "go" (func $f)))
  (instance $outer (export "inner" (instance $inner)) (export "top" (func $f)))
  (export "x:y/outer@2.0.0" (instance $outer))
)
"""


def test_nested_instances() -> None:
    result = wasm.describe(bytes(wasmtime.wat2wasm(NESTED_WAT)))
    assert result.tool_names == ["x_y_outer_2_0_0_inner_go", "x_y_outer_2_0_0_top"]
    assert result.function_identifiers == [
        {"package_name": None, "interface_name": "x:y/outer@2.0.0/inner", "function_name": "go"},
        {"package_name": None, "interface_name": "x:y/outer@2.0.0", "function_name": "top"},
    ]


@pytest.mark.parametrize(
    ("path", "function", "expected"),
    [
        ((), "fetch", "fetch"),
        (("foo:foo/foo",), "generate", "foo_foo_foo_generate"),
        (("component:weather/weather",), "get-weather", "component_weather_weather_get-weather"),
        (("wasi:http/types@0.2.0",), "request", "wasi_http_types_0_2_0_request"),
        (("My:Pkg/Iface",), "Do.It", "my_pkg_iface_do_it"),
        (
            ("local:time-server/time",),
            "[method]clock.now",
            "local_time-server_time__method_clock_now",
        ),
    ],
)
def test_tool_name_normalization(path: tuple[str, ...], function: str, expected: str) -> None:
    assert wasm._tool_name(path, function) == expected


# ---------------------------------------------------------------------------------------------
# doc comments from the package-docs section


def test_doc_comments_become_descriptions() -> None:
    tools = tools_by_name(fx.documented_component())
    assert tools["add"]["description"] == "Add two numbers."
    assert tools["foo_foo_foo_generate"]["description"] == "Generate text from a prompt."
    assert tools["sub"]["description"] == "Auto-generated schema for function 'sub'"


def test_doc_comments_v1_format() -> None:
    docs = {
        "worlds": {
            "w": {
                "func_exports": {"fetch": {"docs": "Fetch a URL.", "stability": "unknown"}},
                "interface_exports": {"tools": {"funcs": {"run": "Run it."}}},
            }
        }
    }
    base = fx.build_component([fx.FETCH], interfaces={"tools": [("run", [], None)]})
    tools = tools_by_name(fx.with_package_docs(base, docs, version=1))
    assert tools["fetch"]["description"] == "Fetch a URL."
    assert tools["tools_run"]["description"] == "Run it."


@pytest.mark.parametrize(
    "payload",
    [
        b"\x05" + json.dumps(fx.DOCS).encode(),  # unknown version byte
        b"\x00{not json",
        b"\x00[1, 2]",
        b"",
        b"\x00" + json.dumps({"worlds": {"calc": {"funcs": {"add": 42}}}}).encode(),
        b"\x00" + json.dumps({"worlds": {"calc": {"funcs": {"add": "   "}}}}).encode(),
    ],
)
def test_unusable_package_docs_are_ignored(payload: bytes) -> None:
    base = fx.simple_component([("add", [("a", "s32"), ("b", "s32")], "s32")])
    tools = tools_by_name(fx.with_custom_section(base, "package-docs", payload))
    assert tools["add"]["description"] == "Auto-generated schema for function 'add'"


def test_package_docs_in_a_nested_component_are_found() -> None:
    inner = fx.with_package_docs(bytes(wasmtime.wat2wasm("(component)")), fx.DOCS)
    outer = fx.simple_component([("add", [("a", "s32"), ("b", "s32")], "s32")])
    section = b"\x04" + fx._leb128(len(inner)) + inner  # a nested component section
    tools = tools_by_name(outer + section)
    assert tools["add"]["description"] == "Add two numbers."


# ---------------------------------------------------------------------------------------------
# determinism and caching


def test_output_is_sorted_and_parallel() -> None:
    result = wasm.describe(fx.mixed_component())
    assert result.tool_names == ["a_a_a_run", "a_a_a_stop", "alpha", "b_b_b_run", "zeta"]
    assert [t["name"] for t in result.tool_schemas] == result.tool_names
    assert [i["function_name"] for i in result.function_identifiers] == [
        "run",
        "stop",
        "alpha",
        "run",
        "zeta",
    ]


def test_export_order_does_not_matter() -> None:
    funcs: list[fx.Func] = [("zeta", [], None), ("alpha", [("n", "u32")], "u32")]
    first = wasm.describe(fx.build_component(funcs))
    second = wasm.describe(fx.build_component(list(reversed(funcs))))
    assert json.dumps(first.tool_schemas) == json.dumps(second.tool_schemas)
    assert first.tool_names == second.tool_names


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
        "import sys, wassette_state.store.wasm; "
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
    assert not wasm.is_component(fx.write_component(tmp_path / "m.wasm", "core-module"))


# ---------------------------------------------------------------------------------------------
# a component built by a real toolchain

CALC_WIT = """\
package demo:calc;

world calc {
  export add: func(a: s32, b: s32) -> s32;
}
"""

CALC_APP = """\
try:  # componentize-py >= 0.17 names the bindings module `wit_world`
    import wit_world

    Base = wit_world.WitWorld
except ImportError:  # older releases name it after the world
    import calc

    Base = calc.Calc


class WitWorld(Base):
    def add(self, a: int, b: int) -> int:
        return a + b


Calc = WitWorld
"""

# Runs componentize-py from *this* interpreter, so a missing install fails the test (no skip).
COMPONENTIZE = "; ".join(
    [
        "import sys",
        "from componentize_py import script",
        "sys.argv[0] = 'componentize-py'",
        "sys.exit(script())",
    ]
)
COMPONENTIZE_ARGS = ["-d", "wit", "-w", "calc", "componentize", "app", "-o", "calc.wasm"]


@pytest.mark.slow
def test_componentize_py_component(tmp_path: Path) -> None:
    (tmp_path / "wit").mkdir()
    (tmp_path / "wit" / "calc.wit").write_text(CALC_WIT)
    (tmp_path / "app.py").write_text(textwrap.dedent(CALC_APP))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", COMPONENTIZE, *COMPONENTIZE_ARGS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"componentize-py failed:\n{done.stdout}\n{done.stderr}"
    data = (tmp_path / "calc.wasm").read_bytes()
    assert wasm.is_component(data)

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
