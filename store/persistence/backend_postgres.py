"""The PostgreSQL backend (psycopg 3): writers serialized by a row lock on the store's head row,
readers on a REPEATABLE READ snapshot, an advisory lock around upgrades, psycopg's errors.

Appends (DESIGN §8): every write transaction runs at READ COMMITTED and FIRST locks the one
`store_identity` row (`SELECT … FOR UPDATE`), with a bounded `lock_timeout`. Whatever it reads
after that (the log's head, stream versions, the chain's last hash) is the latest committed, and
no other writer can commit in between: seq stays gap-free, commit order is seq order, and the
previous hash is always seq-1's. Not a sequence (gaps), not SERIALIZABLE retries.

Nothing outside `backend.py` imports this module; psycopg loads only when a URL names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from wassette_state.store.domain.errors import (
    BusyError,
    ConflictError,
    IntegrityError,
    NoStoreError,
    SchemaTooNewError,
    StoreError,
    ValidationError,
)
from wassette_state.store.persistence import migrate
from wassette_state.store.persistence.backend import Backend
from wassette_state.store.persistence.db import first_line
from wassette_state.store.persistence.schema import store_identity

LOCK_TIMEOUT_MS = int(os.environ.get("WASSETTE_BUSY_TIMEOUT_MS", "60000"))
CONNECT_TIMEOUT_S = 10
# One key for every store's upgrades (pg_advisory_lock is per database, so per store).
UPGRADE_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"wassette-state schema upgrade").digest()[:8], "big", signed=True
)
INSTALL_HINT = "pip install 'wassette-state[postgres]'"


def driver_url(url: str) -> URL:
    """The URL with psycopg 3 as the driver, whichever spelling the user gave."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as e:
        raise ValidationError(f"not a PostgreSQL URL: {e}") from None
    return parsed.set(drivername="postgresql+psycopg")


def shown(url: str | URL) -> str:
    """The URL for messages: never the password."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=True)


def make_engine(url: str, **options: Any) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ValidationError(
            "the PostgreSQL driver (psycopg 3) is not installed: "
            f"{INSTALL_HINT}, or use a SQLite file"
        ) from None
    return create_engine(
        driver_url(url),
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "wassette-state"},
        **options,
    )


def connection_error(url: str | URL, e: sa_exc.DBAPIError) -> StoreError | None:
    """A failure to connect or log in, said so a user knows what to do (exit 2); else None."""
    orig = e.orig
    sqlstate = getattr(orig, "sqlstate", None) or ""
    message = str(orig)
    parsed = url if isinstance(url, URL) else make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    reason = _fatal_line(message)
    if sqlstate == "3D000" or ("database" in message and "does not exist" in message):
        return ValidationError(
            f"the PostgreSQL database {parsed.database!r} does not exist on {where}: create it "
            f"(createdb -h {parsed.host or 'localhost'} -U {parsed.username or 'postgres'} "
            f"{parsed.database}) or fix --db / WASSETTE_STATE_DB"
        )
    if (
        sqlstate.startswith("28")
        or "authentication failed" in message
        or ("role" in message and "does not exist" in message)
        or "pg_hba.conf" in message
        or "no password supplied" in message
    ):
        return ValidationError(
            f"PostgreSQL at {where} refused the login as {parsed.username or 'the default user'!r}"
            f" ({reason}); check the user and password in --db / WASSETTE_STATE_DB"
        )
    if sqlstate.startswith("08") or (not sqlstate and "connection" in message.lower()):
        return ValidationError(
            f"cannot reach the PostgreSQL server at {where} ({reason}); start it, or fix the "
            "host and port in --db / WASSETTE_STATE_DB"
        )
    return None


def _fatal_line(message: str) -> str:
    """The line of a libpq message that says why ("Connection refused", "role … does not
    exist"), without the "connection failed: connection to server at …" preamble."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text_ = lines[0] if lines else message
    for marker in ("FATAL:", "failed:"):
        if marker in text_:
            text_ = text_.rsplit(marker, 1)[1].strip()
    return text_ or "no reason given"


def open_postgres(url: str, *, writing: bool) -> Engine:
    engine = make_engine(url)
    try:
        try:
            rev = migrate.current_revision(engine)
            if rev is not None and rev not in migrate.REVISIONS:
                raise SchemaTooNewError(
                    f"the database schema ({rev}) is newer than this version of "
                    "wassette-state; upgrade wassette-state to open it"
                )
            if rev is None and not writing:
                migrate._refuse_foreign(engine)
                raise NoStoreError(
                    f"no wassette-state store in {shown(url)}: commands that only read never "
                    "create one (check --db / WASSETTE_STATE_DB; the first change, e.g. "
                    "'env set', creates it)"
                )
            if writing or rev != migrate.HEAD:
                migrate.ensure_schema(engine, url)
        except sa_exc.DBAPIError as e:
            raise BACKEND.translate(engine, e) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextlib.contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    """Held on a connection of its own while another one upgrades: one upgrader per database
    (the others wait, bounded, then find the store at head)."""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": UPGRADE_LOCK_KEY})
            conn.commit()


_LOCK_SQL = (
    f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}; "
    f"SELECT id FROM {store_identity.name} WHERE id = 1 FOR UPDATE"
)


class PostgresBackend(Backend):
    name = "postgresql"
    lateral_as_of = True

    def open(self, url: str, *, writing: bool) -> Engine:
        return open_postgres(url, writing=writing)

    def make_engine(self, url: str, **options: Any) -> Engine:
        return make_engine(url, **options)

    def lock_for_write(self, conn: Connection) -> None:
        # One round trip: both statements go as one simple query, in order, in this
        # transaction (the bound applies to the lock wait that follows it).
        conn.exec_driver_sql(_LOCK_SQL)

    def read_options(self) -> dict[str, Any]:
        # One snapshot for every statement of the read (READ COMMITTED would take one each).
        return {"isolation_level": "REPEATABLE READ"}

    def translate(self, engine: Engine, e: sa_exc.DBAPIError) -> StoreError:
        sqlstate = getattr(e.orig, "sqlstate", None) or ""
        text_ = first_line(e.orig)
        if self.is_busy(e):
            return BusyError(
                "the store is busy: another process held the write lock for "
                f"{LOCK_TIMEOUT_MS / 1000:g}s; try again"
            )
        if sqlstate in ("40001", "40P01"):
            return ConflictError(f"a concurrent change won the race ({text_}); try again")
        if sqlstate.startswith("XX"):
            return IntegrityError(
                f"the database is damaged ({text_}); 'wassette-state state verify' reports "
                "what is readable; restore it from a backup (pg_dump)"
            )
        if sqlstate == "53100":
            return StoreError("no space left on the PostgreSQL server; nothing was changed")
        if sqlstate == "25006":
            return ValidationError(f"the database {shown(engine.url)} is read-only: {text_}")
        refused = connection_error(engine.url, e)
        if refused is not None:
            return refused
        return StoreError(f"database error: {text_}")

    def is_busy(self, e: sa_exc.DBAPIError) -> bool:
        return getattr(e.orig, "sqlstate", None) in ("55P03", "57014")

    def integrity_problems(self, conn: Connection) -> list[str]:
        """The server checks its own pages (and their checksums, where enabled) as it reads
        them; a damaged one surfaces as an XX error, which verify reports as damage."""
        return []

    def upgrade_guard(self, engine: Engine, url: str, revision: str | None) -> Any:
        # No automatic copy before an upgrade here (that is SQLite's): `pg_dump` first.
        return _advisory_lock(engine)

    def marker_identity(self, url: str) -> dict[str, str]:
        parsed = make_url(url)
        return {"database": f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"}

    def insert_ignore(self, table: Any) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table).on_conflict_do_nothing()


BACKEND = PostgresBackend()
