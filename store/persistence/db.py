"""Transactions and bulk writes over any backend; what differs per dialect is in `backend`."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.errors import ConflictError, StoreError
from wassette_state.store.persistence import backend


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other dialects and in-memory databases."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url[len("sqlite:///") :].split("?", 1)[0]
    if raw in ("", ":memory:"):
        return None
    return Path(raw)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A bare engine for the URL (no probing, no schema): the backend's own."""
    return backend.for_url(url).make_engine(url, **kwargs)


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction holding the store's write lock from its first statement; driver
    errors leave as the project's own errors."""
    impl = backend.of(engine)
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            impl.lock_for_write(conn)
            yield conn
    except sa_exc.IntegrityError as e:
        if "stream" in str(e.orig):
            raise ConflictError(
                "a concurrent change to the same component won the race; try again"
            ) from e
        raise StoreError(f"database integrity error: {first_line(e.orig)}") from e
    except sa_exc.DBAPIError as e:
        raise impl.translate(engine, e) from e


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads (readers never wait for writers)."""
    impl = backend.of(engine)
    try:
        with engine.connect().execution_options(**impl.read_options()) as conn, conn.begin():
            yield conn
    except sa_exc.DBAPIError as e:
        if impl.is_busy(e):
            raise ConflictError("the store is busy; try again") from e
        raise impl.translate(engine, e) from e


def first_line(err: object) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


_first_line = first_line


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """An advisory lock beside the database (creation, upgrades, the files); `shared`: many
    holders at once, which `held_elsewhere` sees."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held_elsewhere(path: Path) -> bool:
    """Whether another holder has `file_lock(path, shared=True)` now (never waits)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _insert_for(conn: Connection, table: Any, ignore_existing: bool) -> Any:
    if not ignore_existing:
        from sqlalchemy import insert

        return insert(table)
    return backend.of(conn).insert_ignore(table)


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
