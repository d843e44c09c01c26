"""Copy a whole store, history and all, into an empty database of either backend.

A store that outgrows SQLite (or goes back to it) keeps its audit trail: every transaction and
event is copied verbatim (seq, tx id, time, actor, command, reason, details, data text, hash),
with the store's identity (lineage, creation time, the seq chain v2 starts at, the head anchor),
its tags and its content bodies; the wasm blobs follow into the destination's data dir. The
copy's read models are rebuilt from its log by the same fold as `rebuild`, and it is verified
before its one transaction commits: all or nothing, whatever kills the process.

The source is read in one snapshot and never written; a source that fails `verify` is not
copied (a broken chain would only be carried over). Secret values are not in a store, so there
are none to move: the secrets dir (and the component dir) stay where they are.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select, update
from sqlalchemy.engine import make_url

from wassette_state.store.domain.errors import IntegrityError, NoStoreError, ValidationError
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.files.config import Settings, data_dir_of
from wassette_state.store.persistence import backend, db, log, migrate, readmodel
from wassette_state.store.persistence.schema import (
    contents,
    events,
    store_identity,
    tags,
    transactions,
)
from wassette_state.store.usecases.verify import verify

# Rows per round trip: bounded memory (an attach's event can hold 50 KB of tool schemas).
BATCH = 500
IDENTITY = ("lineage", "created_at", "head_seq", "head_hash", "chain_v2_from")
# The log and what is not derived from it, in the order the foreign keys need.
COPIED: tuple[tuple[Table, str], ...] = (
    (transactions, "id"),
    (events, "seq"),
    (tags, "name"),
    (contents, "hash"),
)

# (phase, done, total): what a progress line shows; called per batch while copying.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Copied:
    source: str
    destination: str
    seq: int  # the source's head when its snapshot was taken: the copy ends there
    transactions: int
    events: int
    tags: int
    contents: int
    blobs: int  # wasm blobs written into the destination's data dir


def shown(url: str) -> str:
    """A URL for messages: the file of a SQLite store, never a password."""
    path = db.sqlite_path(url)
    if path is not None:
        return str(path)
    return make_url(url).render_as_string(hide_password=True)


def same_database(a: str, b: str) -> bool:
    """Both URLs name one database (a file by any path to it; a server's database by name)."""
    pa, pb = db.sqlite_path(a), db.sqlite_path(b)
    if pa is not None or pb is not None:
        if pa is None or pb is None:
            return False
        pa, pb = pa.resolve(), pb.resolve()
        return pa == pb or (pa.exists() and pb.exists() and os.path.samefile(pa, pb))
    ua, ub = make_url(a), make_url(b)
    return (ua.host or "localhost", ua.port or 5432, ua.database) == (
        ub.host or "localhost",
        ub.port or 5432,
        ub.database,
    )


def copy_store(source: Settings, dest_url: str, progress: Progress | None = None) -> Copied:
    """Copy the store of `source` into the empty store at `dest_url` (created if absent)."""
    report = progress or (lambda _phase, _done, _total: None)
    backend.dialect_of(dest_url)  # an unsupported scheme is refused before anything opens
    if same_database(source.db_url, dest_url):
        raise ValidationError(
            f"the destination {shown(dest_url)} is the source store itself; name another "
            "database or file"
        )
    dest = dataclasses.replace(source, db_url=dest_url, data_dir=data_dir_of(dest_url))
    src_engine = migrate.open_engine(source.db_url, writing=False)
    try:
        with db.read_tx(src_engine) as src:
            totals = _totals(src)
            report(f"verifying the source ({_plural(totals['events'], 'event')})", 0, 0)
            _check_source(src)
            _refuse_history(dest_url)  # before anything is created there
            return _copy(src, source, dest, totals, report)
    finally:
        src_engine.dispose()


def _copy(
    src: Connection, source: Settings, dest: Settings, totals: dict[str, int], report: Progress
) -> Copied:
    engine = migrate.open_engine(dest.db_url, writing=True)
    try:
        with db.write_tx(engine) as dst, gc_paused():
            _refuse_history(dest.db_url, dst)  # again, under the destination's write lock
            identity = src.execute(select(*(store_identity.c[c] for c in IDENTITY))).one()
            dst.execute(
                update(store_identity)
                .where(store_identity.c.id == 1)
                .values(dict(zip(IDENTITY, identity, strict=True)))
            )
            for table, key in COPIED:
                _copy_table(src, dst, table, key, totals[table.name], report)
            report("rebuilding the read models", 0, 0)
            readmodel.write_all(dst, readmodel.derive(log.iter_all(dst), validate=False))
            report("verifying the copy", 0, 0)
            checked = verify(dst)
            if not checked.ok:  # rolled back: the destination stays empty
                raise IntegrityError(
                    f"the copy failed verification ({checked.problems[0]}); nothing was written "
                    f"to {shown(dest.db_url)}"
                )
            report("copying the wasm blobs", 0, 0)
            blobs = copy_blobs(source, dest)
            fsutil.fault("copy-commit")
    finally:
        engine.dispose()
    return Copied(
        source=shown(source.db_url),
        destination=shown(dest.db_url),
        seq=int(identity[2] or 0),
        transactions=totals["transactions"],
        events=totals["events"],
        tags=totals["tags"],
        contents=totals["contents"],
        blobs=blobs,
    )


def _totals(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
        for table, _key in COPIED
    }


def _check_source(conn: Connection) -> None:
    """A broken chain is not copied: the copy would fail verify just the same, and a clean
    copy of a tampered log would hide where it was tampered with."""
    checked = verify(conn)
    if not checked.ok:
        raise IntegrityError(
            f"the source store fails verification ({checked.problems[0]}); nothing was "
            "copied: restore it from a backup ('wassette-state state verify' shows the problem)"
        )


def _refuse_history(url: str, conn: Connection | None = None) -> None:
    """The destination must hold no history: a copy never merges two logs."""
    if conn is None:
        try:
            engine = migrate.open_engine(url, writing=False)
        except NoStoreError:
            return  # nothing there yet: the copy creates the store
        try:
            with db.read_tx(engine) as probe:
                _refuse_history(url, probe)
        finally:
            engine.dispose()
        return
    held = {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
        for table in (transactions, events, tags)
    }
    if any(held.values()):
        raise ValidationError(
            f"the destination {shown(url)} already holds a store ("
            + ", ".join(_plural(n, name[:-1]) for name, n in held.items())
            + "); copy into an empty "
            "one: name a new file or an empty database (createdb), or remove that store first"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _copy_table(
    src: Connection, dst: Connection, table: Table, key: str, total: int, report: Progress
) -> None:
    columns = tuple(c.name for c in table.columns)
    done = 0
    for rows in _batches(src, table, key):
        db.bulk_insert(dst, table, columns, rows)
        done += len(rows)
        report(f"copying {table.name}", done, total)
        fsutil.fault(f"copy-{table.name}")


def _batches(conn: Connection, table: Table, key: str) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows in key order, BATCH at a time (keyset paging: no OFFSET rescans)."""
    col = table.c[key]
    last: Any = None
    while True:
        stmt = select(*table.columns).order_by(col).limit(BATCH)
        if last is not None:
            stmt = stmt.where(col > last)
        rows = [tuple(r) for r in conn.execute(stmt)]
        if not rows:
            return
        yield rows
        last = rows[-1][list(table.columns.keys()).index(key)]


_DIGEST = re.compile(r"[0-9a-f]{64}")


def copy_blobs(source: Settings, dest: Settings) -> int:
    """Every intact wasm blob of the source's data dir into the destination's (content
    addressed: one already there is kept); none when both stores share a data dir."""
    src_dir, dst_dir = source.blob_dir, dest.blob_dir
    if not src_dir.is_dir() or (dst_dir.exists() and os.path.samefile(src_dir, dst_dir)):
        return 0
    src, dst = materialize.BlobStore(src_dir), materialize.BlobStore(dst_dir)
    written = 0
    for shard in sorted(p for p in src_dir.iterdir() if p.is_dir()):
        for path in sorted(shard.iterdir()):
            digest = path.name
            if not _DIGEST.fullmatch(digest) or dst.has(digest):
                continue
            data = src.get(digest)  # a corrupt blob is skipped, with a warning
            if data is not None:
                dst.put(data, digest)
                written += 1
    return written
