"""Engine creation and the dialect details of transactions (the only place that knows SQLite)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from wassette_state.store.errors import (
    BusyError,
    ConflictError,
    IntegrityError,
    StoreError,
    ValidationError,
)

BUSY_TIMEOUT_MS = int(os.environ.get("WASSETTE_BUSY_TIMEOUT_MS", "60000"))
SYNCHRONOUS = os.environ.get("WASSETTE_SYNCHRONOUS", "FULL").upper()


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other dialects and in-memory databases."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url[len("sqlite:///") :].split("?", 1)[0]
    if raw in ("", ":memory:"):
        return None
    return Path(raw)


def make_engine(url: str, *, synchronous: str = SYNCHRONOUS, read_uri: str | None = None) -> Engine:
    """An engine for the URL; with `read_uri` (from `probe_sqlite`), one that only reads the
    SQLite file, through that URI (a read-only copy, a full disk)."""
    path = sqlite_path(url)
    if path is None:
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


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction; driver errors leave as the project's own errors."""
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn
    except sa_exc.OperationalError as e:
        if _is_busy(e):
            raise BusyError(
                "the store is busy: another process held the write lock for "
                f"{BUSY_TIMEOUT_MS / 1000:g}s; try again"
            ) from e
        raise _driver_error(engine, e) from e
    except sa_exc.IntegrityError as e:
        if "stream" in str(e.orig):
            raise ConflictError(
                "a concurrent change to the same component won the race; try again"
            ) from e
        raise StoreError(f"database integrity error: {_first_line(e.orig)}") from e
    except sa_exc.DatabaseError as e:
        raise _driver_error(engine, e) from e


def _driver_error(engine: Engine, e: sa_exc.DBAPIError) -> StoreError:
    """A damaged page is damage (exit 4), a full disk says so; else the driver's first line."""
    path = sqlite_path(engine.url.render_as_string(hide_password=True))
    text = first_line(e.orig)
    if is_damage(e.orig) or "disk is full" in text or (path and no_space(path.parent)):
        return database_error(path, e.orig)
    if "readonly" in text:
        return ValidationError(f"the database {path or engine.url} is read-only: {text}")
    return StoreError(f"database error: {text}")


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads (WAL readers never wait for writers)."""
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    except sa_exc.OperationalError as e:
        if _is_busy(e):
            raise ConflictError("the store is busy; try again") from e
        raise _driver_error(engine, e) from e
    except sa_exc.DatabaseError as e:
        raise _driver_error(engine, e) from e


def is_busy(e: sa_exc.DBAPIError) -> bool:
    return isinstance(e.orig, sqlite3.OperationalError) and (
        "locked" in str(e.orig) or "busy" in str(e.orig)
    )


def first_line(err: object) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


_is_busy = is_busy
_first_line = first_line


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An advisory lock beside the database, for creation and upgrades (not for commands)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def backup_sqlite(src: Path, dest: Path) -> None:
    """A consistent copy (WAL included) through SQLite's online backup API."""
    with (
        contextlib.closing(sqlite3.connect(src)) as s,
        contextlib.closing(sqlite3.connect(dest)) as d,
    ):
        s.backup(d)
    os.chmod(dest, 0o600)


def _insert_for(conn: Connection, table: Any, ignore_existing: bool) -> Any:
    if not ignore_existing:
        from sqlalchemy import insert

        return insert(table)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def insert_ignore(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows whose key may already exist (content-addressed values, entity names)."""
    if rows:
        conn.execute(_insert_for(conn, table, True), rows)


_BULK_SQL: dict[tuple[str, str, tuple[str, ...], bool], tuple[str, bool]] = {}


def bulk_insert(
    conn: Connection,
    table: Any,
    columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_existing: bool = False,
) -> None:
    """executemany straight on the driver cursor, with SQL compiled by SQLAlchemy once.

    The ORM-free Core path still builds a parameter dict per row and runs it through the
    type processors; for the tens of thousands of rows of an import that bookkeeping cost more
    than SQLite's own work. The statement is Core's, so nothing here knows the dialect.
    """
    if not rows:
        return
    key = (conn.dialect.name, table.name, columns, ignore_existing)
    cached = _BULK_SQL.get(key)
    if cached is None:
        stmt = _insert_for(conn, table, ignore_existing).values({c: None for c in columns})
        compiled = stmt.compile(dialect=conn.dialect)
        positional = bool(compiled.positional)
        if positional:
            order = tuple(compiled.positiontup or ())
            if order != columns:
                raise StoreError(f"unexpected parameter order for {table.name}: {order}")
        cached = (str(compiled), positional)
        _BULK_SQL[key] = cached
    sql, positional = cached
    params: Any = rows if positional else [dict(zip(columns, r, strict=True)) for r in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        cursor.executemany(sql, params)
    except dbapi_error as e:
        # Wrapped as Core would (IntegrityError, OperationalError, ...): write_tx turns a lost
        # stream race into a ConflictError and any other driver error into a StoreError.
        raise sa_exc.DBAPIError.instance(
            sql, None, e, dbapi_error, hide_parameters=True, dialect=conn.dialect, ismulti=True
        ) from e
    finally:
        cursor.close()
