"""Create or upgrade the schema on open. The hot path (already at head) never imports alembic."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, insert, inspect, text
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.errors import SchemaTooNewError, ValidationError
from wassette_state.store.persistence import backend, schema

# Revisions in order; the last is the head this code writes. A test checks it against alembic.
REVISIONS: tuple[str, ...] = (
    "0001_initial",
    "0002_head_anchor",
    "0003_chain_v2",
    "0004_bigint_ids",
)
HEAD = REVISIONS[-1]


def migrations_dir() -> Path:
    # the repo's migrations/ travels in the wheel under wassette_state/store/
    import wassette_state.store.migrations as pkg

    return Path(pkg.__file__).resolve().parent


MARKER_NAME = "materialized.json"  # written beside the database by every command (service)


def open_engine(url: str, *, writing: bool = True) -> Engine:
    """Open a store: create it or upgrade it when `writing`, never when only reading.

    Nothing is changed before the database is known to be a wassette-state store (or empty):
    a foreign database stays as it was. How that is found out is the backend's business.
    """
    return backend.for_url(url).open(url, writing=writing)


def marker_identity(url: str) -> dict[str, str]:
    """What the materialization marker records about the database it was written for."""
    return backend.for_url(url).marker_identity(url)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except sa_exc.OperationalError:
            return None
        except sa_exc.ProgrammingError:
            return None


def ensure_schema(engine: Engine, url: str) -> None:
    rev = current_revision(engine)
    if rev == HEAD:
        return
    if rev is not None and rev not in REVISIONS:
        raise SchemaTooNewError(
            f"the database schema ({rev}) is newer than this version of wassette-state; "
            "upgrade wassette-state to open it"
        )
    with backend.of(engine).upgrade_guard(engine, url, rev):
        rev = current_revision(engine)  # another process may have done it while we waited
        if rev == HEAD:
            return
        _upgrade(engine, rev)


def _refuse_foreign(engine: Engine) -> None:
    """No schema version but tables: another application's database, never to be altered."""
    names = sorted(inspect(engine).get_table_names())
    if names:
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise ValidationError(
            f"{engine.url.render_as_string(hide_password=True)} is not a wassette-state database: "
            f"it has tables ({shown}) but no wassette-state schema version"
        )


def _upgrade(engine: Engine, rev: str | None) -> None:
    if rev is None:
        _refuse_foreign(engine)
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["configure_logger"] = False
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        if rev is None:
            conn.execute(
                insert(schema.store_identity).values(
                    id=1, lineage=str(uuid.uuid4()), created_at=time.time_ns() // 1000
                )
            )
        conn.commit()
