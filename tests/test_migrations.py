"""Schema versions: alembic agrees with the code, old stores open, newer ones are refused."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect

from tests.conftest import REPO, Env, assert_refused, tree_bytes
from wassette_state.store.domain.errors import SchemaTooNewError, ValidationError
from wassette_state.store.persistence import db, log, migrate, schema
from wassette_state.store.usecases.service import Store
from wassette_state.store.usecases.verify import verify

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "db"


def script_directory() -> Any:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.migrations_dir()))
    return ScriptDirectory.from_config(cfg)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    eng = db.make_engine(url)
    migrate.ensure_schema(eng, url)
    yield eng
    eng.dispose()


def revision(path: Path) -> str | None:
    with closing(sqlite3.connect(path)) as c:
        row = c.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else row[0]


# ---------------------------------------------------------------- code and alembic agree


def test_revisions_match_alembic_history() -> None:
    scripts = script_directory()
    assert scripts.get_current_head() == migrate.REVISIONS[-1] == migrate.HEAD
    assert len(scripts.get_heads()) == 1  # no branches
    walked = [r.revision for r in scripts.walk_revisions()]  # head first
    assert walked[::-1] == list(migrate.REVISIONS)


def test_migrations_ship_inside_the_package() -> None:
    """Found through `store.migrations`, never through the current directory."""
    where = migrate.migrations_dir()
    assert (where / "env.py").is_file()
    assert (where / "versions" / f"{migrate.REVISIONS[0]}.py").is_file()


def test_alembic_schema_equals_the_code_metadata(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diffs == []


def _shape(eng: Engine) -> dict[str, Any]:
    insp = inspect(eng)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            ),
        }
    return out


def test_alembic_schema_has_every_table_column_index_of_the_metadata(
    engine: Engine, tmp_path: Path
) -> None:
    reference = create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    schema.metadata.create_all(reference)
    try:
        assert _shape(engine) == _shape(reference)
    finally:
        reference.dispose()
    assert set(_shape(engine)) == set(schema.metadata.tables)


def test_new_store_is_stamped_at_head_with_an_identity(tmp_path: Path, env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    store.close()
    assert revision(env.db) == migrate.HEAD
    with closing(sqlite3.connect(env.db)) as c:
        rows = c.execute("SELECT id, lineage FROM store_identity").fetchall()
    assert len(rows) == 1 and len(rows[0][1]) == 36
    assert not list(env.root.glob("state.db.bak-*"))  # nothing to back up on creation


# ---------------------------------------------------------------- newer than the code


def stamp(path: Path, rev: str) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("UPDATE alembic_version SET version_num = ?", (rev,))


def test_schema_newer_than_the_code_is_refused(env: Env) -> None:
    env.run("env", "set", "A=1")
    stamp(env.db, "9999_from_the_future")
    before = tree_bytes(env.root)
    with pytest.raises(SchemaTooNewError, match="9999_from_the_future"):
        env.store()
    r = env.run("env", "list")
    assert_refused(env, r, code=2, contains="newer than this version of wassette")
    r = env.run("state", "history")
    assert_refused(env, r, code=2)
    after = tree_bytes(env.root)
    for name in ("state.db", "materialized.json"):
        assert after.get(name) == before.get(name)
    assert not list(env.root.glob("state.db.bak-*"))
    assert revision(env.db) == "9999_from_the_future"


# ---------------------------------------------------------------- an old store opens


@pytest.fixture
def old_store(env: Env) -> Env:
    shutil.copyfile(FIXTURES / "v0001.db", env.db)
    return env


def test_fixture_is_at_the_initial_revision() -> None:
    assert revision(FIXTURES / "v0001.db") == migrate.REVISIONS[0] == "0001_initial"


def test_initial_revision_store_opens_with_history_intact(old_store: Env) -> None:
    env = old_store
    r = env.run("state", "history", "-o", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == json.loads((FIXTURES / "v0001.history.json").read_text())
    r = env.run("state", "tags", "-o", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == json.loads((FIXTURES / "v0001.tags.json").read_text())
    assert revision(env.db) == migrate.HEAD
    backups = list(env.root.glob("state.db.bak-0001_initial-*"))
    # Upgrading keeps a copy of the old file; opening a store already at head copies nothing.
    assert len(backups) == (0 if migrate.HEAD == "0001_initial" else 1)
    r = env.run("state", "verify")
    # If this fails with a hash mismatch at seq 1, the hash formula changed: stores written by
    # earlier versions would no longer verify. Version the formula (or re-hash in a migration)
    # rather than regenerating the fixture, once a release has written stores.
    assert r.code == 0, r.err


def test_initial_revision_store_keeps_working(old_store: Env) -> None:
    env = old_store
    history = json.loads((FIXTURES / "v0001.history.json").read_text())
    store: Store = env.store()  # type: ignore[assignment]
    state = store.state()
    assert sorted(state.components) == ["fetch", "weather"]
    assert state.environment == {"LOG_LEVEL": "débug ✓", "REGION": "eu"}
    assert state.components["weather"].secret_keys == ("API_KEY",)
    # Points in the past still resolve from the old read models.
    assert sorted(store.state(7).components) == ["weather"]
    assert store.state(10).environment == {"LOG_LEVEL": "info"}
    store.close()
    r = env.run("env", "set", "NEW=1", "-o", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    # The chain continues from the old head: next tx, next seq, paths re-recorded for this host.
    assert doc["tx"] == history[-1]["tx"] + 1
    assert [e["seq"] for e in doc["events"]] == [
        history[-1]["seq"] + 1,
        history[-1]["seq"] + 2,
    ]
    assert [e["type"] for e in doc["events"]] == ["paths.set", "env.set"]
    store = env.store()  # type: ignore[assignment]
    with store.reading() as conn:
        report = verify(conn)
        assert log.head(conn)[0] == len(history) + 2
    assert report.ok, report.problems
    store.close()


# ---------------------------------------------------------------- not a database


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 50, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["text", "bad-header"],
)
def test_non_database_file_is_refused(env: Env, content: bytes) -> None:
    env.db.write_bytes(content)
    r = env.run("env", "list")
    assert_refused(env, r, code=2, contains="not a usable wassette-state database")
    r = env.run("state", "history", "--db", str(env.db))
    assert_refused(env, r, code=2)
    assert env.db.read_bytes() == content
    assert not list(env.root.glob("state.db.bak-*"))


def test_directory_as_database_is_refused(env: Env) -> None:
    env.db.mkdir()
    assert_refused(
        env, env.run("env", "list"), code=2, contains="not a usable wassette-state database"
    )


def test_another_applications_database_is_not_altered(env: Env) -> None:
    with closing(sqlite3.connect(env.db)) as c:
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        c.execute("INSERT INTO notes (body) VALUES ('precious')")
        c.commit()
    assert_refused(
        env, env.run("env", "set", "A=1"), code=2, contains="not a wassette-state database"
    )
    with pytest.raises(ValidationError, match=r"has tables \(notes\)"):
        env.store()
    with closing(sqlite3.connect(env.db)) as c:
        tables = c.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == [("notes",)]
        assert c.execute("SELECT body FROM notes").fetchall() == [("precious",)]


# ---------------------------------------------------------------- the hot path


def test_opening_a_current_store_does_not_import_alembic(env: Env) -> None:
    store: Store = env.store()  # type: ignore[assignment]
    store.close()
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store
store = Store(resolve({str(env.db)!r}, {str(env.component_dir)!r}, {str(env.secrets_dir)!r}, "t"))
store.state()
store.head_seq()
assert 'alembic' not in sys.modules, sorted(m for m in sys.modules if m.startswith('alembic'))
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr


def test_creating_a_store_does_import_alembic(tmp_path: Path) -> None:
    """The check above can fail: on a new database the same code path does need alembic."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store
Store(resolve({str(tmp_path / "new.db")!r}, actor="t"))
print('alembic' in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "True"), r.stderr


# ---------------------------------------------------------------- PostgreSQL: the same history


@pytest.fixture
def pg_blank(pg_databases: Any) -> str:
    url: str = pg_databases(blank=True)
    return url


@pytest.fixture
def pg_engine(pg_blank: str) -> Iterator[Engine]:
    eng = migrate.open_engine(pg_blank, writing=True)  # upgrade from an empty database
    yield eng
    eng.dispose()


def test_postgres_upgrade_from_empty_reaches_head_with_an_identity(pg_engine: Engine) -> None:
    assert migrate.current_revision(pg_engine) == migrate.HEAD
    with pg_engine.connect() as conn:
        rows = conn.execute(schema.store_identity.select()).mappings().all()
    assert len(rows) == 1 and len(rows[0]["lineage"]) == 36 and rows[0]["head_seq"] == 0


def test_postgres_schema_equals_the_code_metadata(pg_engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with pg_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diffs == []
    assert set(_shape(pg_engine)) == set(schema.metadata.tables)


def test_postgres_ids_and_seqs_are_bigint_and_payloads_text(pg_engine: Engine) -> None:
    insp = inspect(pg_engine)
    types = {
        (t, c["name"]): str(c["type"]) for t in insp.get_table_names() for c in insp.get_columns(t)
    }
    for key in [
        ("transactions", "id"),
        ("events", "seq"),
        ("events", "tx_id"),
        ("store_identity", "head_seq"),
        ("component_versions", "from_seq"),
        ("setting_versions", "to_seq"),
        ("tags", "seq"),
    ]:
        assert types[key] == "BIGINT", key
    # JSON stays TEXT: the chain hashes the exact stored text (JSONB would re-serialize it).
    for key in [("events", "data"), ("transactions", "details"), ("contents", "body")]:
        assert types[key] == "TEXT", key
    with pg_engine.connect() as conn:
        seq_types = dict(
            conn.exec_driver_sql("SELECT sequencename, data_type::text FROM pg_sequences").all()
        )
    assert seq_types["component_versions_id_seq"] == "bigint"
    assert seq_types["setting_versions_id_seq"] == "bigint"


def test_constraint_and_index_names_fit_postgres(pg_engine: Engine) -> None:
    """Named in the metadata (so later migrations can alter them) and ≤ 63 bytes (PostgreSQL
    truncates longer identifiers silently)."""
    insp = inspect(pg_engine)
    names = []
    for t in insp.get_table_names():
        names.append(insp.get_pk_constraint(t)["name"])
        names += [i["name"] for i in insp.get_indexes(t)]
        names += [u["name"] for u in insp.get_unique_constraints(t)]
        names += [f["name"] for f in insp.get_foreign_keys(t)]
    assert None not in names and len(names) > 20
    assert max(len(n.encode()) for n in names) <= 63
    for table in schema.metadata.tables.values():
        for c in table.constraints:
            assert c.name is not None and len(str(c.name)) <= 63, (table.name, c)


def test_postgres_upgrades_an_old_store_step_by_step(pg_blank: str) -> None:
    """A store left at 0003 (INTEGER ids, one event) is widened in place by 0004."""
    from alembic import command
    from alembic.config import Config

    from wassette_state.store.domain import events as ev

    eng = db.make_engine(pg_blank)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.migrations_dir()))
    cfg.attributes["configure_logger"] = False
    with eng.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003_chain_v2")
        conn.execute(schema.store_identity.insert().values(id=1, lineage="l" * 36, created_at=1))
        conn.commit()
    from wassette_state.store.domain.state import State
    from wassette_state.store.persistence import readmodel

    with db.write_tx(eng) as conn:
        appended = log.append(conn, log.TxInfo("a@test", "seed"), [ev.EnvSet(key="A", value="1")])
        readmodel.apply(conn, appended.events, State())
    eng.dispose()
    eng = migrate.open_engine(pg_blank, writing=True)
    try:
        assert migrate.current_revision(eng) == migrate.HEAD
        col = {c["name"]: str(c["type"]) for c in inspect(eng).get_columns("events")}
        assert col["seq"] == "BIGINT"
        with eng.connect() as conn:
            assert verify(conn).ok
    finally:
        eng.dispose()


OPENER = """
import sys
from wassette_state.store.persistence import migrate
migrate.open_engine(sys.argv[1], writing=True).dispose()
"""


def test_postgres_concurrent_first_opens_upgrade_once(pg_blank: str) -> None:
    """Four processes open one empty database at once: the advisory lock lets one upgrade,
    the others find it at head (one identity, no error)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, pg_blank],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    eng = db.make_engine(pg_blank)
    try:
        assert migrate.current_revision(eng) == migrate.HEAD
        with eng.connect() as conn:
            assert conn.execute(schema.store_identity.select()).all().__len__() == 1
    finally:
        eng.dispose()
