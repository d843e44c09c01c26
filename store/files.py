"""Materialize the state into Wassette's component directory; the content-addressed blob store."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wassette_state.store import fsutil
from wassette_state.store.state import Component, State

logger = logging.getLogger("wassette")

SUFFIXES = (".wasm", ".metadata.json", ".policy.yaml", ".policy.meta.json")


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
    return {s: component_dir / f"{component_id}{s}" for s in SUFFIXES}


def metadata_bytes(c: Component) -> bytes:
    return (c.metadata.raw + "\n").encode()


def policy_meta_bytes(c: Component) -> bytes | None:
    if c.policy is None:
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
        _sync_wasm(comp, files[".wasm"], blobs, report, absent(files[".wasm"]))
        for suffix, data in (
            (".metadata.json", metadata_bytes(comp)),
            (".policy.yaml", comp.policy.policy_content.encode() if comp.policy else None),
            (".policy.meta.json", policy_meta_bytes(comp)),
        ):
            path = files[suffix]
            if data is not None:
                _sync(path, data, report, absent(path))
            elif not absent(path) and fsutil.remove(path):
                report.removed.append(path.name)
    return report


def _sync(path: Path, data: bytes, report: Report, absent: bool = False) -> None:
    if absent or path.is_symlink() or fsutil.read_if_file(path) != data:
        fsutil.atomic_write(path, data, durable=False)
        report.written.append(path.name)
        report.paths.append(path)


def _stamp_mtime(comp: Component) -> int | None:
    return comp.metadata.stamp()[1]


def _sync_wasm(
    comp: Component, path: Path, blobs: BlobStore, report: Report, absent: bool = False
) -> None:
    mtime = _stamp_mtime(comp)
    current = None if absent else fsutil.read_if_file(path)
    if current is not None and sha256_hex(current) == comp.wasm_sha256:
        if mtime is not None and int(path.stat().st_mtime) != mtime:
            fsutil.atomic_write(path, current, mtime=mtime, durable=False)
        return
    data = blobs.get(comp.wasm_sha256)
    if data is None:
        report.missing_wasm.append(comp.component_id)
        logger.warning("no bytes for %s (sha256 %s)", comp.component_id, comp.wasm_sha256[:12])
        return
    fsutil.atomic_write(path, data, mtime=mtime, durable=False)
    report.written.append(path.name)
    report.paths.append(path)
