"""What differs between database backends, behind one small interface.

Everything dialect-specific lives in one module per backend (`backend_sqlite`,
`backend_postgres`): how a store is opened (created, probed, upgraded), how a write transaction
takes the store's write lock, how driver errors become the project's errors, and the database's
own integrity check. The rest of the store speaks SQLAlchemy Core to whichever engine it gets
and asks `of(engine)` for the few things that differ. Nothing else imports a backend module.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.errors import StoreError, ValidationError


class Backend(ABC):
    """One database backend: a handful of operations, each where the dialects really differ."""

    name: ClassVar[str]  # SQLAlchemy's dialect name
    # As-of queries join each entity to its latest version with LATERAL (PostgreSQL's planner
    # needs it; SQLite has no LATERAL and plans the scalar-subquery form well).
    lateral_as_of: ClassVar[bool] = False

    @abstractmethod
    def open(self, url: str, *, writing: bool) -> Engine:
        """An engine on the store at `url`, created or upgraded to the head revision when
        `writing`; a command that only reads never creates or changes anything."""

    @abstractmethod
    def make_engine(self, url: str, **options: Any) -> Engine:
        """A bare engine for the URL: no probing, no schema (tests and tools)."""

    @abstractmethod
    def lock_for_write(self, conn: Connection) -> None:
        """Called first in every write transaction: when it returns, this transaction holds the
        store's write lock (appends are serialized per store: seq gap-free, commit order = seq
        order), or it raised BusyError after the bounded wait."""

    @abstractmethod
    def read_options(self) -> dict[str, Any]:
        """Execution options for a read transaction that sees one consistent snapshot."""

    @abstractmethod
    def translate(self, engine: Engine, e: sa_exc.DBAPIError) -> StoreError:
        """The project's error for a driver error (busy → exit 3, damage → exit 4, …)."""

    @abstractmethod
    def is_busy(self, e: sa_exc.DBAPIError) -> bool:
        """The error is a lock wait that ran out (never a sign of damage)."""

    @abstractmethod
    def integrity_problems(self, conn: Connection) -> list[str]:
        """The database's own consistency check (pages, indexes), as findings for verify."""

    @abstractmethod
    def upgrade_guard(self, engine: Engine, url: str, revision: str | None) -> Any:
        """A context manager held around a schema upgrade, so one process upgrades at a time
        (the others find the store at head when they get it)."""

    @abstractmethod
    def marker_identity(self, url: str) -> dict[str, str]:
        """What the materialization marker records about the database it was written for."""

    @abstractmethod
    def insert_ignore(self, table: Any) -> Any:
        """An INSERT that skips rows whose key exists (content-addressed values, entity names)."""


_MODULES = {"sqlite": "backend_sqlite", "postgresql": "backend_postgres"}
_LOADED: dict[str, Backend] = {}


def dialect_of(url: str) -> str:
    """The backend a URL names: `sqlite:///…`, `postgresql://…` (also `postgres://`,
    `postgresql+psycopg://`)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme not in _MODULES:
        raise ValidationError(
            f"unsupported database URL scheme {scheme!r}: use a file path, sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
        )
    return scheme


def named(dialect: str) -> Backend:
    found = _LOADED.get(dialect)
    if found is None:
        module = importlib.import_module(f"wassette_state.store.persistence.{_MODULES[dialect]}")
        found = _LOADED[dialect] = module.BACKEND
    return found


def for_url(url: str) -> Backend:
    return named(dialect_of(url))


def of(engine_or_conn: Engine | Connection) -> Backend:
    return named(engine_or_conn.dialect.name)
