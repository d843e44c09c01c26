"""The PostgreSQL side of the backend benchmark: bench databases and store copies.

Every database the benchmark uses is its own (`wst_bench_<pid>_<label>`), created here and
dropped at the end: the server's existing databases (`postgres`, `test`, the test suite's
templates) are never written. A store measured on PostgreSQL is a row-for-row copy of the same
generated SQLite store the SQLite figures use (COPY, then ANALYZE as autovacuum would), so both
backends read and extend the very same log, read models and contents.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get("WASSETTE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "wst_bench_"


class Server:
    """An admin connection (autocommit) for CREATE/DROP DATABASE of the bench's own databases."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        self.base = make_url(admin_url)
        self.conn = psycopg.connect(
            host=self.base.host,
            port=self.base.port or 5432,
            user=self.base.username,
            password=self.base.password,
            dbname=self.base.database,
            autocommit=True,
            connect_timeout=10,
        )
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def peer_env(self, name: str) -> dict[str, str]:
        """The settings eventsourcing's PostgreSQL module reads, for database `name`."""
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": name,
            "POSTGRES_HOST": str(self.base.host or "127.0.0.1"),
            "POSTGRES_PORT": str(self.base.port or 5432),
            "POSTGRES_USER": str(self.base.username or "postgres"),
            "POSTGRES_PASSWORD": str(self.base.password or ""),
            "CREATE_TABLE": "y",
        }

    def create(self, label: str) -> str:
        """A new empty database of this run (dropped by `close`)."""
        name = f"{PREFIX}{os.getpid()}_{label}"
        self.drop(name)
        self.conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        if not name.startswith(PREFIX):  # never anything but the bench's own
            raise ValueError(f"refusing to drop {name!r}")
        self.conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def settings(self) -> dict[str, str]:
        return {
            k: str(
                self.conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
            )
            for k in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }

    def close(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):  # dropping the rest matters more
                self.drop(name)
        self.conn.close()


def copy_store(sqlite_db: Path, url: str) -> int:
    """The store in `sqlite_db`, row for row, into the (empty) PostgreSQL database at `url`:
    the schema created by the project (migrations), the rows by COPY, serial ids moved past
    the copied ones, then ANALYZE. Returns the number of events copied."""
    import psycopg
    from sqlalchemy.engine import make_url

    from wassette_state.store.persistence import migrate, schema

    migrate.open_engine(url, writing=True).dispose()
    u = make_url(url)
    src = sqlite3.connect(sqlite_db)
    n = 0
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database
    ) as pg:
        with pg.cursor() as cur:
            cur.execute("DELETE FROM store_identity")
            for table in schema.metadata.sorted_tables:
                cols = [c.name for c in table.columns]
                rows: Any = src.execute(f"SELECT {', '.join(cols)} FROM {table.name}")
                with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
                        if table.name == "events":
                            n += 1
            for table in ("component_versions", "setting_versions"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
        pg.commit()
        pg.autocommit = True
        pg.execute("ANALYZE")
    src.close()
    return n
