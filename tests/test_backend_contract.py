"""The backend contract (store/persistence/backend.py), one suite run against SQLite and PostgreSQL.

What every backend must guarantee: a store is created at the head revision only by a command
that writes; a foreign or newer database is refused untouched; appends are serialized per store
(seq gap-free, commit order = seq order, each hash chained to seq-1's); a lock wait is bounded and
reported as exit 3; a read sees one snapshot. Real databases, real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import BOTH, REPO, Env, assert_refused, ok, opened, raw_db, run_verify
from wassette_state.store.persistence import backend, db, log, migrate

pytestmark = BOTH


def empty_store_arg(env: Env, request: pytest.FixtureRequest) -> str:
    """Where no store is yet: a new SQLite path, or an empty PostgreSQL database."""
    if env.backend == "postgres":
        url: str = request.getfixturevalue("pg_databases")(blank=True)
        return url
    return str(env.root / "new.db")


def tables(env: Env, arg: str) -> set[str]:
    if env.backend == "postgres":
        probe = Env(env.root, arg)
        with raw_db(probe) as c:
            rows = c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
    else:
        if not Path(arg).exists():
            return set()
        with raw_db(Path(arg)) as c:
            rows = c.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def test_backend_is_chosen_by_the_url(env: Env) -> None:
    assert (
        backend.for_url(migrate_url(env)).name
        == {"sqlite": "sqlite", "postgres": "postgresql"}[env.backend]
    )


def migrate_url(env: Env) -> str:
    from wassette_state.store.files.config import to_url

    return to_url(env.db_arg)


def test_a_writing_command_creates_the_store_at_head(
    env: Env, request: pytest.FixtureRequest
) -> None:
    arg = empty_store_arg(env, request)
    ok(env.run("--db", arg, "env", "set", "A=1"))
    engine = migrate.open_engine(arg if "://" in arg else f"sqlite:///{arg}", writing=False)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD
        with db.read_tx(engine) as conn:
            assert log.head(conn)[0] == 2  # paths.set + env.set
            lineage = conn.execute(text("SELECT lineage FROM store_identity")).scalar_one()
        assert len(lineage) == 36
    finally:
        engine.dispose()


def test_a_reading_command_never_creates_a_store(env: Env, request: pytest.FixtureRequest) -> None:
    arg = empty_store_arg(env, request)
    before = tables(env, arg)
    r = env.run("--db", arg, "env", "list")
    assert_refused(env, r, 2, "commands that only read never create one")
    assert tables(env, arg) == before == set()


def test_a_foreign_database_is_refused_untouched(env: Env, request: pytest.FixtureRequest) -> None:
    arg = empty_store_arg(env, request)
    probe = Env(env.root, arg) if env.backend == "postgres" else Path(arg)
    with raw_db(probe) as c:
        c.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        c.execute("INSERT INTO invoices VALUES (1, 42)")
    for args in (("env", "set", "A=1"), ("env", "list")):
        r = env.run("--db", arg, *args)
        assert_refused(env, r, 2, "is not a wassette-state database")
    assert tables(env, arg) == {"invoices"}
    with raw_db(probe) as c:
        assert c.execute("SELECT id, total FROM invoices").fetchall() == [(1, 42)]


def test_a_newer_schema_is_refused_untouched(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    with raw_db(env) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999_future'")
    for args in (("env", "set", "B=2"), ("env", "list")):
        assert_refused(env, env.run(*args), 2, "newer than this version")
    with raw_db(env) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 2


APPENDER = r"""
import sys
from wassette_state.store.usecases import commands
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store

db, cdir, sdir, idx, count = sys.argv[1:6]
store = Store(resolve(db, cdir, sdir, f"appender-{idx}"))
for j in range(int(count)):
    commands.env_set(store, {f"K{idx}_{j}": str(j)})
store.close()
"""


def test_concurrent_appends_are_serialized(env: Env) -> None:
    """Processes appending at once: seqs 1..N without a gap, tx ids in commit order, times in
    seq order, every hash chained to seq-1's (verify), nothing lost."""
    ok(env.run("env", "set", "SETUP=1"))
    workers, each = 4, 15
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                APPENDER,
                env.db_arg,
                str(env.component_dir),
                str(env.secrets_dir),
                str(i),
                str(each),
            ],
            cwd=REPO,
            env=env.environ(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors
    with raw_db(env) as c:
        rows = c.execute(
            "SELECT e.seq, e.tx_id, t.recorded_at FROM events e "
            "JOIN transactions t ON t.id = e.tx_id ORDER BY e.seq"
        ).fetchall()
        txs = [r[0] for r in c.execute("SELECT id FROM transactions ORDER BY id").fetchall()]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == 2 + workers * each
    assert txs == list(range(1, len(txs) + 1)) == sorted({r[1] for r in rows})
    tx_of_seq = [r[1] for r in rows]
    assert tx_of_seq == sorted(tx_of_seq)  # commit order = seq order
    times = [r[2] for r in rows]
    assert times == sorted(times)
    with opened(env) as store:
        assert run_verify(store).ok
        keys = set(store.state().environment)
    assert keys == {"SETUP"} | {f"K{i}_{j}" for i in range(workers) for j in range(each)}


HOLD = 30.0  # the holder lets go when the command is done, or after this


def hold_write_lock(
    env: Env, release: threading.Event, started: threading.Event
) -> threading.Thread:
    def hold() -> None:
        with opened(env) as store, db.write_tx(store.engine):
            started.set()
            release.wait(HOLD)

    t = threading.Thread(target=hold)
    t.start()
    assert started.wait(30)
    return t


def test_a_lock_wait_is_bounded_and_reported(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    with raw_db(env) as c:
        before = c.execute("SELECT count(*) FROM events").fetchone()[0]
    started, release = threading.Event(), threading.Event()
    holder = hold_write_lock(env, release, started)
    t0 = time.monotonic()
    try:
        r = env.run("env", "set", "B=2", extra_env={"WASSETTE_BUSY_TIMEOUT_MS": "2000"})
    finally:
        waited = time.monotonic() - t0
        release.set()
        holder.join()
    assert_refused(env, r, 3, "the store is busy")
    # gave up after its bound (plus the CLI's start on a loaded machine), not when the holder
    # let go: one bounded wait (20 retries of it would outlast the holder, and succeed)
    assert waited < HOLD - 5, waited
    with raw_db(env) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == before


def test_a_read_sees_one_snapshot(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    with opened(env) as store, db.read_tx(store.engine) as conn:
        first = log.head(conn)[0]
        ok(env.run("env", "set", "B=2"))  # commits while the read is open
        assert log.head(conn)[0] == first
        assert len(log.read(conn)) == first
    with opened(env) as store:
        assert store.head_seq() == first + 1


def test_the_lost_stream_race_is_exit_3_never_exit_1(env: Env) -> None:
    """A decision based on a stream another writer moved meanwhile is refused as a conflict."""
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.errors import ConflictError

    ok(env.run("env", "set", "A=1"))
    with opened(env) as store:
        with store.reading() as conn:
            expected = log.stream_versions(conn, ["_instance"])
        ok(env.run("env", "set", "B=2"))
        with pytest.raises(ConflictError) as caught, db.write_tx(store.engine) as conn:
            log.append(
                conn, log.TxInfo("t@test", "late"), [ev.EnvSet(key="C", value="3")], expected
            )
        assert caught.value.exit_code == 3
        assert store.head_seq() == 3


def test_integrity_check_passes_on_a_sound_store(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    with opened(env) as store, store.reading() as conn:
        assert backend.of(conn).integrity_problems(conn) == []
    r = ok(env.run("state", "verify", "-o", "json"))
    assert json.loads(r.out)["ok"] is True


def test_a_long_command_line_is_recorded(env: Env) -> None:
    """SQLite never enforced VARCHAR(200); PostgreSQL does: the command column is TEXT there."""
    keys = [f"KEY_NUMBER_{i:03d}" for i in range(60)]
    ok(env.run("env", "set", *(f"{k}=secret-value" for k in keys)))
    with raw_db(env) as c:
        (command,) = c.execute("SELECT command FROM transactions ORDER BY id DESC").fetchone()
    assert command.startswith("env set KEY_NUMBER_000") and len(command) > 600
    assert "secret-value" not in command  # values are left out
