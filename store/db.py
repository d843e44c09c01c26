"""Engine creation and the dialect details of transactions (the only place that knows SQLite)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from wassette_state.store.errors import ConflictError, StoreError

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


def make_engine(url: str, *, synchronous: str = SYNCHRONOUS) -> Engine:
    path = sqlite_path(url)
    if path is None:
        return create_engine(url, future=True)
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise StoreError(f"unknown synchronous mode {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
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


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction; driver errors leave as the project's own errors."""
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn
    except sa_exc.OperationalError as e:
        if _is_busy(e):
            raise ConflictError(
                "the store is busy: another process held the write lock for "
                f"{BUSY_TIMEOUT_MS // 1000}s; try again"
            ) from e
        raise StoreError(f"database error: {_first_line(e.orig)}") from e
    except sa_exc.IntegrityError as e:
        if "stream" in str(e.orig):
            raise ConflictError(
                "a concurrent change to the same component won the race; try again"
            ) from e
        raise StoreError(f"database integrity error: {_first_line(e.orig)}") from e


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads (WAL readers never wait for writers)."""
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    except sa_exc.OperationalError as e:
        if _is_busy(e):
            raise ConflictError("the store is busy; try again") from e
        raise StoreError(f"database error: {_first_line(e.orig)}") from e
    except sa_exc.DatabaseError as e:
        raise StoreError(f"database error: {_first_line(e.orig)}") from e


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
