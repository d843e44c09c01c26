"""The WebAssembly binary format, read without wasmtime: the header and custom sections.

Cheap checks done before (or instead of) compiling: is this a component at all, and the payloads
of custom sections, found as wasmparser's `parse_all` finds them.
"""

from __future__ import annotations

from collections.abc import Iterator

from wassette_state.store.domain.errors import ValidationError

WASM_MAGIC = b"\x00asm"

# Bytes 4..8 of the header: a u16 version then a u16 layer (0 = core module, 1 = component).
_LAYER_CORE = 0
_LAYER_COMPONENT = 1
_HEADER_LEN = 8
_CUSTOM_SECTION_ID = 0
# Sections holding a nested binary: a core module (1) or a component (4), inside a component.
_NESTED_SECTION_IDS = (1, 4)
_MAX_NESTING = 64


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
# custom sections (payloads found as wasmparser's `parse_all` visits them)


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
