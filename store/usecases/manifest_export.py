"""A state (now or as of a past point) → a provisioning manifest for `wassette serve --manifest`.

The pure part is store/domain/manifest_write.py; this finds each component's bytes on disk
under a name Wassette turns into the right id. Wassette names a component after the stem of its
file, so a component's uri must be a `<id>.wasm` holding exactly its bytes:

1. the file it was attached from, when that is `<id>.wasm` and still holds those bytes;
2. `<component dir>/<id>.wasm`, when it holds them (Wassette copies a file onto itself fine);
3. with `wasm_dir`, a copy written there from the blob store: a manifest and its wasm files
   that travel together, and the only way for a past point whose bytes have since changed.

A component none of these gives is left out of the manifest and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.manifest_model import Format, Note
from wassette_state.store.domain.manifest_write import file_uri, manifest_doc, render_manifest
from wassette_state.store.files import fsutil, materialize

if TYPE_CHECKING:
    from wassette_state.store.domain.state import Component, State
    from wassette_state.store.usecases.service import Store


@dataclass(frozen=True)
class ManifestExport:
    data: bytes
    components: int  # how many the manifest holds
    notes: list[Note]


def _file_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def _source_path(c: Component) -> Path | None:
    """The file the component was attached from, when it is a local `<id>.wasm`."""
    uri = c.source_uri or ""
    if not uri.startswith("file://"):
        return None
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return None
    path = Path(unquote(parsed.path))
    if not path.is_absolute() or path.name != f"{c.component_id}.wasm":
        return None
    return path


def locate(store: Store, c: Component) -> str | None:
    """The uri of a `<id>.wasm` holding the component's bytes (1, 2 above), or None."""
    candidates = [_source_path(c), store.settings.component_dir / f"{c.component_id}.wasm"]
    for path in candidates:
        if path is None:
            continue
        data = _file_bytes(path)
        if data is not None and materialize.sha256_hex(data) == c.wasm_sha256:
            return file_uri(str(path))
    return None


def _write_wasm(store: Store, c: Component, wasm_dir: Path) -> str | None:
    data = store.blobs.get(c.wasm_sha256)
    if data is None:
        found = locate(store, c)
        if found is not None:
            data = _file_bytes(Path(found[len("file://") :]))
    if data is None:
        return None
    target = wasm_dir / f"{c.component_id}.wasm"
    if _file_bytes(target) != data:
        fsutil.atomic_write(target, data, mode=0o644)
    return file_uri(str(target))


def _wasm_dir(path: str) -> Path:
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ValidationError(f"--wasm-dir {target}: not a directory")
    if not target.parent.is_dir():
        raise ValidationError(f"--wasm-dir {target}: directory {target.parent} does not exist")
    return target


def export_manifest(
    store: Store, state: State, fmt: Format, wasm_dir: str | None = None
) -> ManifestExport:
    """The manifest bytes for `state` and what it cannot carry. Refused (nothing written) when
    no component can be in it: Wassette refuses a manifest without components."""
    target_dir = _wasm_dir(wasm_dir) if wasm_dir is not None else None
    comps = state.components
    if not comps:
        raise ValidationError(
            "nothing to put in a manifest: the state has no components (Wassette refuses a "
            "manifest without any)"
        )
    uris: dict[str, str | None] = {}
    if target_dir is None:
        uris = {cid: locate(store, c) for cid, c in comps.items()}
    else:
        fsutil.ensure_dir(target_dir)
        uris = {cid: _write_wasm(store, c, target_dir) for cid, c in comps.items()}
    doc, notes = manifest_doc(
        {
            cid: (
                uris[cid],
                c.wasm_sha256,
                c.policy.policy_content if c.policy is not None else None,
                tuple(sorted(c.secret_keys)),
            )
            for cid, c in comps.items()
        },
        state.environment,
    )
    if not doc["components"]:
        raise ValidationError(
            "nothing to put in a manifest: no component's bytes are in a file named after it "
            "(<id>.wasm); export with --wasm-dir DIR to write them there"
        )
    return ManifestExport(render_manifest(doc, fmt), len(doc["components"]), notes)
