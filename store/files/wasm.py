"""WebAssembly component introspection: component bytes -> the MCP tools Wassette would serve.

`describe` compiles the bytes with wasmtime (nothing is instantiated or run), walks the
component's exported functions (wasm_exports) and maps each function's WIT types to a JSON
Schema (wasm_schema), one tool per function, described by the component's doc comments
(wasm_docs).

The result is what Wassette 0.8.0 writes into `<id>.metadata.json` for the same bytes (its
`component2json` crate), field for field and key order included: tools in export order, tool
names, descriptions, schemas. The only part that cannot be reproduced is the heap address Wassette
prints inside the description of a resource handle (see `wasm_schema._Resources`).
tests/test_wassette_parity.py checks this against the real binary.

wasmtime is imported lazily inside the functions that need it, so `import store.files.wasm` stays
cheap for CLI start-up; one `wasmtime.Engine` is created on first use and reused.
Results are cached in-process by sha256 of the bytes (persistent caching lives elsewhere).
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.files.wasm_binary import _check_header
from wassette_state.store.files.wasm_docs import _package_docs
from wassette_state.store.files.wasm_exports import _Walker

if TYPE_CHECKING:
    import wasmtime

# MCP's limit; Wassette 0.8.0 panics on a longer generated name, so such a component is refused.
MAX_TOOL_NAME = 128

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
