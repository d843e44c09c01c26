"""Drift: changes made to the component and secrets dirs outside the store (e.g. by a Wassette
server granting a permission), found by comparing the files with the current state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import events as ev
from store import files, fsutil
from store import secrets as secret_files
from store.errors import ValidationError
from store.state import ID_RE, Component, Metadata, State

SYNC_ACTOR = "filesystem"


@dataclass(frozen=True)
class Drift:
    component_id: str
    what: str
    adoptable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"component_id": self.component_id, "what": self.what, "adoptable": self.adoptable}


@dataclass
class Found:
    drifts: list[Drift]
    events: list[ev.Event]
    blobs: dict[str, bytes]


def _stamp(c: Component) -> tuple[int | None, int | None]:
    return c.metadata.stamp()


def detect(
    state: State,
    component_dir: Path,
    secrets_dir: Path,
    introspect: Any,
    last_secret_change: Any = None,
) -> Found:
    """Compare files with the state; `introspect(data, sha, label)` derives tools of new bytes.

    `last_secret_change(id)` gives the time (µs) of the component's last secret event: a
    declared key missing from a secrets file written before that is waiting for a value (after
    an import or a rollback), not removed by hand.
    """
    found = Found([], [], {})
    for cid in sorted(state.components):
        seen = len(found.events)
        _component(state.components[cid], component_dir, introspect, found)
        if any(isinstance(e, ev.ComponentDetached) for e in found.events[seen:]):
            continue  # its wasm is gone: the component leaves with its keys (no events after)
        _secret_keys(state.components[cid], secrets_dir, found, last_secret_change)
    if component_dir.is_dir():
        for entry in sorted(os.scandir(component_dir), key=lambda e: e.name):
            if not entry.name.endswith(".wasm") or entry.is_symlink() or not entry.is_file():
                continue
            cid = entry.name[: -len(".wasm")]
            if cid in state.components or not ID_RE.fullmatch(cid):
                continue
            _new_component(cid, Path(entry.path), component_dir, introspect, found)
    return found


def _adopt(cid: str, data: bytes, sha: str, wasm: Path, tools: Any, found: Found) -> None:
    """Record bytes found in the component dir as the component's new wasm."""
    from store.commands import metadata_doc

    mtime = int(wasm.stat().st_mtime)
    found.blobs[sha] = data
    found.events.append(
        ev.ComponentAttached(
            component_id=cid,
            source_uri=wasm.as_uri(),
            wasm_sha256=sha,
            metadata=metadata_doc(cid, tools, len(data), mtime, sha, mtime),
        )
    )


def _component(c: Component, component_dir: Path, introspect: Any, found: Found) -> None:
    cid = c.component_id
    paths = files.component_files(component_dir, cid)
    wasm = paths[".wasm"]
    if wasm.is_symlink() or not wasm.is_file():
        found.drifts.append(Drift(cid, "wasm file deleted: the component is gone"))
        found.events.append(ev.ComponentDetached(component_id=cid))
        return
    st = wasm.stat()
    size, mtime = _stamp(c)
    if (st.st_size, int(st.st_mtime)) != (size, mtime):
        data = wasm.read_bytes()
        sha = files.sha256_hex(data)
        if sha != c.wasm_sha256:
            try:
                tools = introspect(data, sha, wasm.name)
            except ValidationError as e:
                found.drifts.append(Drift(cid, f"wasm replaced by an invalid file ({e})", False))
            else:
                found.drifts.append(Drift(cid, f"wasm replaced (sha256 {sha[:12]})"))
                _adopt(cid, data, sha, wasm, tools, found)
    _policy(c, paths[".policy.yaml"], found)


def _policy(c: Component, path: Path, found: Found) -> None:
    from store.policy import parse_policy

    cid = c.component_id
    raw = fsutil.read_if_file(path)
    current = c.policy.policy_content if c.policy else None
    if raw is None:
        if current is not None:
            found.drifts.append(Drift(cid, "policy file deleted"))
            found.events.append(ev.PolicyDetached(component_id=cid))
        return
    try:
        text = raw.decode("utf-8")
        parse_policy(text)
    except (UnicodeDecodeError, ValidationError) as e:
        if current is None or raw != current.encode():
            found.drifts.append(Drift(cid, f"policy file edited but invalid: {e}", False))
        return
    if current == text:
        return
    if current is None:
        found.drifts.append(Drift(cid, "policy file added"))
        found.events.append(
            ev.PolicyAttached(
                component_id=cid,
                source_uri=path.as_uri(),
                policy_content=text,
                attached_at=int(path.stat().st_mtime),
            )
        )
    else:
        found.drifts.append(Drift(cid, "policy file edited"))
        found.events.append(
            ev.PolicyChanged(
                component_id=cid,
                policy_content=text,
                change={"op": "sync", "source": "filesystem"},
            )
        )


def _secret_keys(
    c: Component, secrets_dir: Path, found: Found, last_secret_change: Any = None
) -> None:
    cid = c.component_id
    try:
        on_disk = set(secret_files.read_values(secrets_dir, cid))
    except ValidationError as e:
        found.drifts.append(Drift(cid, f"secrets file unreadable: {e}", False))
        return
    declared = set(c.secret_keys)
    added = sorted(k for k in on_disk - declared if _valid_key(k))
    removed = sorted(declared - on_disk)
    if removed and not _edited_since_declared(secrets_dir, cid, last_secret_change):
        removed = []  # waiting for values (`secret list` says so), not a change by hand
    if added:
        found.drifts.append(Drift(cid, f"secret keys added by hand: {', '.join(added)}"))
        found.events.append(ev.SecretKeysSet(component_id=cid, keys=added))
    if removed:
        found.drifts.append(Drift(cid, f"secret keys removed by hand: {', '.join(removed)}"))
        found.events.append(ev.SecretKeysDeleted(component_id=cid, keys=removed))


def _edited_since_declared(secrets_dir: Path, cid: str, last_secret_change: Any) -> bool:
    path = secret_files.secrets_file(secrets_dir, cid)
    try:
        mtime_us = path.stat().st_mtime_ns // 1000
    except FileNotFoundError:
        return False
    last = last_secret_change(cid) if last_secret_change is not None else None
    return last is None or mtime_us > last


def _valid_key(key: str) -> bool:
    from store.state import ENV_KEY_RE

    return bool(ENV_KEY_RE.fullmatch(key))


def _new_component(
    cid: str, wasm: Path, component_dir: Path, introspect: Any, found: Found
) -> None:
    data = wasm.read_bytes()
    sha = files.sha256_hex(data)
    try:
        tools = introspect(data, sha, wasm.name)
    except ValidationError as e:
        found.drifts.append(Drift(cid, f"unknown file {wasm.name} is not a component ({e})", False))
        return
    found.drifts.append(Drift(cid, "component added by hand"))
    _adopt(cid, data, sha, wasm, tools, found)
    comp = Component(cid, wasm.as_uri(), sha, Metadata({}))
    _policy(comp, component_dir / f"{cid}.policy.yaml", found)


def find(store: Any) -> Found:
    """Drift of the store's current state (after repairing a crash, which is not drift)."""
    from store.commands import introspect_cached

    def introspect(data: bytes, sha: str, label: str) -> Any:
        return introspect_cached(store, data, sha, label)

    def last_secret_change(cid: str) -> int | None:
        from store import log

        with store.reading() as conn:
            rows = log.read(
                conn, log.Query(stream=cid, type_prefix="secret.", limit=1, reverse=True)
            )
        return rows[0].recorded_at if rows else None

    return detect(
        store.state(),
        store.settings.component_dir,
        store.settings.secrets_dir,
        introspect,
        last_secret_change,
    )


def sync(store: Any) -> tuple[Any, list[Drift]]:
    """Record adoptable drift as one `sync` transaction by the actor `filesystem`."""
    from store.service import Decision

    store.repair_files()
    found = find(store)
    for sha, data in found.blobs.items():
        store.blobs.put(data, sha)
    base_versions = store.state()

    def decide(state: State) -> Decision:
        if state != base_versions:
            from store.errors import ConflictError

            raise ConflictError("the state changed while scanning for drift; run sync again")
        return Decision(
            list(found.events),
            details={"drift": [d.as_dict() for d in found.drifts]},
            summary={"drift": [d.as_dict() for d in found.drifts]},
        )

    outcome = store.execute("state sync", decide, kind="sync", actor=SYNC_ACTOR)
    return outcome, found.drifts
