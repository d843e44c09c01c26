"""The SQLite backend: pragmas and WAL, BEGIN IMMEDIATE, probing a file before touching it,
read-only and immutable opening, a backup before every upgrade, SQLite's error texts.

Nothing outside `backend.py` imports this module; the rest of the store asks `backend.of()`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.errors import (
    BusyError,
    IntegrityError,
    NoStoreError,
    SchemaTooNewError,
    StoreError,
    ValidationError,
)
from wassette_state.store.persistence import migrate
from wassette_state.store.persistence.backend import Backend
from wassette_state.store.persistence.db import file_lock, first_line, sqlite_path

BUSY_TIMEOUT_MS = int(os.environ.get("WASSETTE_BUSY_TIMEOUT_MS", "60000"))
SYNCHRONOUS = os.environ.get("WASSETTE_SYNCHRONOUS", "FULL").upper()


def make_engine(url: str, *, synchronous: str = SYNCHRONOUS, read_uri: str | None = None) -> Engine:
    """An engine for the URL; with `read_uri` (from `probe_sqlite`), one that only reads the
    SQLite file, through that URI (a read-only copy, a full disk)."""
    path = sqlite_path(url)
    if path is None:  # in memory
        return create_engine(url, future=True)
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise StoreError(f"unknown synchronous mode {synchronous!r}")
    if read_uri is None:
        create_private(path)
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        )
    else:
        uri = read_uri
        engine = create_engine(
            url,
            creator=lambda: sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            ),
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal" and read_uri is None:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front: no read-then-upgrade deadlock, no "database is locked".
        if conn.get_execution_options().get("write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def create_private(path: Path) -> None:
    """Create the database file 0600 (and the dirs above it 0700) whatever the umask, before
    SQLite does it 0644: a store holds policies and the environment, as an export does. SQLite
    gives its -wal and -shm files the database file's mode. Existing files are left alone."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ looking before opening


@dataclass(frozen=True)
class Probe:
    """What a SQLite file is, found without changing a byte of it."""

    kind: str  # absent | empty (0 bytes) | database
    tables: tuple[str, ...] = ()
    revision: str | None = None  # alembic_version's row, if any
    # How it could be read: None = a plain connection works; else a read-only URI.
    read_uri: str | None = None
    # Why this process cannot write it (None: it can), said so a user knows what to do.
    unwritable: str | None = None


def probe_sqlite(path: Path) -> Probe:
    """Look at the file behind a SQLite URL without changing it (never switching a foreign
    file to WAL, never creating one): its tables and schema revision, and how it can be read.

    A plain connection is tried first (on a WAL store it leaves no -wal/-shm behind); if it
    cannot open (a read-only directory, a full disk: SQLite cannot create the shared-memory
    file), a read-only one; then an immutable one, which needs neither, provided no committed
    transaction waits in a -wal file (an immutable reader would not see it).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return Probe("absent", unwritable=unwritable(path.parent))
    except OSError as e:
        raise ValidationError(f"cannot read the database {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{path} is not a usable wassette-state database: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"{path} is not a usable wassette-state database: not a file")
    if st.st_size == 0:
        return Probe("empty", unwritable=unwritable(path))
    quoted = "file:" + urllib.parse.quote(os.path.abspath(path))
    wal = path.with_name(path.name + "-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    # On a full disk SQLite would leave a broken -shm behind trying: go straight to the reader
    # that needs none (or, with a -wal to read, to the one that uses the -shm already there).
    full = no_space(path.parent)
    uris: list[str | None] = [] if full else [None, quoted + "?mode=ro"]
    if not pending:
        uris.append(quoted + "?mode=ro&immutable=1")
    elif full:
        uris.append(quoted + "?mode=ro")
    failure: sqlite3.Error | None = None
    for uri in uris:
        try:
            conn = sqlite3.connect(uri or quoted, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                tables = tuple(
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                )
                revision = None
                if "alembic_version" in tables:
                    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                    revision = row[0] if row else None
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            if not _cannot_open(e):
                raise database_error(path, e) from None
            failure = e
            continue
        return Probe("database", tables, revision, uri, unwritable(path))
    assert failure is not None
    raise database_error(path, failure, unreadable=True) from None


def _cannot_open(e: sqlite3.Error) -> bool:
    """SQLite could not set up access (read-only place, no space), the file may be fine."""
    text = str(e)
    return isinstance(e, sqlite3.OperationalError) and any(
        s in text for s in ("unable to open", "readonly", "disk I/O", "disk is full")
    )


def unwritable(path: Path) -> str | None:
    """Why this process cannot write the database at `path` (or create it), else None."""
    directory = path if path.is_dir() else path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # it would be created below the nearest existing dir
    if path.is_file() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    if not os.access(directory, os.W_OK):
        return f"its directory {directory} is read-only"
    if no_space(directory):
        return f"no space is left on the device holding {directory}"
    return None


def no_space(directory: Path) -> bool:
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False


def is_damage(e: object) -> bool:
    text = str(e)
    return "malformed" in text or "corrupt" in text


def database_error(path: Path | None, e: object, unreadable: bool = False) -> StoreError:
    """The project's error for a driver error met opening or reading a database: damage is a
    verification failure (exit 4), a full disk or a read-only place says so, anything else
    is not a usable database (exit 2)."""
    what = f"the database {path}" if path is not None else "the database"
    text = first_line(e)
    if is_damage(e):
        return IntegrityError(
            f"{what} is damaged ({text}); 'wassette-state state verify' reports what is "
            "readable; restore it from a backup"
        )
    if unreadable and path is not None:
        reason = unwritable(path)
        if reason is not None:
            return StoreError(
                f"cannot read {what}: {reason}, and SQLite needs to write beside it to read "
                f"a database with a write-ahead log ({path.name}-wal); free some space, or "
                "copy the database and its -wal file to a writable place"
            )
    if "disk is full" in text or (path is not None and no_space(path.parent)):
        return StoreError(f"no space left on the device holding {what}; nothing was changed")
    where = str(path) if path is not None else "the database"
    return ValidationError(f"{where} is not a usable wassette-state database: {text}")


def _driver_error(engine: Engine, e: sa_exc.DBAPIError) -> StoreError:
    """A damaged page is damage (exit 4), a full disk says so; else the driver's first line."""
    path = sqlite_path(engine.url.render_as_string(hide_password=True))
    text = first_line(e.orig)
    if is_damage(e.orig) or "disk is full" in text or (path and no_space(path.parent)):
        return database_error(path, e.orig)
    if "readonly" in text:
        return ValidationError(f"the database {path or engine.url} is read-only: {text}")
    return StoreError(f"database error: {text}")


def backup_sqlite(src: Path, dest: Path) -> None:
    """A consistent copy (WAL included) through SQLite's online backup API."""
    with (
        contextlib.closing(sqlite3.connect(src)) as s,
        contextlib.closing(sqlite3.connect(dest)) as d,
    ):
        s.backup(d)
    os.chmod(dest, 0o600)


def open_sqlite(url: str, *, writing: bool) -> Engine:
    """Open a store: create it or upgrade it when `writing`, never when only reading.

    Nothing is changed before the file is known to be a wassette-state store (or absent): a
    foreign SQLite file stays byte-identical. A command that only reads opens a read-only
    copy (an auditor's, a full disk) through a read-only connection; one that writes is
    refused up front, in one line, when it could not write.
    """
    path = sqlite_path(url)
    if path is None:
        engine = make_engine(url)
        migrate.ensure_schema(engine, url)
        return engine
    probe = probe_sqlite(path)
    if probe.tables and probe.revision not in migrate.REVISIONS:
        if probe.revision is None or "store_identity" not in probe.tables:
            _refuse_tables(path, probe.tables)  # another application's database
        raise SchemaTooNewError(
            f"the database schema ({probe.revision}) is newer than this version of "
            "wassette-state; upgrade wassette-state to open it"
        )
    if not probe.tables:  # absent, 0 bytes or a database without tables: no store (yet)
        _check_not_lost(path, probe.kind)
        if not writing:
            raise NoStoreError(
                f"no wassette-state store at {path}: commands that only read never create one "
                "(check --db / WASSETTE_STATE_DB; the first change, e.g. 'env set', creates it)"
            )
    if writing and probe.unwritable is not None:
        if not probe.tables:
            raise ValidationError(f"cannot create a store at {path}: {probe.unwritable}")
        raise ValidationError(
            f"the store {path} cannot be changed here ({probe.unwritable}); this command "
            "writes, so nothing was done (commands that only read work on it)"
        )
    if writing or probe.revision != migrate.HEAD:
        if probe.unwritable is not None:  # only reading, but the schema needs an upgrade
            raise ValidationError(
                f"the store {path} has schema {probe.revision}, which this version upgrades "
                f"on open, but {probe.unwritable}; open it once where it can be written"
            )
        try:
            engine = make_engine(url)
        except OSError as e:
            raise ValidationError(f"cannot create the store {path}: {e.strerror}") from None
        try:
            migrate.ensure_schema(engine, url)
        except sa_exc.DatabaseError as e:
            engine.dispose()
            raise database_error(path, e.orig) from e
        return engine
    return make_engine(url, read_uri=probe.read_uri) if probe.read_uri else make_engine(url)


def _refuse_tables(path: Path, tables: tuple[str, ...]) -> None:
    names = sorted(tables)
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    raise ValidationError(
        f"{path} is not a wassette-state database: it has tables ({shown}) but no "
        "wassette-state schema version"
    )


def _check_not_lost(path: Path, kind: str) -> None:
    """A store whose database went missing (deleted, truncated to 0 bytes) must not silently
    become a new, empty store: the materialization marker beside it remembers the log."""
    import json

    marker = path.with_name(migrate.MARKER_NAME)
    try:
        doc = json.loads(marker.read_text())
        seq, name = doc.get("seq"), doc.get("database", path.name)
    except (OSError, ValueError, AttributeError):
        return
    if name != path.name:  # another store's marker (two databases in one directory)
        return
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
        return
    what = {"absent": "missing", "empty": "empty (0 bytes)"}.get(kind, "an empty database")
    backups = sorted(path.parent.glob(f"{path.name}.bak-*"))
    restore = f"e.g. {backups[-1]}" if backups else "a backup or another copy"
    raise IntegrityError(
        f"the database {path} is {what}, but {marker} says this store's log reached seq "
        f"{seq}: the database was lost. Restore it ({restore}); to start a new, empty store "
        f"here instead, move {marker.name} away first"
    )


def is_busy(e: sa_exc.DBAPIError) -> bool:
    return isinstance(e.orig, sqlite3.OperationalError) and (
        "locked" in str(e.orig) or "busy" in str(e.orig)
    )


@contextlib.contextmanager
def _upgrade_guard(url: str, revision: str | None) -> Iterator[None]:
    """One upgrader at a time (a lock file beside the database); a copy of the store before an
    existing one is changed (`state.db.bak-<rev>-<time>`)."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    with file_lock(path):
        if revision is not None and path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            backup_sqlite(path, path.with_name(f"{path.name}.bak-{revision}-{stamp}"))
        yield


class SQLiteBackend(Backend):
    name = "sqlite"

    def open(self, url: str, *, writing: bool) -> Engine:
        return open_sqlite(url, writing=writing)

    def make_engine(self, url: str, **options: Any) -> Engine:
        return make_engine(url, **options)

    def lock_for_write(self, conn: Connection) -> None:
        """BEGIN IMMEDIATE (the engine's begin hook) took the whole database's write lock."""

    def read_options(self) -> dict[str, Any]:
        return {}  # a WAL read transaction is a snapshot

    def translate(self, engine: Engine, e: sa_exc.DBAPIError) -> StoreError:
        if is_busy(e):
            return BusyError(
                "the store is busy: another process held the write lock for "
                f"{BUSY_TIMEOUT_MS / 1000:g}s; try again"
            )
        return _driver_error(engine, e)

    def is_busy(self, e: sa_exc.DBAPIError) -> bool:
        return is_busy(e)

    def integrity_problems(self, conn: Connection) -> list[str]:
        result = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
        if result == ["ok"]:
            return []
        found = [
            line
            for r in result
            for line in str(r).splitlines()
            if line.strip() and not line.startswith("***")
        ] or ["unknown damage"]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return [f"the database is damaged: {found[0]}{more}; restore it from a backup"]

    def upgrade_guard(self, engine: Engine, url: str, revision: str | None) -> Any:
        return _upgrade_guard(url, revision)

    def marker_identity(self, url: str) -> dict[str, str]:
        path = sqlite_path(url)
        return {} if path is None else {"database": path.name}

    def insert_ignore(self, table: Any) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()


BACKEND = SQLiteBackend()
