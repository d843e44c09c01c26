"""A provisioning manifest → the snapshot import's plan (store.importer), as Wassette reads it.

`state import deploy.yaml` takes a manifest as it takes a state file: the importer sees the
file is a manifest (`manifest_read.looks_like_manifest`) and hands it here; what comes back is
the importer's `PreparedFile`, decided, recorded and materialized by the same path. Each
component is what `wassette serve --manifest` provisions from it (store/domain/manifest_model.py
says what that is):

- id: the file stem of its `file://` path (read as written, not percent-decoded);
- wasm: that file, checked against `digest` when there is one (a mismatch refuses the import);
  when the file is gone, the bytes with that digest from the blob store or the component dir;
- tools: Wassette's metadata beside the file when its stamp vouches for the bytes, else the
  bytes introspected;
- policy: the one Wassette writes from network/storage/environment (same text, its
  `source_uri` `file://<component dir>/<id>.manifest-policy.yaml`); without any of them the
  component keeps the policy it has (none when new);
- secret keys and the environment: unchanged (a manifest has neither; `--prune` detaches
  components the manifest lacks, never environment variables).

Components it cannot read (`oci://`, `https://`, a missing file) are skipped with a warning,
or refused with `--strict`; what the manifest says that is not kept is in `ignored`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.manifest_model import MANIFEST_VERSION, ManifestComponent
from wassette_state.store.domain.manifest_parse import check_file_uri, parse_manifest
from wassette_state.store.domain.manifest_write import file_uri
from wassette_state.store.files import materialize

if TYPE_CHECKING:
    from wassette_state.store.domain.state import Component
    from wassette_state.store.usecases.importer import Prepared, PreparedFile
    from wassette_state.store.usecases.service import Store

MANIFEST_POLICY_SUFFIX = ".manifest-policy.yaml"  # the source_uri Wassette records


def _read_wasm(path: str, where: str) -> bytes | None:
    """The file's bytes (symlinks followed, as Wassette copies them), None when absent."""
    from wassette_state.store.usecases.inputs import MAX_WASM_BYTES

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValidationError(f"manifest: {where}: cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"manifest: {where}: {path} is a directory, not a component file")
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"manifest: {where}: {path} is not a regular file")
    if st.st_size > MAX_WASM_BYTES:
        raise ValidationError(
            f"manifest: {where}: {path} is larger than {MAX_WASM_BYTES // (1024 * 1024)} MiB"
        )
    try:
        return p.read_bytes()
    except OSError as e:
        raise ValidationError(f"manifest: {where}: cannot read {path}: {e.strerror}") from None


def _tools(store: Store, path: str, cid: str, data: bytes, sha: str) -> Any:
    """Wassette's metadata for these bytes (beside the file, or under the id in the component
    dir) when its stamp vouches for them, else introspection of the bytes. Nothing is written:
    a refused or dry-run import leaves no cache entry."""
    from wassette_state.store.files import wasm
    from wassette_state.store.files.metadata_files import tools_of, valid_beside

    source = Path(path)
    candidates = [(source.with_name(f"{cid}.metadata.json"), source)]
    local = store.settings.component_dir / f"{cid}.wasm"
    if local != source:
        candidates.append((local.with_name(f"{cid}.metadata.json"), local))
    for meta, wasm_file in candidates:
        doc = valid_beside(meta, wasm_file, sha)
        if doc is not None:
            return tools_of(doc)
    try:
        return wasm.describe(data, label=source.name)
    except ValidationError as e:
        raise ValidationError(f"manifest: {path}: {e}") from None


def _policy(
    comp: ManifestComponent, cid: str, cur: Component | None, component_dir: Path
) -> dict[str, Any] | None:
    """The policy view the importer takes (`policy_content`, `source_uri`, `attached_at`)."""
    text = comp.policy_text()
    if text is None:  # nothing Wassette writes a policy from: the component keeps its own
        if cur is None or cur.policy is None:
            return None
        return {
            "policy_content": cur.policy.policy_content,
            "source_uri": cur.policy.source_uri or "",
            "attached_at": cur.policy.attached_at or 0,
        }
    source_uri = file_uri(str(component_dir / f"{cid}{MANIFEST_POLICY_SUFFIX}"))
    attached_at = int(time.time())
    if (
        cur is not None
        and cur.policy is not None
        and cur.policy.source_uri == source_uri
        and cur.policy.policy_content == text
    ):
        attached_at = cur.policy.attached_at or 0  # the same import again changes nothing
    return {"policy_content": text, "source_uri": source_uri, "attached_at": attached_at}


def prepare(store: Store, data: bytes, *, strict: bool) -> PreparedFile:
    """Validate the manifest and locate, verify and describe every component's wasm; nothing
    is written (the importer stores the blobs once the whole file is accepted)."""
    from wassette_state.store.usecases.importer import Prepared, PreparedFile
    from wassette_state.store.usecases.inputs import check_secrets_names, metadata_doc

    parsed = parse_manifest(data)
    state = store.state()
    component_dir = store.settings.component_dir
    ids = {c.component_id for c in parsed.components if c.component_id is not None}
    check_secrets_names(store.component_ids() | ids)
    out = PreparedFile(
        sha256=hashlib.sha256(data).hexdigest(),
        version=str(MANIFEST_VERSION),
        exported_at=0,
        lineage=None,
        serial=None,
        # A manifest has no environment: the import never changes it, --prune included.
        environment=dict(state.environment),
        format="manifest",
        ignored=[n.as_dict() for n in parsed.notes],
    )
    prepared: list[Prepared] = []
    for comp in parsed.components:
        cid = comp.component_id

        def skip(reason: str, comp: ManifestComponent = comp) -> None:
            if strict:
                raise ValidationError(f"manifest: {comp.where} ({comp.uri}): {reason} (--strict)")
            out.skipped.append({"component_id": comp.component_id or comp.uri, "reason": reason})

        if cid is None:
            skip("only file:// components can be imported (this one needs a download)")
            continue
        path, _ = check_file_uri(comp)
        wasm_bytes = _read_wasm(path, f"{comp.where}.uri")
        note = None
        want = comp.sha256
        if wasm_bytes is not None:
            sha = materialize.sha256_hex(wasm_bytes)
            if want is not None and sha != want:
                raise ValidationError(
                    f"manifest: {comp.where}.digest: {path} has sha256:{sha}, not the "
                    f"manifest's {comp.digest}"
                )
        elif want is not None and (blob := store.blobs.get(want)) is not None:
            wasm_bytes, sha = blob, want
            note = f"{path} not found: wasm with its digest restored from the blob store"
        else:
            local = component_dir / f"{cid}.wasm"
            held = _read_wasm(str(local), f"{comp.where}.uri") if want is not None else None
            if held is not None and materialize.sha256_hex(held) == want:
                assert want is not None
                wasm_bytes, sha = held, want
                note = f"{path} not found: wasm with its digest taken from the component dir"
            else:
                skip(f"wasm not found: {path}")
                continue
        if note is not None:
            out.reports.append({"component_id": cid, "note": note})
        cur = state.components.get(cid)
        if cur is not None and cur.wasm_sha256 == sha:
            metadata = cur.metadata.doc  # the same bytes: the tools the store has
        else:
            tools = _tools(store, path, cid, wasm_bytes, sha)
            try:
                mtime = int(os.stat(path).st_mtime)
            except OSError:
                mtime = int(time.time())
            metadata = metadata_doc(cid, tools, len(wasm_bytes), mtime, sha, int(time.time()))
        out.blobs[sha] = wasm_bytes
        prepared.append(
            Prepared(
                component_id=cid,
                sha256=sha,
                metadata=metadata,
                source_uri=Path(path).as_uri(),
                policy=_policy(comp, cid, cur, component_dir),
                secret_keys=tuple(cur.secret_keys) if cur is not None else (),
                note=None,
            )
        )
    out.components.extend(prepared)
    return out
