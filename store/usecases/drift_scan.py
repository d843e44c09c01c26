"""The drift scan: the files of the component and secrets dirs compared with a state, and the
events that would adopt what differs. It reads the dirs and never writes them."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.state import ID_RULE, Component, Metadata, State, valid_id
from wassette_state.store.files import fsutil, materialize, secret_keys
from wassette_state.store.files import secrets as secret_files


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
    # `<id>.cwasm` files compiled from other bytes than the ones adopted (see `_tools`)
    stale_cwasm: list[Path] = field(default_factory=list)
    # components whose wasm is a link or not a file: never adopted, rewritten from the store
    relink: set[str] = field(default_factory=set)

    def mark(self) -> tuple[int, int, int]:
        return len(self.events), len(self.drifts), len(self.stale_cwasm)

    def unreadable(self, cid: str, mark: tuple[int, int, int], e: OSError) -> None:
        """Forget what was found for `cid` since `mark`: one of its files could not be read,
        so nothing of it is adopted (and no `.cwasm` of it removed) until it can be."""
        del self.events[mark[0] :], self.drifts[mark[1] :], self.stale_cwasm[mark[2] :]
        self.relink.discard(cid)
        name = os.path.basename(e.filename) if isinstance(e.filename, str) else "a file"
        self.drifts.append(Drift(cid, f"cannot read {name}: {e.strerror or e}", False))


def _stamp(c: Component) -> tuple[int | None, int | None]:
    return c.metadata.stamp()


def detect(
    state: State,
    component_dir: Path,
    secrets_dir: Path,
    introspect: Any,
    last_secret_change: Any = None,
    known_only: bool = False,
    unreadable_ok: bool = False,
) -> Found:
    """Compare files with the state; `introspect(data, sha, label)` derives tools of new bytes.

    `last_secret_change(id)` gives the time (µs) of the component's last secret event: a
    declared key missing from a secrets file written before that is waiting for a value (after
    an import or a rollback), not removed by hand.

    `unreadable_ok`: a component with a file that cannot be read (EACCES, EIO...) is reported
    as drift not adopted and left as it is, instead of failing the whole scan (`watch` must
    keep recording the others).
    """
    found = Found([], [], {})
    # One listing per directory instead of two or three stat calls per file and a Path per
    # name: at 10k components those, and YAML parsing, were nearly all of the scan's time.
    components = _Dir(component_dir)
    secrets = _Dir(secrets_dir)
    reader = secret_keys.KeyReader()
    for cid in sorted(state.components):
        c = state.components[cid]
        mark = found.mark()
        try:
            _component(c, components, introspect, found)
            if len(found.events) > mark[0] and any(
                isinstance(e, ev.ComponentDetached) for e in found.events[mark[0] :]
            ):
                continue  # its wasm is gone: the component leaves with its keys (no events after)
            _secret_keys(c, secrets_dir, found, last_secret_change, secrets, reader)
        except OSError as e:
            if not unreadable_ok:
                raise
            found.unreadable(cid, mark, e)
    if component_dir.is_dir() and not known_only:
        listed = components.entries
        entries = listed.values() if listed is not None else os.scandir(component_dir)
        # Wasm files of no component, in name order (filtered first: the dir holds 4 files
        # per component, nearly all of them known).
        unknown = [
            e for e in entries if e.name.endswith(".wasm") and e.name[:-5] not in state.components
        ]
        for entry in sorted(unknown, key=lambda e: e.name):
            if entry.is_symlink() or not entry.is_file():
                continue
            cid = entry.name[: -len(".wasm")]
            if not valid_id(cid):
                # Never skipped without a word: the user learns which file is not adopted.
                found.drifts.append(Drift(cid, f"component id {cid!r} refused ({ID_RULE})", False))
                continue
            mark = found.mark()
            try:
                if not _new_component(cid, Path(entry.path), components, introspect, found):
                    continue
                _secret_keys(
                    Component(cid, "", "", Metadata({})), secrets_dir, found, None, secrets, reader
                )
            except OSError as e:
                if not unreadable_ok:
                    raise
                found.unreadable(cid, mark, e)
    return found


class _Dir:
    """A directory listed once (os.scandir), so that checking a file costs no stat of its own.

    A name the listing holds is answered from it; a name it lacks, or every name when the
    directory could not be listed, gets the per-file checks (`fsutil.read_if_file`, `is_file`)
    the scan has always made: on a case-insensitive file system `Foo.wasm` can be `foo.wasm`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._prefix = os.path.join(path, "")
        self.entries: dict[str, os.DirEntry[str]] | None
        try:
            with os.scandir(path) as it:
                self.entries = {e.name: e for e in it}
        except OSError:
            self.entries = None

    def _entry(self, name: str) -> os.DirEntry[str] | None:
        return self.entries.get(name) if self.entries is not None else None

    def regular_stat(self, name: str) -> os.stat_result | None:
        """The stat of a regular file (a symlink is not one), None when there is none."""
        entry = self._entry(name)
        if entry is None:
            path = self.path / name
            if path.is_symlink() or not path.is_file():
                return None
            return path.stat()
        if not entry.is_file(follow_symlinks=False):  # a symlink, a directory...
            return None
        try:
            return entry.stat()
        except FileNotFoundError:  # removed since the listing: what checking now would say
            return None

    def read(self, name: str) -> bytes | None:
        """`fsutil.read_if_file`: the bytes of a regular file, None when absent or a symlink."""
        entry = self._entry(name)
        if entry is None:
            return fsutil.read_if_file(self.path / name)
        if not entry.is_file(follow_symlinks=False):
            return None
        try:
            fd = os.open(self._prefix + name, _READ_FLAGS)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):  # gone, or a symlink now: absent
                return None
            raise
        try:
            chunks = [os.read(fd, _CHUNK)]
            while chunks[-1]:  # to the end, as read_bytes reads
                chunks.append(os.read(fd, _CHUNK))
            return b"".join(chunks)
        finally:
            os.close(fd)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


_CHUNK = 1 << 16


def _tools(cid: str, data: bytes, sha: str, wasm: Path, introspect: Any, stale: list[Path]) -> Any:
    """The tools of bytes found in the component dir: from Wassette's metadata file beside
    them when its stamp vouches for them (no introspection), else introspected."""
    from wassette_state.store.files.metadata_files import tools_of, valid_beside

    doc = valid_beside(wasm.with_name(f"{cid}.metadata.json"), wasm, sha)
    if doc is not None:
        return tools_of(doc)
    tools = introspect(data, sha, wasm.name)
    # No metadata vouches for these bytes, so Wassette never loaded them: a precompiled
    # `<id>.cwasm` beside them is of other bytes, and Wassette would run it without a check.
    found_cwasm = wasm.with_name(f"{cid}.cwasm")
    if os.path.lexists(found_cwasm):
        stale.append(found_cwasm)
    return tools


def _adopt(cid: str, data: bytes, sha: str, wasm: Path, tools: Any, found: Found) -> None:
    """Record bytes found in the component dir as the component's new wasm."""
    from wassette_state.store.usecases.inputs import metadata_doc

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


def _component(c: Component, components: _Dir, introspect: Any, found: Found) -> None:
    cid = c.component_id
    st = components.regular_stat(f"{cid}.wasm")  # the names of materialize.component_files
    if st is None and os.path.lexists(components.path / f"{cid}.wasm"):
        # A link (or a directory) where the wasm was: not followed, not taken for a deletion
        # either: the log says the component exists, so its bytes are written back.
        found.drifts.append(Drift(cid, "wasm replaced by a link or not a file", False))
        found.relink.add(cid)
        _policy(c, components, found)
        return
    if st is None:
        found.drifts.append(Drift(cid, "wasm file deleted: the component is gone"))
        found.events.append(ev.ComponentDetached(component_id=cid))
        return
    size, mtime = _stamp(c)
    if (st.st_size, int(st.st_mtime)) != (size, mtime):
        wasm = components.path / f"{cid}.wasm"
        data = wasm.read_bytes()
        sha = materialize.sha256_hex(data)
        if sha != c.wasm_sha256:
            try:
                tools = _tools(cid, data, sha, wasm, introspect, found.stale_cwasm)
            except ValidationError as e:
                found.drifts.append(Drift(cid, f"wasm replaced by an invalid file ({e})", False))
            else:
                found.drifts.append(Drift(cid, f"wasm replaced (sha256 {sha[:12]})"))
                _adopt(cid, data, sha, wasm, tools, found)
    _policy(c, components, found)


def _policy(c: Component, components: _Dir, found: Found) -> None:
    cid = c.component_id
    name = f"{cid}.policy.yaml"
    raw = components.read(name)
    current = c.policy.policy_content if c.policy else None
    if raw is None and os.path.lexists(components.path / name):
        if current is not None:  # a link is not followed, nor taken for a deletion
            found.drifts.append(Drift(cid, "policy replaced by a link or not a file", False))
            found.relink.add(cid)
        return
    if raw is None:
        if current is not None:
            found.drifts.append(Drift(cid, "policy file deleted"))
            found.events.append(ev.PolicyDetached(component_id=cid))
        return
    if current is not None and _decodes_to(raw, current):
        # The file holds the state's policy byte for byte (what materialization writes). The
        # parse below could only end in "equal" or in "invalid, but unchanged": no drift
        # either way, so it is skipped; its meta file may still have been rewritten.
        _policy_meta(c, components, found, current)
        return
    from wassette_state.store.domain.policy_text import parse_policy

    try:
        text = raw.decode("utf-8")
        parse_policy(text)
    except (UnicodeDecodeError, ValidationError) as e:
        if current is None or raw != current.encode():
            found.drifts.append(Drift(cid, f"policy file edited but invalid: {e}", False))
        return
    if current == text:
        _policy_meta(c, components, found, current)
        return
    path = components.path / name
    if current is None:
        meta = _read_policy_meta(components, cid)
        found.drifts.append(Drift(cid, "policy file added"))
        found.events.append(
            ev.PolicyAttached(
                component_id=cid,
                source_uri=meta[0] if meta else path.as_uri(),
                policy_content=text,
                attached_at=meta[1] if meta else int(path.stat().st_mtime),
            )
        )
    else:
        from wassette_state.store.domain.policy_diff import rule_changes

        found.drifts.append(Drift(cid, "policy file edited"))
        found.events.append(
            ev.PolicyChanged(
                component_id=cid,
                policy_content=text,
                change={"op": "sync", "source": "filesystem", **rule_changes(current, text)},
            )
        )


def _read_policy_meta(components: _Dir, cid: str) -> tuple[str, int] | None:
    """(source_uri, attached_at) of `<id>.policy.meta.json`, None when absent or not that."""
    import json

    raw = components.read(f"{cid}.policy.meta.json")
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    uri, at = doc.get("source_uri"), doc.get("attached_at")
    if not isinstance(uri, str) or not uri or isinstance(at, bool) or not isinstance(at, int):
        return None
    return uri, at


def _policy_meta(c: Component, components: _Dir, found: Found, content: str) -> None:
    """A meta file rewritten by someone else (the policy itself unchanged) is adopted, not
    overwritten by the next materialization; a missing one is nothing to record (Wassette's
    grant creates a policy without one)."""
    assert c.policy is not None
    meta = _read_policy_meta(components, c.component_id)
    if meta is None or meta == (c.policy.source_uri, c.policy.attached_at):
        return
    found.drifts.append(Drift(c.component_id, "policy meta file rewritten"))
    found.events.append(
        ev.PolicyAttached(
            component_id=c.component_id,
            source_uri=meta[0],
            policy_content=content,
            attached_at=meta[1],
        )
    )


def _decodes_to(raw: bytes, text: str) -> bool:
    """raw == text.encode(), without encoding (a str from the log may not be encodable)."""
    try:
        return raw.decode("utf-8") == text
    except UnicodeDecodeError:
        return False


def _secret_keys(
    c: Component,
    secrets_dir: Path,
    found: Found,
    last_secret_change: Any,
    secrets: _Dir,
    reader: secret_keys.KeyReader,
) -> None:
    cid = c.component_id
    try:
        on_disk = _secret_key_set(secrets_dir, cid, secrets, reader)
    except ValidationError as e:
        found.drifts.append(Drift(cid, f"secrets file unreadable: {e}", False))
        return
    declared = set(c.secret_keys)
    if on_disk == declared:
        return  # nothing added, nothing removed
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


def _secret_key_set(
    secrets_dir: Path, cid: str, secrets: _Dir, reader: secret_keys.KeyReader
) -> set[str]:
    """The keys `secrets.read_values` finds in the component's secrets file.

    A file in the shape `secrets.write_values` writes is read by `reader`, without a YAML
    parser; anything else (edited by hand, unusual values, absent) goes to read_values.
    """
    raw = secrets.read(secret_files.file_name(cid))  # no Path per component
    keys = reader.keys(raw) if raw else None
    if keys is not None:
        return keys
    return set(secret_files.read_values(secrets_dir, cid))


def _edited_since_declared(secrets_dir: Path, cid: str, last_secret_change: Any) -> bool:
    """Whether declared keys missing from the file were removed, not waiting for values.

    `last_secret_change(id)` gives (recorded_at µs, transaction kind) of the component's last
    secret event, or just the time.
    """
    path = secret_files.secrets_file(secrets_dir, cid)
    last = last_secret_change(cid) if last_secret_change is not None else None
    at, kind = last if isinstance(last, tuple) else (last, None)
    try:
        mtime_us = path.stat().st_mtime_ns // 1000
    except FileNotFoundError:
        # Gone. If the last secret change left values on disk (`secret set`, or a sync that
        # found them), someone deleted the file: Wassette does when its last key goes.
        return kind in ("change", "sync")
    return at is None or mtime_us > at


def _valid_key(key: str) -> bool:
    from wassette_state.store.domain.state import ENV_KEY_RE

    return bool(ENV_KEY_RE.fullmatch(key))


def _new_component(cid: str, wasm: Path, components: _Dir, introspect: Any, found: Found) -> bool:
    data = wasm.read_bytes()
    sha = materialize.sha256_hex(data)
    try:
        tools = _tools(cid, data, sha, wasm, introspect, found.stale_cwasm)
    except ValidationError as e:
        found.drifts.append(Drift(cid, f"unknown file {wasm.name} is not a component ({e})", False))
        return False
    found.drifts.append(Drift(cid, "component added by hand"))
    _adopt(cid, data, sha, wasm, tools, found)
    comp = Component(cid, wasm.as_uri(), sha, Metadata({}))
    _policy(comp, components, found)
    return True
