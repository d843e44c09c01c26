"""Real WebAssembly components built in-process, for tests.

Components are written in the component text format and turned into binaries with
`wasmtime.wat2wasm`. Functions are described with a tiny WIT-like type language (below); the
builder emits the named type definitions, computes each function's canonical-ABI core signature
and lifts an `unreachable` core function with it. Nothing is ever called - only types matter.

Type language (`Ty`):
    "bool" "u8" "u16" "u32" "u64" "s8" "s16" "s32" "s64" "f32" "f64" "char" "string"
    ("list", T)                       ("tuple", T, ...)            ("option", T)
    ("result", OK | None, ERR | None)
    ("record", name, [(field, T), ...])   ("variant", name, [(case, T | None), ...])
    ("enum", name, [case, ...])           ("flags", name, [flag, ...])
    ("own", resource-name)                ("borrow", resource-name)
    ("future", T | None)                  ("stream", T | None)
A function is `(name, [(param, T), ...], T | None)`.

For other tests (e.g. the CLI's attach tests): `write_component(path, kind)` writes one of
`KINDS` to `path` and returns its bytes.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import wasmtime

Ty = str | tuple[Any, ...]
Func = tuple[str, Sequence[tuple[str, Ty]], Ty | None]

PRIMITIVES = {
    "bool": ["i32"],
    "u8": ["i32"],
    "u16": ["i32"],
    "u32": ["i32"],
    "s8": ["i32"],
    "s16": ["i32"],
    "s32": ["i32"],
    "char": ["i32"],
    "u64": ["i64"],
    "s64": ["i64"],
    "f32": ["f32"],
    "f64": ["f64"],
    "string": ["i32", "i32"],
}
MAX_FLAT_PARAMS = 16
MAX_FLAT_RESULTS = 1


# ---------------------------------------------------------------------------------------------
# canonical ABI flattening (only what signatures need)


def _join(a: str, b: str) -> str:
    if a == b:
        return a
    if {a, b} == {"i32", "f32"}:
        return "i32"
    return "i64"


def _flatten_cases(payloads: Sequence[Ty | None]) -> list[str]:
    joined: list[str] = []
    for payload in payloads:
        if payload is None:
            continue
        for i, flat in enumerate(flatten(payload)):
            if i < len(joined):
                joined[i] = _join(joined[i], flat)
            else:
                joined.append(flat)
    return ["i32", *joined]


def flatten(ty: Ty) -> list[str]:
    """The core value types a WIT value of type `ty` flattens to."""
    if isinstance(ty, str):
        return list(PRIMITIVES[ty])
    kind = ty[0]
    if kind == "list":
        return ["i32", "i32"]
    if kind == "tuple":
        return [flat for element in ty[1:] for flat in flatten(element)]
    if kind == "record":
        return [flat for _, field in ty[2] for flat in flatten(field)]
    if kind == "variant":
        return _flatten_cases([payload for _, payload in ty[2]])
    if kind == "enum":
        return ["i32"]
    if kind == "flags":
        return ["i32"] * ((len(ty[2]) + 31) // 32)
    if kind == "option":
        return _flatten_cases([None, ty[1]])
    if kind == "result":
        return _flatten_cases([ty[1], ty[2]])
    if kind in ("own", "borrow", "future", "stream"):
        return ["i32"]
    raise ValueError(f"unknown fixture type {ty!r}")


def core_signature(params: Sequence[tuple[str, Ty]], result: Ty | None) -> str:
    """`(param ...) (result ...)` of the core function a lifted function needs."""
    flat_params = [flat for _, ty in params for flat in flatten(ty)]
    if len(flat_params) > MAX_FLAT_PARAMS:
        flat_params = ["i32"]
    flat_results = [] if result is None else flatten(result)
    if len(flat_results) > MAX_FLAT_RESULTS:
        flat_results = ["i32"]  # a pointer to the results in linear memory
    text = ""
    if flat_params:
        text += f" (param {' '.join(flat_params)})"
    if flat_results:
        text += f" (result {' '.join(flat_results)})"
    return text


# ---------------------------------------------------------------------------------------------
# component text generation


def _quote(name: str) -> str:
    return json.dumps(name)


class _ComponentText:
    """Accumulates type definitions (named types are defined once and exported)."""

    def __init__(self) -> None:
        self.types: list[str] = []
        self.exported: dict[str, str] = {}  # type name -> `$id` of its exported alias
        self.resources: dict[str, str] = {}

    def ref(self, ty: Ty) -> str:
        if isinstance(ty, str):
            if ty not in PRIMITIVES:
                raise ValueError(f"unknown fixture type {ty!r}")
            return ty
        kind = ty[0]
        if kind == "list":
            return f"(list {self.ref(ty[1])})"
        if kind == "tuple":
            return f"(tuple {' '.join(self.ref(element) for element in ty[1:])})"
        if kind == "option":
            return f"(option {self.ref(ty[1])})"
        if kind == "result":
            ok = "" if ty[1] is None else f" {self.ref(ty[1])}"
            err = "" if ty[2] is None else f" (error {self.ref(ty[2])})"
            return f"(result{ok}{err})"
        if kind in ("own", "borrow"):
            return f"({kind} {self._resource(ty[1])})"
        if kind in ("future", "stream"):
            return f"({kind})" if ty[1] is None else f"({kind} {self.ref(ty[1])})"
        if kind == "record":
            body = " ".join(f"(field {_quote(n)} {self.ref(t)})" for n, t in ty[2])
            return self._named(ty[1], f"(record {body})")
        if kind == "variant":
            cases = " ".join(
                f"(case {_quote(n)})" if t is None else f"(case {_quote(n)} {self.ref(t)})"
                for n, t in ty[2]
            )
            return self._named(ty[1], f"(variant {cases})")
        if kind == "enum":
            return self._named(ty[1], f"(enum {' '.join(_quote(n) for n in ty[2])})")
        if kind == "flags":
            return self._named(ty[1], f"(flags {' '.join(_quote(n) for n in ty[2])})")
        raise ValueError(f"unknown fixture type {ty!r}")

    def _named(self, name: str, definition: str) -> str:
        if name not in self.exported:
            ident = f"$t{len(self.exported)}"
            self.types.append(f"(type {ident}-def {definition})")
            self.types.append(f"(export {ident} {_quote(name)} (type {ident}-def))")
            self.exported[name] = ident
        return self.exported[name]

    def _resource(self, name: str) -> str:
        if name not in self.resources:
            ident = f"$r{len(self.resources)}"
            self.types.append(f"(type {ident}-def (resource (rep i32)))")
            self.types.append(f"(export {ident} {_quote(name)} (type {ident}-def))")
            self.resources[name] = ident
        return self.resources[name]


def component_wat(
    funcs: Sequence[Func] = (),
    interfaces: dict[str, Sequence[Func]] | None = None,
) -> str:
    """Text of a component exporting `funcs` at top level and each of `interfaces` (export
    name -> functions) as an instance."""
    interfaces = interfaces or {}
    text = _ComponentText()
    core_funcs: list[str] = []
    lifted: list[str] = []
    exports: list[str] = []

    def lift(func: Func) -> str:
        _, params, result = func
        index = len(lifted)
        core_funcs.append(f'(func (export "f{index}"){core_signature(params, result)} unreachable)')
        param_text = " ".join(f"(param {_quote(p)} {text.ref(t)})" for p, t in params)
        result_text = "" if result is None else f" (result {text.ref(result)})"
        lifted.append(
            f"(func $f{index} {param_text}{result_text}"
            f' (canon lift (core func $core "f{index}")'
            ' (memory (core memory $core "memory"))'
            ' (realloc (core func $core "cabi_realloc")) string-encoding=utf8))'
        )
        return f"$f{index}"

    for func in funcs:
        exports.append(f"(export {_quote(func[0])} (func {lift(func)}))")
    for index, (interface, members) in enumerate(interfaces.items()):
        items = [f"(export {_quote(func[0])} (func {lift(func)}))" for func in members]
        # the interface re-exports the named types and resources its functions use
        type_items = [
            f"(export {_quote(name)} (type {ident}))"
            for name, ident in {**text.exported, **text.resources}.items()
            if _uses(members, name)
        ]
        exports.append(f"(instance $i{index} {' '.join(type_items + items)})")
        exports.append(f"(export {_quote(interface)} (instance $i{index}))")

    return "\n".join(
        [
            "(component",
            "  (core module $m",
            '    (memory (export "memory") 1)',
            '    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)',
            *(f"    {line}" for line in core_funcs),
            "  )",
            "  (core instance $core (instantiate $m))",
            *(f"  {line}" for line in text.types),
            *(f"  {line}" for line in lifted),
            *(f"  {line}" for line in exports),
            ")",
        ]
    )


def _uses(funcs: Sequence[Func], type_name: str) -> bool:
    def walk(ty: Ty | None) -> bool:
        if ty is None or isinstance(ty, str):
            return False
        kind = ty[0]
        if kind in ("record", "variant", "enum", "flags") and ty[1] == type_name:
            return True
        if kind in ("own", "borrow"):
            return bool(ty[1] == type_name)
        if kind == "record":
            return any(walk(t) for _, t in ty[2])
        if kind == "variant":
            return any(walk(t) for _, t in ty[2])
        if kind in ("enum", "flags"):
            return False
        return any(walk(t) for t in ty[1:])

    return any(walk(t) for _, params, result in funcs for t in [*(p for _, p in params), result])


def build_component(
    funcs: Sequence[Func] = (), interfaces: dict[str, Sequence[Func]] | None = None
) -> bytes:
    return bytes(wasmtime.wat2wasm(component_wat(funcs, interfaces)))


# ---------------------------------------------------------------------------------------------
# ready-made components

FETCH: Func = ("fetch", [("url", "string")], "string")


def simple_component(funcs: Sequence[Func] = (FETCH,)) -> bytes:
    """A component exporting `funcs` at top level (default: `fetch(url: string) -> string`)."""
    return build_component(funcs)


@functools.cache
def top_level_component() -> bytes:
    """Top-level `fetch(url: string) -> string` and `ping()` (no params, no result)."""
    return build_component([FETCH, ("ping", [], None)])


@functools.cache
def interface_component() -> bytes:
    """Interface `foo:foo/foo` with `generate(prompt: string) -> string`."""
    return build_component(
        interfaces={"foo:foo/foo": [("generate", [("prompt", "string")], "string")]}
    )


@functools.cache
def versioned_interface_component() -> bytes:
    """Interface `foo:foo/foo@0.1.0` with `generate(prompt: string) -> string`."""
    return build_component(
        interfaces={"foo:foo/foo@0.1.0": [("generate", [("prompt", "string")], "string")]}
    )


WEATHER_RECORD: Ty = ("record", "weather", [("city", "string"), ("celsius", "f64")])


@functools.cache
def weather_component() -> bytes:
    """Interface `component:weather/weather` with `get-weather(city) -> weather`, plus a
    top-level `version() -> string`."""
    return build_component(
        [("version", [], "string")],
        interfaces={
            "component:weather/weather": [("get-weather", [("city", "string")], WEATHER_RECORD)]
        },
    )


SHAPE: Ty = ("variant", "shape", [("circle", "f64"), ("square", "u32"), ("empty", None)])
COLOR: Ty = ("enum", "color", ["red", "green", "blue"])
PERMISSIONS: Ty = ("flags", "permissions", ["read", "write", "exec"])
POINT: Ty = ("record", "point", [("x", "f64"), ("y", "f64"), ("label", "string")])
SEGMENT: Ty = (
    "record",
    "segment",
    [("start", POINT), ("end", POINT), ("tags", ("list", "string"))],
)

ALL_TYPES_FUNCS: list[Func] = [
    (
        "primitives",
        [
            ("a", "bool"),
            ("b", "u8"),
            ("c", "u16"),
            ("d", "u32"),
            ("e", "u64"),
            ("f", "s8"),
            ("g", "s16"),
            ("h", "s32"),
            ("i", "s64"),
            ("j", "f32"),
            ("k", "f64"),
            ("l", "char"),
            ("m", "string"),
        ],
        "bool",
    ),
    ("lists", [("xs", ("list", "u32")), ("rows", ("list", ("list", "string")))], ("list", "u8")),
    ("records", [("p", POINT)], SEGMENT),
    ("tuples", [("t", ("tuple", "u32", "string", "bool"))], ("tuple", "f32", "char")),
    ("variants", [("s", SHAPE)], SHAPE),
    ("enums", [("c", COLOR)], COLOR),
    ("options", [("o", ("option", "string"))], ("option", ("option", "u32"))),
    ("result-both", [], ("result", "u32", "string")),
    ("result-ok", [], ("result", "string", None)),
    ("result-err", [], ("result", None, "string")),
    ("result-none", [], ("result", None, None)),
    ("flags", [("p", PERMISSIONS)], PERMISSIONS),
    ("own-handle", [("h", ("own", "handle"))], ("own", "handle")),
    ("borrow-handle", [("h", ("borrow", "handle"))], "u32"),
    ("nothing", [], None),
    # more than 16 flat parameters and a multi-value result: passed through memory
    ("many", [(f"p{i}", "u64") for i in range(17)], ("tuple", "u64", "u64")),
]


@functools.cache
def all_types_component() -> bytes:
    """Top-level functions using every WIT value type in params and results."""
    return build_component(ALL_TYPES_FUNCS)


@functools.cache
def all_types_interface_component() -> bytes:
    """The same functions, inside the interface `test:types/all@1.0.0`."""
    return build_component(interfaces={"test:types/all@1.0.0": ALL_TYPES_FUNCS})


@functools.cache
def mixed_component() -> bytes:
    """Top-level `zeta` and `alpha`, plus two interfaces, exported in non-sorted order."""
    return build_component(
        [("zeta", [], None), ("alpha", [("n", "u32")], "u32")],
        interfaces={
            "b:b/b": [("run", [], None)],
            "a:a/a": [("run", [], None), ("stop", [], None)],
        },
    )


def with_custom_section(binary: bytes, name: str, payload: bytes) -> bytes:
    """`binary` with a custom section appended (legal anywhere in a component)."""
    encoded_name = name.encode()
    body = _leb128(len(encoded_name)) + encoded_name + payload
    return binary + b"\x00" + _leb128(len(body)) + body


def with_package_docs(binary: bytes, docs: dict[str, Any], version: int = 0) -> bytes:
    """`binary` with a wit-component style `package-docs` section (version byte + JSON)."""
    return with_custom_section(binary, "package-docs", bytes([version]) + json.dumps(docs).encode())


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Where Wassette 0.8.0 reads docs: `worlds.<world>.func_exports.<function>.docs`, looked up by the
# bare function name (so `generate`, inside `foo:foo/foo`, is documented too). The other entries
# are wit-component's too (plain-string docs, interface docs) but Wassette does not read them:
# `sub` keeps the auto-generated description. Texts are used as written (non-ASCII and control
# characters included: they check that the metadata is printed as Wassette prints it).
DOCS: dict[str, Any] = {
    "worlds": {
        "calc": {
            "func_exports": {
                "add": {"docs": "Add two numbers.", "stability": "unknown"},
                "generate": {"docs": 'Génère du texte – «prompt» → texte\t\u0001 \\ / "q" 😀'},
            },
            "funcs": {"sub": "Subtract (plain-string docs: not read by Wassette)."},
        }
    },
    "interfaces": {"foo": {"funcs": {"generate": {"docs": "Interface docs: not read."}}}},
}


@functools.cache
def documented_component() -> bytes:
    """Top-level `add(a: s32, b: s32) -> s32` and `sub(...)`, interface `foo:foo/foo` with
    `generate`, and a `package-docs` section (DOCS) documenting `add` and `generate` where
    Wassette reads docs, `sub` only where it does not."""
    binary = build_component(
        [
            ("add", [("a", "s32"), ("b", "s32")], "s32"),
            ("sub", [("a", "s32"), ("b", "s32")], "s32"),
        ],
        interfaces={"foo:foo/foo": [("generate", [("prompt", "string")], "string")]},
    )
    return with_package_docs(binary, DOCS, version=1)


# Instances inside an exported instance: Wassette names a function after the innermost instance
# only (`inner_go`, interface_name `inner`), so the top-level instance `inner` yields the same
# tool name `inner_go` a second time - Wassette keeps both.
NESTED_WAT = """
(component
  (core module $m (func (export "f") unreachable))
  (core instance $core (instantiate $m))
  (func $f (canon lift (core func $core "f")))
  (instance $inner (export "go" (func $f)))
  (instance $outer (export "inner" (instance $inner)) (export "top" (func $f)))
  (export "x:y/outer@2.0.0" (instance $outer))
  (export "inner" (instance $inner))
)
"""


@functools.cache
def nested_component() -> bytes:
    """`x:y/outer@2.0.0` holding instance `inner` (`go`) and `top`, plus `inner` at top level."""
    return bytes(wasmtime.wat2wasm(NESTED_WAT))


# Resource handles: two imported WASI resources (indices 0, 1 in wasmtime's resource index
# space: imports first) and two defined ones, `a` (2) and `b` (3). Wassette's linker provides the
# two WASI interfaces, so it loads this component.
RESOURCES_WAT = """
(component
  (import "wasi:io/error@0.2.0" (instance $err (export "error" (type (sub resource)))))
  (import "wasi:io/poll@0.2.0" (instance $poll (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (core module $m
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "make-b") (result i32) unreachable)
    (func (export "use-both") (param i32 i32) (result i32) unreachable)
    (func (export "poll") (param i32) (result i32) unreachable)
  )
  (core instance $core (instantiate $m))
  (type $a-def (resource (rep i32)))
  (type $b-def (resource (rep i32)))
  (export $a "a" (type $a-def))
  (export $b "b" (type $b-def))
  (export $p "pollable" (type $pollable))
  (func $make-b (result (own $b)) (canon lift (core func $core "make-b")))
  (func $use-both (param "x" (borrow $a)) (param "y" (own $b)) (result (option (own $a)))
    (canon lift (core func $core "use-both") (memory (core memory $core "memory"))))
  (func $poll (param "p" (borrow $p)) (result (list (own $b)))
    (canon lift (core func $core "poll") (memory (core memory $core "memory"))
      (realloc (core func $core "cabi_realloc"))))
  (export "make-b" (func $make-b))
  (export "use-both" (func $use-both))
  (export "poll" (func $poll))
)
"""


@functools.cache
def resources_component() -> bytes:
    """Functions taking and returning handles of imported and defined resources."""
    return bytes(wasmtime.wat2wasm(RESOURCES_WAT))


@functools.cache
def async_types_component() -> bytes:
    """`future` and `stream` values in params and results."""
    return build_component(
        [
            ("futures", [("f", ("future", "u32")), ("g", ("future", None))], ("future", "string")),
            ("streams", [("s", ("stream", "u8"))], ("stream", ("list", "string"))),
        ]
    )


def const_component(funcs: Sequence[tuple[str, int]]) -> bytes:
    """A component whose functions really answer: each `name() -> u32` returns its number
    (for tests that call tools through a running Wassette)."""
    core = " ".join(
        f'(func (export "f{i}") (result i32) i32.const {value})'
        for i, (_, value) in enumerate(funcs)
    )
    lifted = " ".join(
        f'(func $f{i} (result u32) (canon lift (core func $core "f{i}")))'
        for i in range(len(funcs))
    )
    exports = " ".join(f"(export {_quote(name)} (func $f{i}))" for i, (name, _) in enumerate(funcs))
    return bytes(
        wasmtime.wat2wasm(
            f"(component (core module $m {core}) (core instance $core (instantiate $m))"
            f" {lifted} {exports})"
        )
    )


def core_module_bytes() -> bytes:
    """A plain core module (not a component)."""
    return bytes(wasmtime.wat2wasm('(module (func (export "f") (result i32) i32.const 1))'))


def invalid_component_bytes() -> bytes:
    """A component header followed by a truncated section: wasmtime rejects it."""
    return bytes(wasmtime.wat2wasm("(component)")) + b"\x01\x7f"


KINDS: dict[str, Callable[[], bytes]] = {
    "simple": simple_component,
    "top-level": top_level_component,
    "interface": interface_component,
    "versioned-interface": versioned_interface_component,
    "weather": weather_component,
    "all-types": all_types_component,
    "all-types-interface": all_types_interface_component,
    "documented": documented_component,
    "mixed": mixed_component,
    "nested": nested_component,
    "resources": resources_component,
    "async-types": async_types_component,
    "core-module": core_module_bytes,
    "invalid": invalid_component_bytes,
}


# ---------------------------------------------------------------------------------------------
# a component built by a real toolchain (componentize-py), once per test session

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


@functools.cache
def componentize_py_component() -> bytes:
    """`calc.wasm` (world `calc`: `add(a: s32, b: s32) -> s32`) built by componentize-py, about
    18 MB; built once per process (a few seconds), so every test of a session shares it."""
    with tempfile.TemporaryDirectory(prefix="componentize-") as tmp:
        work = Path(tmp)
        (work / "wit").mkdir()
        (work / "wit" / "calc.wit").write_text(CALC_WIT)
        (work / "app.py").write_text(textwrap.dedent(CALC_APP))
        done = subprocess.run(
            [sys.executable, "-c", COMPONENTIZE, *COMPONENTIZE_ARGS],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"componentize-py failed:\n{done.stdout}\n{done.stderr}")
        return (work / "calc.wasm").read_bytes()


# The kinds that are components (the others are refused by both this store and Wassette).
COMPONENT_KINDS = [kind for kind in KINDS if kind not in ("core-module", "invalid")]


def write_component(path: str | Path, kind: str = "simple") -> bytes:
    """Write the fixture binary `kind` (see `KINDS`) to `path` and return its bytes."""
    binary = KINDS[kind]()
    Path(path).write_bytes(binary)
    return binary
