"""The test PostgreSQL server: a migrated template database, one clone per test (DESIGN §8).

The server is the machine's (127.0.0.1:5432, trust auth; `.ci/run` starts it). Its absence is a
failure, never a skip. The template's name carries a digest of the schema and the migrations, so
a changed schema gets a new template; building it is guarded by an advisory lock and it gets its
final name only once complete, so concurrent pytest-xdist workers build it once and never clone
a half-built one.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ADMIN_URL = os.environ.get("WASSETTE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_LOCK = 0x7741535354  # pg_advisory_lock key of the template build ("wASST")
_PREFIX = "wst_test_"


def _schema_digest() -> str:
    from wassette_state.store.persistence import migrate, schema

    h = hashlib.sha256()
    for path in sorted((migrate.migrations_dir() / "versions").glob("*.py")):
        h.update(path.read_bytes())
    h.update(Path(schema.__file__).read_bytes())
    return h.hexdigest()[:12]


class Server:
    """An admin connection (autocommit) to the test server, for CREATE/DROP DATABASE."""

    def __init__(self, conn: Any, base: Any) -> None:
        self.conn = conn
        self.base = base  # the admin URL, parsed
        self.template = self._ensure_template()

    @classmethod
    def connect(cls) -> Server:
        try:
            import psycopg
        except ImportError:
            pytest.fail("psycopg is not installed: pip install -e '.[test]'", pytrace=False)
        from sqlalchemy.engine import make_url

        base = make_url(ADMIN_URL)
        try:
            conn = psycopg.connect(
                host=base.host,
                port=base.port or 5432,
                user=base.username,
                dbname=base.database,
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.OperationalError as e:
            pytest.fail(
                f"the PostgreSQL test server {ADMIN_URL} cannot be reached ({e}); start it "
                "(.ci/run does: pg_ctlcluster … main start)",
                pytrace=False,
            )
        return cls(conn, base)

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def _exists(self, name: str) -> bool:
        return bool(
            self.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        )

    def _ensure_template(self) -> str:
        name = f"{_PREFIX}tpl_{_schema_digest()}"
        if self._exists(name):
            return name
        self.conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            if self._exists(name):  # another worker built it while this one waited
                return name
            building = f"{name}_{os.getpid()}"
            self.conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            self.conn.execute(f'CREATE DATABASE "{building}"')
            from wassette_state.store.persistence import migrate

            engine = migrate.open_engine(self.url(building), writing=True)
            engine.dispose()
            self.conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
        return name

    def blank(self) -> str:
        """A new, empty database (no store in it yet)."""
        name = f"{_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
        self.conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def clone(self) -> str:
        """A new database from the template, with a lineage of its own (a store's identity)."""
        import psycopg

        name = f"{_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
        for attempt in range(50):
            try:
                self.conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                break
            except psycopg.errors.ObjectInUse:  # another worker's clone of it is under way
                if attempt == 49:
                    raise
                time.sleep(0.05)
        with raw(self.url(name)) as c:
            c.execute(
                "UPDATE store_identity SET lineage = ?, created_at = ?",
                (str(uuid.uuid4()), time.time_ns() // 1000),
            )
        return name

    def copy(self, template: str, name: str) -> None:
        """`name` anew as a copy of the database `template` (which nobody may be connected to)."""
        self.drop(name)
        self.conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def name_of(self, url: str) -> str:
        from sqlalchemy.engine import make_url

        return str(make_url(url).database)

    def drop(self, name: str) -> None:
        self.conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.conn.close()


class _Raw:
    """A psycopg connection that takes sqlite3's `?` placeholders, for tamper tests on both."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.total_changes = 0  # as sqlite3's: rows changed so far on this connection

    def execute(self, sql: str, params: Any = ()) -> Any:
        cur = self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
        if sql.lstrip().upper().startswith(("UPDATE", "DELETE", "INSERT")):
            self.total_changes += max(cur.rowcount, 0)
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@contextmanager
def raw(url: str) -> Iterator[Any]:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )
    try:
        yield _Raw(conn)
    finally:
        conn.close()
