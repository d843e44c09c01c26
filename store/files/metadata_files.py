"""Wassette's `<id>.metadata.json` on disk: read one, and tell whether it vouches for wasm bytes.

Wassette 0.8.0 writes this file each time it loads a component and trusts it while its
`validation_stamp` matches the wasm (size, then sha256 when set, else mtime). Adopting such a
file instead of introspecting again is what keeps an 18 MB component as cheap to attach or sync
as a small one, and leaving it alone is what stops the two tools rewriting each other's bytes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from wassette_state.store.files import fsutil

MAX_METADATA_BYTES = 64 * 1024 * 1024
TOOL_FIELDS = ("tool_schemas", "function_identifiers", "tool_names")


def read_doc(path: Path) -> dict[str, Any] | None:
    """A metadata file in Wassette's shape, or None (absent, a symlink, too big, not that)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not _is_regular(st.st_mode) or st.st_size > MAX_METADATA_BYTES:
        return None
    raw = fsutil.read_if_file(path)
    return None if raw is None else parse_doc(raw)


def parse_doc(raw: bytes) -> dict[str, Any] | None:
    """A metadata file's bytes in Wassette's shape, or None."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("validation_stamp"), dict):
        return None
    names = doc.get("tool_names")
    schemas = doc.get("tool_schemas")
    idents = doc.get("function_identifiers")
    if not (isinstance(names, list) and isinstance(schemas, list) and isinstance(idents, list)):
        return None
    if not (len(names) == len(schemas) == len(idents)):
        return None
    if not all(isinstance(n, str) for n in names):
        return None
    pairs = zip(schemas, names, strict=True)
    if not all(isinstance(s, dict) and s.get("name") == n for s, n in pairs):
        return None
    return doc


def stamp_matches(doc: dict[str, Any], size: int, sha256: str, mtime: int) -> bool:
    """Wassette's own test: size first, then the content hash when the stamp has one, else
    the wasm file's mtime."""
    stamp = doc.get("validation_stamp")
    if not isinstance(stamp, dict) or stamp.get("file_size") != size:
        return False
    content_hash = stamp.get("content_hash")
    if content_hash:
        return bool(content_hash == sha256)
    return bool(stamp.get("mtime") == mtime)


def valid_beside(meta: Path, wasm: Path, sha256: str) -> dict[str, Any] | None:
    """The metadata file `meta` when its stamp vouches for `wasm`, whose bytes hash to sha256."""
    doc = read_doc(meta)
    if doc is None:
        return None
    try:
        st = os.stat(wasm)
    except OSError:
        return None
    return doc if stamp_matches(doc, st.st_size, sha256, int(st.st_mtime)) else None


def same_tools(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal tools, up to the one thing Wassette writes differently on every run: the memory
    address in a resource handle's description (`component: <N>`, see store.wasm)."""
    if all(a.get(f) == b.get(f) for f in TOOL_FIELDS):
        return True
    return _without_addresses(a) == _without_addresses(b)


_ADDRESS = re.compile(r"Uninstantiated \{ component: \d+,")


def _without_addresses(doc: dict[str, Any]) -> str:
    text = json.dumps([doc.get(f) for f in TOOL_FIELDS], ensure_ascii=False)
    return _ADDRESS.sub("Uninstantiated { component: 0,", text)


def tools_of(doc: dict[str, Any]) -> Any:
    from wassette_state.store.files.wasm import Introspection

    return Introspection(doc["tool_schemas"], doc["function_identifiers"], doc["tool_names"])


def render(doc: dict[str, Any]) -> bytes:
    """Pretty-printed as Wassette writes it (serde_json's pretty printer: two spaces, UTF-8,
    no newline at the end)."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
