"""Drift: changes made to the component and secrets dirs outside the store (e.g. by a Wassette
server granting a permission), recorded as `sync` transactions: by `state sync`, and first by
any command that rewrites those files (DESIGN §3.3). The scan itself is `drift_scan`."""

from __future__ import annotations

import os
from typing import Any

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.state import State
from wassette_state.store.files import fsutil
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases.drift_scan import Drift, Found, detect

SYNC_ACTOR = "filesystem"


def find(store: Any, ids: set[str] | None = None) -> Found:
    """Drift of the store's current state (after repairing a crash, which is not drift); with
    `ids`, of those components' files only."""
    return _found_for(store, store.state(scope=ids), known_only=ids is not None)


def _found_for(
    store: Any, state: State, known_only: bool = False, unreadable_ok: bool = False
) -> Found:
    """Drift between `state` and the files."""
    from wassette_state.store.usecases.inputs import introspect_cached

    def introspect(data: bytes, sha: str, label: str) -> Any:
        return introspect_cached(store, data, sha, label)

    def last_secret_change(cid: str) -> tuple[int, str] | None:
        from wassette_state.store.persistence import log

        with store.reading() as conn:
            rows = log.read(
                conn, log.Query(stream=cid, type_prefix="secret.", limit=1, reverse=True)
            )
        return (rows[0].recorded_at, rows[0].kind) if rows else None

    return detect(
        state,
        store.settings.component_dir,
        store.settings.secrets_dir,
        introspect,
        last_secret_change,
        known_only=known_only,
        unreadable_ok=unreadable_ok,
    )


def record_first(store: Any, ids: set[str], command: str, keep_secret_values: bool = False) -> None:
    """Drift on the files a command is about to rewrite, recorded as a `sync` transaction
    before the command's own, so nothing Wassette (or anyone) did there is silently
    overwritten (DESIGN §3.3). A component it records as gone takes its secret values with
    it, as `sync` does (unless the command was asked to keep them)."""
    from wassette_state.store.domain.errors import ConflictError
    from wassette_state.store.usecases import staging

    # As `sync`: the secrets lock, then the files lock, the files brought up to the log, and
    # the scan made against a state whose files are written: another writer between its commit
    # and its file writes (it waits for these locks) is never taken for drift.
    scope = set(ids)
    with staging.locked(store), store.files_locked():
        for _attempt in range(SYNC_ATTEMPTS):
            seen, head = store.state_and_head(scope)
            if store.files_current(head):  # the usual case: one read, nothing to repair
                break
            store.repair_files()
            seen, head = store.state_and_head(scope)
            marker = store.read_marker() or {}
            if head and marker.get("seq") != head:  # committed since the repair: again
                continue
            break
        else:
            raise ConflictError("the store kept changing while scanning for drift; run it again")
        found = _found_for(store, seen, known_only=True)
        _record_first(store, scope, command, keep_secret_values, seen, found)


def _record_first(
    store: Any, scope: set[str], command: str, keep_secret_values: bool, seen: State, found: Found
) -> None:
    from wassette_state.store.usecases.service import Decision

    if not found.events:
        return
    for sha, data in found.blobs.items():
        store.blobs.put(data, sha)
    for path in found.stale_cwasm:
        fsutil.remove(path)

    def decide(state: State) -> Decision:
        if state != seen:
            from wassette_state.store.domain.errors import ConflictError

            raise ConflictError("the state changed while scanning for drift; run it again")
        drifts = [d.as_dict() for d in found.drifts if d.adoptable]
        return Decision(list(found.events), details={"drift": drifts, "before": command})

    store.execute(
        f"state sync (before: {command})",
        decide,
        kind="sync",
        actor=SYNC_ACTOR,
        scope=scope,
        stage=_leaving(store, found, keep_secret_values),
    )


def _leaving(store: Any, found: Found, keep: bool) -> Any:
    """A component Wassette unloaded (its wasm gone) leaves the state with its secret values:
    the file Wassette keeps on unload goes too, as on our own detach, so a component loaded
    later under that id inherits nothing (`keep`: it stays, as Wassette leaves it)."""
    from wassette_state.store.usecases import staging

    gone = [e.component_id for e in found.events if isinstance(e, ev.ComponentDetached)]
    if keep or not gone:
        return None
    for cid in gone:  # said (and recorded with the drift), as a file removed deserves
        if os.path.lexists(secret_files.secrets_file(store.settings.secrets_dir, cid)):
            what = "its secrets file goes with it (--keep-secret-values keeps it)"
            found.drifts.append(Drift(cid, what))
    return staging.SecretsChange(store, staging.leaving_values(store, keep))


SYNC_ATTEMPTS = 5


def sync(
    store: Any,
    keep_secret_values: bool = False,
    unreadable_ok: bool = False,
    actor: str = SYNC_ACTOR,
    command: str = "state sync",
) -> tuple[Any, list[Drift]]:
    """Record adoptable drift as one `sync` transaction by the actor `filesystem` (or who
    made it, when known: `serve` names the MCP client whose tool call Wassette logged); the
    secret values of components it records as gone leave with them, unless
    `keep_secret_values`.

    The files lock is held from the repair through the scan to the commit, and the scan reads
    a state whose files are written: a command that committed but has not written its files
    yet (it waits for the lock) is never mistaken for files deleted by hand.

    The secrets lock is taken first, in the order `secret delete` takes them (it holds the
    secrets lock while its change writes the files): the repair may need it to settle staged
    secrets files, and taking it under the files lock deadlocked against that command.
    """
    from wassette_state.store.domain.errors import ConflictError
    from wassette_state.store.usecases import staging
    from wassette_state.store.usecases.service import Decision

    with staging.locked(store), store.files_locked():
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            store.repair_files()
            fsutil.fault("sync-scan")
            base, head = store.state_and_head()
            marker = store.read_marker() or {}
            if head and marker.get("seq") != head:  # committed since the repair: again
                continue
            found = _found_for(store, base, unreadable_ok=unreadable_ok)
            for sha, data in found.blobs.items():
                store.blobs.put(data, sha)
            for path in found.stale_cwasm:  # before anything is recorded: removing one is safe
                fsutil.remove(path)

            def decide(state: State, base: State = base, found: Found = found) -> Decision:
                if state != base:
                    raise ConflictError("the state changed while scanning for drift")
                return Decision(
                    list(found.events),
                    details={"drift": [d.as_dict() for d in found.drifts]},
                    summary={"drift": [d.as_dict() for d in found.drifts]},
                )

            try:
                if keep_secret_values and command == "state sync":
                    command += " --keep-secret-values"
                outcome = store.execute(
                    command,
                    decide,
                    kind="sync",
                    actor=actor,
                    stage=_leaving(store, found, keep_secret_values),
                )
            except ConflictError:
                if attempt == SYNC_ATTEMPTS:
                    raise
                continue
            if found.relink:
                store.materialize(found.relink)
            return outcome, found.drifts
    raise ConflictError("the store kept changing while scanning for drift; run sync again")
