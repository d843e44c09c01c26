"""Materialize the state into Wassette's component directory; the content-addressed blob store."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wassette_state.store import fsutil
from wassette_state.store.state import Component, State

logger = logging.getLogger("wassette")

SUFFIXES = (".wasm", ".metadata.json", ".policy.yaml", ".policy.meta.json")
# Wassette's precompiled code: it loads `<id>.cwasm` without checking it against the .wasm, so
# the file is ours to remove whenever the bytes under an id change or the id goes (DESIGN §3.3).
CWASM = ".cwasm"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ blobs


class BlobStore:
    """Attached wasm bytes by sha256, so rollback and import can bring a component back."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_hex(data)
        target = self.path(digest)
        if not target.is_file():
            fsutil.ensure_dir(target.parent)
            fsutil.atomic_write(target, data, mode=0o644)
        return digest

    def get(self, digest: str) -> bytes | None:
        data = fsutil.read_if_file(self.path(digest))
        if data is not None and sha256_hex(data) != digest:
            logger.warning("blob %s is corrupt; ignoring it", digest[:12])
            return None
        return data


# ------------------------------------------------------------------ materialization


def component_files(component_dir: Path, component_id: str) -> dict[str, Path]:
    return {s: component_dir / f"{component_id}{s}" for s in (*SUFFIXES, CWASM)}


def metadata_bytes(c: Component) -> bytes:
    from wassette_state.store.metadata_files import render

    return render(c.metadata.doc)


def policy_meta_bytes(c: Component, policy_file: Path | None = None) -> bytes | None:
    """`<id>.policy.meta.json`; none for a policy whose source is its own file in the component
    dir (one a grant created), as Wassette writes none for it (DESIGN §7)."""
    if c.policy is None:
        return None
    if policy_file is not None and c.policy.source_uri == policy_file.as_uri():
        return None
    meta = {"attached_at": c.policy.attached_at, "source_uri": c.policy.source_uri}
    return (json.dumps(meta, indent=2) + "\n").encode()


@dataclass
class Report:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    missing_wasm: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # written files, to make durable


def materialize(
    state: State,
    component_dir: Path,
    blobs: BlobStore,
    ids: Iterable[str],
) -> Report:
    """Make the files of the given components match the state (idempotent).

    Only differences are written, so a Wassette server watching the directory sees no churn.
    """
    report = Report()
    fsutil.ensure_dir(component_dir)
    wanted = sorted(set(ids))
    # Many components (an import, a repair): list the dir once, so a file that is not there
    # costs no stat, read or unlink of its own before it is written.
    listed = set(os.listdir(component_dir)) if len(wanted) > 8 else None

    def absent(path: Path) -> bool:
        return listed is not None and path.name not in listed

    for cid in wanted:
        files = component_files(component_dir, cid)
        comp = state.components.get(cid)
        if comp is None:
            for path in files.values():
                if not absent(path) and fsutil.remove(path):
                    report.removed.append(path.name)
            continue
        present = _sync_wasm(comp, files, blobs, report, absent)
        meta = files[".metadata.json"]
        if not (present and _metadata_current(comp, files)):
            _sync(meta, metadata_bytes(comp), report, absent(meta))
        for suffix, data in (
            (".policy.yaml", comp.policy.policy_content.encode() if comp.policy else None),
            (".policy.meta.json", policy_meta_bytes(comp, files[".policy.yaml"])),
        ):
            path = files[suffix]
            if data is not None:
                _sync(path, data, report, absent(path))
            elif not absent(path) and fsutil.remove(path):
                report.removed.append(path.name)
    return report


def _sync(path: Path, data: bytes, report: Report, absent: bool = False) -> None:
    if absent or path.is_symlink() or fsutil.read_if_file(path) != data:
        fsutil.fault("component-file", path)
        fsutil.atomic_write(path, data, durable=False)
        report.written.append(path.name)
        report.paths.append(path)


def _stamp_mtime(comp: Component) -> int | None:
    return comp.metadata.stamp()[1]


def _sync_wasm(
    comp: Component, files: dict[str, Path], blobs: BlobStore, report: Report, absent: Any
) -> bool:
    """Make `<id>.wasm` hold the state's bytes; False when there are none to write."""
    path = files[".wasm"]
    mtime = _stamp_mtime(comp)
    current = None if absent(path) else fsutil.read_if_file(path)
    if current is not None and sha256_hex(current) == comp.wasm_sha256:
        if mtime is not None and int(path.stat().st_mtime) != mtime:
            fsutil.atomic_write(path, current, mtime=mtime, durable=False)
        return True
    data = blobs.get(comp.wasm_sha256)
    if data is None:
        report.missing_wasm.append(comp.component_id)
        logger.warning("no bytes for %s (sha256 %s)", comp.component_id, comp.wasm_sha256[:12])
        return False
    # The stale precompiled code goes first: a crash after this leaves Wassette to compile
    # the bytes afresh, never to run the old ones.
    cwasm = files[CWASM]
    if not absent(cwasm) and fsutil.remove(cwasm):
        report.removed.append(cwasm.name)
    fsutil.atomic_write(path, data, mtime=mtime, durable=False)
    report.written.append(path.name)
    report.paths.append(path)
    return True


def _metadata_current(comp: Component, files: dict[str, Path]) -> bool:
    """Whether the metadata file on disk already says what the state says, so it is left alone.

    Wassette rewrites `<id>.metadata.json` each time it loads a component (its own
    `created_at`, its own stamp); a file whose tools equal the state's and whose stamp
    validates against the wasm on disk is as good as ours, and rewriting it would only make
    the two tools fight over its bytes (DESIGN §7).
    """
    from wassette_state.store.metadata_files import same_tools, valid_beside

    found = valid_beside(files[".metadata.json"], files[".wasm"], comp.wasm_sha256)
    return found is not None and same_tools(found, comp.metadata.doc)
