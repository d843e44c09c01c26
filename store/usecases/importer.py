"""Snapshot → plan → events: the import command.

Everything is validated before anything is written; the plan is decided on the live state
inside Store.execute, so importing the same file twice appends nothing the second time.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.state import Component, Metadata, Policy, State
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.usecases.service import Decision, Outcome, Store

MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Prepared:
    """One component of the file with its wasm located (or not) before deciding."""

    component_id: str
    sha256: str | None  # None: no bytes available anywhere → skipped
    metadata: dict[str, Any] | None
    source_uri: str
    policy: dict[str, Any] | None
    secret_keys: tuple[str, ...]
    note: str | None = None  # what happened to the wasm, for the summary


@dataclass
class PreparedFile:
    sha256: str
    version: str
    exported_at: int
    lineage: str | None
    serial: int | None
    components: list[Prepared] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    reports: list[dict[str, str]] = field(default_factory=list)
    # wasm bytes to keep in the blob store, written only once the whole file is accepted
    blobs: dict[str, bytes] = field(default_factory=dict)
    # a provisioning manifest (store.manifest_import): what it says that is not imported
    format: str = "state"
    ignored: list[dict[str, Any]] = field(default_factory=list)


def read_source(source: str) -> tuple[bytes, str]:
    """Bytes and format of the file (`-` = stdin, JSON unless named .yaml/.yml)."""
    from wassette_state.store.domain.snapshot_model import format_for

    if source == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
        return data, "json" if data.lstrip()[:1] == b"{" else "yaml"
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            raise ValidationError(f"{path} is a directory, not a state file")
        # O_NONBLOCK: opening a FIFO nobody writes to must not hang (cleared again for reading,
        # so a pipe with a writer, e.g. `<(cat state.json)`, is read to the end).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:  # say how large it really is, without reading 64 MiB first
                raise ValidationError(
                    f"state file is too large ({size} bytes; the limit is {MAX_BYTES})"
                )
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ValidationError(f"state file not found: {path}") from None
    except PermissionError:
        raise ValidationError(f"cannot read state file {path}: permission denied") from None
    except OSError as e:
        raise ValidationError(f"cannot read state file {path}: {e.strerror}") from None
    if source.lower().endswith(".json"):
        return data, "json"
    if format_for(source) == "yaml":
        return data, "yaml"
    # Any other name (state.txt, a download): the content says; JSON starts with '{'.
    return data, "json" if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "yaml"


def prepare(store: Store, source: str, *, strict: bool) -> PreparedFile:
    from wassette_state.store.domain.policy_text import parse_policy
    from wassette_state.store.domain.snapshot_parse import parse_snapshot
    from wassette_state.store.files import wasm
    from wassette_state.store.usecases.inputs import metadata_doc

    data, fmt = read_source(source)
    from wassette_state.store.domain.manifest_read import looks_like_manifest
    from wassette_state.store.usecases import manifest_import

    if looks_like_manifest(data):
        return manifest_import.prepare(store, data, strict=strict)  # type: ignore[return-value]

    def policy_check(content: str, where: str) -> None:
        parse_policy(content)

    snap = parse_snapshot(data, fmt, policy_check=policy_check)  # type: ignore[arg-type]
    _check_key_names(snap)
    doc = snap.to_doc(share=True)  # read, never changed
    out = PreparedFile(
        sha256=hashlib.sha256(data).hexdigest(),
        version=snap.version,
        exported_at=snap.exported_at,
        lineage=snap.store.lineage if snap.store else None,
        serial=snap.store.serial if snap.store else None,
        environment=dict(snap.environment),
    )
    component_dir = store.settings.component_dir
    from wassette_state.store.usecases.inputs import check_secrets_names

    file_ids = {c.component_id for c in snap.components}
    check_secrets_names(store.component_ids() | file_ids)
    for comp, cdoc in zip(snap.components, doc["components"], strict=True):
        cid = comp.component_id
        if comp.placeholders:
            reason = "placeholder values (" + ", ".join(comp.placeholders) + ")"
            if strict:  # --strict: every component of the file is imported, or nothing is
                raise ValidationError(f"component {cid!r}: {reason} (--strict)")
            out.skipped.append({"component_id": cid, "reason": reason})
            continue
        wanted = comp.wasm_sha256 or (
            comp.metadata.validation_stamp.content_hash if comp.metadata else None
        )
        local = component_dir / f"{cid}.wasm"
        present = fsutil.read_if_file(local)
        metadata = cdoc["metadata"]
        note = None
        sha: str | None = None
        replaced = adopted = False
        if (
            present is not None
            and wanted is not None
            and metadata is not None
            and materialize.sha256_hex(present) != wanted
            and (store.blobs.has(wanted) or _source_bytes(comp.source_uri, wanted) is not None)
        ):
            # The file's own version is at hand (a backup being restored): use it, and let
            # materialization replace what is in the component dir, rather than adopt that.
            present, replaced = None, True
        if present is not None:
            sha = materialize.sha256_hex(present)
            stamp = comp.metadata.validation_stamp if comp.metadata else None
            same = (
                metadata is not None
                and stamp is not None
                and (wanted == sha if wanted else stamp.file_size == len(present))
            )
            if not same:
                from wassette_state.store.files.metadata_files import tools_of, valid_beside

                # Wassette's metadata beside the bytes when its stamp vouches for them; else
                # introspection, not through the on-disk cache: a dry run or a refused import
                # writes nothing.
                beside = valid_beside(component_dir / f"{cid}.metadata.json", local, sha)
                if beside is not None:
                    tools = tools_of(beside)
                    how = "Wassette's metadata for it adopted"
                else:
                    tools = wasm.describe(present, label=local.name)
                    how = "re-introspected"
                mtime = int(local.stat().st_mtime)
                metadata = metadata_doc(cid, tools, len(present), mtime, sha, mtime)
                note = f"wasm in the component dir differs from the file: {how}"
                adopted = True
                out.reports.append({"component_id": cid, "note": note})
            out.blobs[sha] = present
        elif wanted is not None and store.blobs.has(wanted) and metadata is not None:
            sha = wanted
            note = "wasm restored from the blob store"
            out.reports.append({"component_id": cid, "note": note})
        elif (origin := _source_bytes(comp.source_uri, wanted)) is not None and metadata:
            sha = materialize.sha256_hex(origin)
            out.blobs[sha] = origin
            note = f"wasm copied from {comp.source_uri}"
            out.reports.append({"component_id": cid, "note": note})
        if replaced:
            note = f"wasm in the component dir differs from the file: replaced ({note})"
            out.reports[-1] = {"component_id": cid, "note": note}
        if sha is None or metadata is None:
            reason = "wasm not found in the component dir or the blob store"
            if strict:
                raise ValidationError(f"component {cid!r}: {reason} (--strict)")
            out.skipped.append({"component_id": cid, "reason": reason})
            continue
        if comp.metadata is not None and metadata is cdoc["metadata"] and wanted is None:
            # A Wassette file without a hash: record the one we now know.
            metadata = {
                **metadata,
                "validation_stamp": {**metadata["validation_stamp"], "content_hash": sha},
            }
        out.components.append(
            Prepared(
                component_id=cid,
                sha256=sha,
                metadata=metadata,
                # Bytes adopted from the component dir come from there, whatever the file says.
                source_uri=local.as_uri() if adopted else comp.source_uri or local.as_uri(),
                policy=cdoc["policy"],
                secret_keys=tuple(comp.secrets.env_keys) if comp.secrets else (),
                note=note,
            )
        )
    return out


_KEY_RULE = "letters, digits, '_', '.', '-'; must not start with a digit"


def _check_key_names(snap: Any) -> None:
    """Names the rest of the CLI refuses must not enter the state through an import: they could
    never be set or unset again, and they are printed inside `wassette-state secret set`
    commands for the user to run (a name like `$(...)` would run in their shell). Names are not
    shown."""
    from wassette_state.store.domain.state import ENV_KEY_RE

    for key in snap.environment:
        if not ENV_KEY_RE.fullmatch(key):
            raise ValidationError(f"environment: invalid variable name ({_KEY_RULE})")
    for comp in snap.components:
        for key in comp.secrets.env_keys if comp.secrets else ():
            if not ENV_KEY_RE.fullmatch(key):
                raise ValidationError(
                    f"component {comp.component_id!r}: secrets.env_keys: invalid key name "
                    f"({_KEY_RULE})"
                )


def _source_bytes(source_uri: str | None, wanted: str | None) -> bytes | None:
    """The component's original file, if it is a local WebAssembly component with the
    expected hash.

    A state file names this file, so it may name anything: `/etc/shadow`, a device, a FIFO, a
    3 GiB sparse file. Only a regular file (not through a final symlink, opened without
    blocking) of at most `MAX_WASM_BYTES`, starting with a component header, is hashed, as a
    stream; its bytes are kept only when the hash matches (and checked again once read, as
    the file may change in between).
    """
    if not source_uri or wanted is None:
        return None
    from urllib.parse import unquote, urlparse

    from wassette_state.store.files.wasm_binary import is_component
    from wassette_state.store.usecases.inputs import MAX_WASM_BYTES

    parsed = urlparse(source_uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    try:
        fd = os.open(
            unquote(parsed.path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        )
    except (OSError, ValueError):  # absent, unreadable, a symlink, a NUL in the path
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_WASM_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            if not is_component(f.read(8)):
                return None
            f.seek(0)
            digest = hashlib.sha256()
            size = 0
            while chunk := f.read(1 << 20):
                size += len(chunk)
                if size > MAX_WASM_BYTES:
                    return None
                digest.update(chunk)
            if digest.hexdigest() != wanted:
                return None
            f.seek(0)
            data = f.read(MAX_WASM_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_WASM_BYTES or materialize.sha256_hex(data) != wanted:
        return None
    return data


def plan_events(
    state: State, prepared: PreparedFile, prune: bool
) -> tuple[list[ev.Event], list[str]]:
    """The events that make the state equal to the file (merge, or exact with prune)."""
    from wassette_state.store.domain.diff import reconcile

    target: dict[str, Component] = {}
    for p in prepared.components:
        assert p.sha256 is not None and p.metadata is not None
        cur = state.components.get(p.component_id)
        # Re-introspected bytes we already hold: keep the metadata we have (idempotent import).
        same_bytes = cur is not None and cur.wasm_sha256 == p.sha256 and p.note is not None
        policy = None
        if p.policy is not None:
            policy = Policy(
                p.policy["policy_content"], p.policy["source_uri"], p.policy["attached_at"]
            )
        target[p.component_id] = Component(
            component_id=p.component_id,
            source_uri=p.source_uri,
            wasm_sha256=p.sha256,
            metadata=cur.metadata if same_bytes and cur is not None else Metadata.of(p.metadata),
            policy=policy,
            secret_keys=tuple(sorted(p.secret_keys)),
        )
    for skipped in prepared.skipped:  # left exactly as they are, even with --prune
        cid = skipped["component_id"]
        if cid in state.components:
            target[cid] = state.components[cid]
    return reconcile(
        state,
        State(components=target, environment=prepared.environment),
        prune=prune,
        components=set(target),
    )


def run_import(
    store: Store,
    source: str,
    *,
    prune: bool = False,
    dry_run: bool = False,
    strict: bool = False,
    keep_secret_values: bool = False,
    confirm: Any = None,
) -> Outcome:
    """Values of secret keys the import removes leave the secrets files (with --prune, whole
    files of components that leave), unless `keep_secret_values`. `confirm(plan)` is asked
    before anything is written when the import would change something."""
    from wassette_state.store.usecases import staging

    prepared = prepare(store, source, strict=strict)
    if confirm is not None and not dry_run:
        planned, plan = plan_events(store.state(), prepared, prune)
        if planned and not confirm(plan):
            raise ValidationError("import cancelled; nothing was changed")
    if not dry_run:
        for digest, data in prepared.blobs.items():
            store.blobs.put(data, digest)
    details = {
        "file_sha256": prepared.sha256,
        "version": prepared.version,
        "exported_at": prepared.exported_at,
        "source_lineage": prepared.lineage,
        "source_serial": prepared.serial,
        "prune": prune,
        **({"format": prepared.format} if prepared.format != "state" else {}),
    }

    def decide(state: State) -> Decision:
        events, plan = plan_events(state, prepared, prune)
        return Decision(
            [] if dry_run else events,
            details={**details, "plan": plan},
            summary={
                "plan": plan,
                "skipped": prepared.skipped,
                "reports": prepared.reports,
                "ignored": prepared.ignored,
                "dry_run": dry_run,
            },
        )

    if dry_run:
        from wassette_state.store.domain.fold import project

        state = store.state()
        decision = decide(state)
        planned, _ = plan_events(state, prepared, prune)
        # The state the import would make, so the summary names the secret values it would need.
        return Outcome(None, [], project(planned, state), decision.summary)
    return store.execute(
        f"state import {source}",
        decide,
        kind="import",
        stage=staging.SecretsChange(store, staging.leaving_values(store, keep_secret_values)),
    )
