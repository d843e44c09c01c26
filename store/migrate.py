"""Create or upgrade the schema on open. The hot path (already at head) never imports alembic."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, insert, inspect, text
from sqlalchemy import exc as sa_exc

from wassette_state.store import db, schema
from wassette_state.store.errors import IntegrityError, SchemaTooNewError, ValidationError

# Revisions in order; the last is the head this code writes. A test checks it against alembic.
REVISIONS: tuple[str, ...] = ("0001_initial", "0002_head_anchor", "0003_chain_v2")
HEAD = REVISIONS[-1]


def migrations_dir() -> Path:
    # the repo's migrations/ travels in the wheel under wassette_state/store/
    import wassette_state.store.migrations as pkg

    return Path(pkg.__file__).resolve().parent


MARKER_NAME = "materialized.json"  # written beside the database by every command (service)


def open_engine(url: str, *, writing: bool = True) -> Engine:
    """Open a store: create it or upgrade it when `writing`, never when only reading.

    Nothing is changed before the file is known to be a wassette-state store (or absent): a
    foreign SQLite file stays byte-identical. A command that only reads opens a read-only
    copy (an auditor's, a full disk) through a read-only connection; one that writes is
    refused up front, in one line, when it could not write.
    """
    path = db.sqlite_path(url)
    if path is None:
        engine = db.make_engine(url)
        ensure_schema(engine, url)
        return engine
    probe = db.probe_sqlite(path)
    if probe.tables and probe.revision not in REVISIONS:
        if probe.revision is None or "store_identity" not in probe.tables:
            _refuse_tables(path, probe.tables)  # another application's database
        raise SchemaTooNewError(
            f"the database schema ({probe.revision}) is newer than this version of "
            "wassette-state; upgrade wassette-state to open it"
        )
    if not probe.tables:  # absent, 0 bytes or a database without tables: no store (yet)
        _check_not_lost(path, probe.kind)
        if not writing:
            raise ValidationError(
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
    if writing or probe.revision != HEAD:
        if probe.unwritable is not None:  # only reading, but the schema needs an upgrade
            raise ValidationError(
                f"the store {path} has schema {probe.revision}, which this version upgrades "
                f"on open, but {probe.unwritable}; open it once where it can be written"
            )
        try:
            engine = db.make_engine(url)
        except OSError as e:
            raise ValidationError(f"cannot create the store {path}: {e.strerror}") from None
        try:
            ensure_schema(engine, url)
        except sa_exc.DatabaseError as e:
            engine.dispose()
            raise db.database_error(path, e.orig) from e
        return engine
    return db.make_engine(url, read_uri=probe.read_uri) if probe.read_uri else db.make_engine(url)


def _refuse_tables(path: Path, tables: tuple[str, ...]) -> None:
    names = sorted(tables)
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    raise ValidationError(
        f"{path} is not a wassette-state database: it has tables ({shown}) but no "
        "wassette-state schema version"
    )


def marker_identity(url: str) -> dict[str, str]:
    """What the materialization marker records about the database it was written for."""
    path = db.sqlite_path(url)
    return {} if path is None else {"database": path.name}


def _check_not_lost(path: Path, kind: str) -> None:
    """A store whose database went missing (deleted, truncated to 0 bytes) must not silently
    become a new, empty store: the materialization marker beside it remembers the log."""
    import json

    marker = path.with_name(MARKER_NAME)
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
    path = db.sqlite_path(url)
    if path is None:
        _upgrade(engine, rev)
        return
    with db.file_lock(path):
        rev = current_revision(engine)  # another process may have done it while we waited
        if rev == HEAD:
            return
        if rev is not None and path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            db.backup_sqlite(path, path.with_name(f"{path.name}.bak-{rev}-{stamp}"))
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
