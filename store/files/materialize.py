"""Materialize the state into Wassette's component directory; the content-addressed blob store."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wassette_state.store.domain.state import Component, State
from wassette_state.store.files import fsutil

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
    return {s: component_dir / name for s, name in component_names(component_id).items()}


def metadata_bytes(c: Component) -> bytes:
    from wassette_state.store.files.metadata_files import render

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
    paths: list[Path] = field(default_factory=list)  # written files, made durable


def materialize(
    state: State,
    component_dir: Path,
    blobs: BlobStore,
    ids: Iterable[str],
) -> Report:
    """Make the files of the given components match the state (idempotent), durably.

    Only differences are written, so a Wassette server watching the directory sees no churn.
    Every file is written relative to the directory opened once (fsutil.Dir), which is checked
    to still be the component dir before each write and at the end: a dir swapped for a link
    meanwhile gets nothing, and the command says so (DirReplaced), never exit 0.
    """
    report = Report()
    with fsutil.Dir(component_dir) as d:
        wanted = sorted(set(ids))
        # Many components (an import, a repair): list the dir once, so a file that is not
        # there costs no stat, read or unlink of its own before it is written.
        listed = set(d.listdir()) if len(wanted) > 8 else None

        def absent(name: str) -> bool:
            return listed is not None and name not in listed

        for cid in wanted:
            names = component_names(cid)
            comp = state.components.get(cid)
            if comp is None:
                for name in names.values():
                    if not absent(name) and _remove(d, name):
                        report.removed.append(name)
                continue
            present = _sync_wasm(comp, d, names, blobs, report, absent)
            meta = names[".metadata.json"]
            if not (present and _metadata_current(comp, d, names)):
                _sync(d, meta, metadata_bytes(comp), report, absent(meta))
            policy_file = component_dir / names[".policy.yaml"]
            for suffix, data in (
                (".policy.yaml", comp.policy.policy_content.encode() if comp.policy else None),
                (".policy.meta.json", policy_meta_bytes(comp, policy_file)),
            ):
                name = names[suffix]
                if data is not None:
                    _sync(d, name, data, report, absent(name))
                elif not absent(name) and _remove(d, name):
                    report.removed.append(name)
        if report.written or report.removed:
            d.make_durable([p.name for p in report.paths])
        d.check()  # every file went where Wassette reads them
    return report


def component_names(component_id: str) -> dict[str, str]:
    return {s: f"{component_id}{s}" for s in (*SUFFIXES, CWASM)}


def _remove(d: fsutil.Dir, name: str) -> bool:
    d.check()
    return d.remove(name)


def _write(
    d: fsutil.Dir, name: str, data: bytes, report: Report | None, mtime: int | None = None
) -> None:
    d.check()
    d.write(name, data, mtime=mtime, durable=False)
    if report is not None:
        report.written.append(name)
        report.paths.append(d.path / name)


def _sync(d: fsutil.Dir, name: str, data: bytes, report: Report, absent: bool = False) -> None:
    if absent or d.read(name) != data:
        fsutil.fault("component-file", d.path / name)
        _write(d, name, data, report)


def _stamp_mtime(comp: Component) -> int | None:
    return comp.metadata.stamp()[1]


def _sync_wasm(
    comp: Component,
    d: fsutil.Dir,
    names: dict[str, str],
    blobs: BlobStore,
    report: Report,
    absent: Any,
) -> bool:
    """Make `<id>.wasm` hold the state's bytes; False when there are none to write."""
    name = names[".wasm"]
    mtime = _stamp_mtime(comp)
    current = None if absent(name) else d.read(name)
    if current is not None and sha256_hex(current) == comp.wasm_sha256:
        st = d.lstat(name)
        if mtime is not None and st is not None and int(st.st_mtime) != mtime:
            _write(d, name, current, None, mtime)
        return True
    data = blobs.get(comp.wasm_sha256)
    if data is None:
        report.missing_wasm.append(comp.component_id)
        logger.warning("no bytes for %s (sha256 %s)", comp.component_id, comp.wasm_sha256[:12])
        return False
    # The stale precompiled code goes first: a crash after this leaves Wassette to compile
    # the bytes afresh, never to run the old ones.
    cwasm = names[CWASM]
    if not absent(cwasm) and _remove(d, cwasm):
        report.removed.append(cwasm)
    _write(d, name, data, report, mtime)
    return True


def _metadata_current(comp: Component, d: fsutil.Dir, names: dict[str, str]) -> bool:
    """Whether the metadata file on disk already says what the state says, so it is left alone.

    Wassette rewrites `<id>.metadata.json` each time it loads a component (its own
    `created_at`, its own stamp); a file whose tools equal the state's and whose stamp
    validates against the wasm on disk is as good as ours, and rewriting it would only make
    the two tools fight over its bytes (DESIGN §7).
    """
    from wassette_state.store.files.metadata_files import (
        MAX_METADATA_BYTES,
        parse_doc,
        same_tools,
        stamp_matches,
    )

    raw = d.read(names[".metadata.json"], MAX_METADATA_BYTES)
    wasm = d.lstat(names[".wasm"])
    found = parse_doc(raw) if raw is not None and wasm is not None else None
    if found is None or wasm is None:
        return False
    if not stamp_matches(found, wasm.st_size, comp.wasm_sha256, int(wasm.st_mtime)):
        return False
    return same_tools(found, comp.metadata.doc)
