"""Tamper evidence through the installed CLI: `state verify` exits 4 with one `Error:` line naming
what it found, for edited, deleted and reordered events, an edited read model, an edited
transaction and a truncated WAL; and a database of the first schema revision opens with its
history intact."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import REPO, Env, assert_refused, ok, raw_db
from wassette_state.store.persistence import migrate

POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n    - host: api.example.com\n'
DB_FIXTURES = REPO / "tests" / "fixtures" / "db"


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as an attacker (or a bad disk) would use."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def events_of(env: Env) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(ok(env.run("state", "history", "-o", "json")).out)
    return out


# The log and read-model tampering runs on both backends; the WAL is SQLite's.
BOTH_BACKENDS = pytest.mark.parametrize(
    "tamper_backend", ["sqlite", "postgres"], indirect=True, scope="module"
)
SQLITE = pytest.mark.parametrize("tamper_backend", ["sqlite"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def tamper_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, tamper_backend: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, list[dict[str, Any]], str | None]]:
    """A store with some history: several transactions, two components, env and secrets."""
    root = tmp_path_factory.mktemp("tamper-base")
    server = request.getfixturevalue("pg_server") if tamper_backend == "postgres" else None
    db_name = server.clone() if server is not None else None
    env = Env(root / "site", server.url(db_name) if server is not None else None)
    env.root.mkdir()
    inputs = root / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    fx.write_component(inputs / "fetch.wasm", kind="simple")
    (inputs / "p.yaml").write_text(POLICY)
    for args in (
        ("component", "attach", str(inputs / "weather.wasm"), "--policy", str(inputs / "p.yaml")),
        ("env", "set", "LOG_LEVEL=info", "REGION=eu"),
        ("secret", "set", "weather", "API_KEY=x"),
        ("permission", "grant", "network", "weather", "api.other.example.com"),
        ("component", "attach", str(inputs / "fetch.wasm")),
        ("env", "unset", "REGION"),
        ("env", "set", "LOG_LEVEL=debug"),
    ):
        ok(env.run(*args, actor="alice@test"))
    assert ok(env.run("state", "verify")).out.startswith("ok:")
    yield env.root, events_of(env), db_name
    if server is not None and db_name is not None:
        server.drop(db_name)


@pytest.fixture
def site(
    base: tuple[Path, list[dict[str, Any]], str | None],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Env]:
    """A copy of the base: its files, and its PostgreSQL database copied from the base's."""
    root, _, db_name = base
    if db_name is None:
        env = Env(tmp_path / "site")
        shutil.copytree(root, env.root)
        yield env
        return
    server = request.getfixturevalue("pg_server")
    name = f"{db_name}_{tmp_path.name}"[:63]
    server.copy(db_name, name)
    env = Env(tmp_path / "site", server.url(name))
    # The store records where its files are: the copy keeps the base's paths, as a copied
    # SQLite site does (it names them relative to nothing: both are copies of one site).
    shutil.copytree(root, env.root)
    try:
        yield env
    finally:
        server.drop(name)


@pytest.fixture
def history(base: tuple[Path, list[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """The base's `state history -o json` (every site starts as a copy of the base)."""
    return base[1]


def refused_by_verify(env: Env, *contains: str) -> str:
    r = env.run("state", "verify")
    assert_refused(env, r, 4)
    line = r.err.strip()
    print(f"\nverify: {line}")
    for needle in contains:
        assert needle in line, line
    return line


def seq_of(history: list[dict[str, Any]], type_: str) -> int:
    return next(e["seq"] for e in history if e["type"] == type_)


# ---------------------------------------------------------------------------- the log


@BOTH_BACKENDS
def test_edited_event_data(site: Env, history: list[dict[str, Any]]) -> None:
    seq = seq_of(history, "env.set")
    with raw_db(site) as c:
        c.execute("UPDATE events SET data = replace(data, 'info', 'evil') WHERE seq = ?", (seq,))
        assert c.total_changes == 1
    refused_by_verify(site, f"seq {seq}", "hash")


@BOTH_BACKENDS
def test_edited_event_type_version(site: Env) -> None:
    with raw_db(site) as c:
        c.execute("UPDATE events SET stream_version = stream_version + 10 WHERE seq = 3")
    refused_by_verify(site, "seq 3")


@BOTH_BACKENDS
def test_deleted_event_in_the_middle(site: Env, history: list[dict[str, Any]]) -> None:
    seq = seq_of(history, "secret.keys_set")
    with raw_db(site) as c:
        c.execute("DELETE FROM events WHERE seq = ?", (seq,))
    refused_by_verify(site, f"seq {seq}", "missing")


@BOTH_BACKENDS
def test_deleted_last_event(site: Env, history: list[dict[str, Any]]) -> None:
    last = history[-1]["seq"]
    with raw_db(site) as c:
        c.execute("DELETE FROM events WHERE seq = ?", (last,))
    refused_by_verify(site, f"seq {last}")


@BOTH_BACKENDS
def test_deleted_last_transaction_entirely(site: Env, history: list[dict[str, Any]]) -> None:
    """Events and transaction row both gone: the chain itself is still consistent; the read
    models (rows from the deleted seqs) and the materialization marker (files written for a
    later seq) can tell, and the report must name the deletion, not advise a rebuild."""
    last_tx = history[-1]["tx"]
    first_gone = min(e["seq"] for e in history if e["tx"] == last_tx)
    with raw_db(site) as c:
        c.execute("DELETE FROM events WHERE tx_id = ?", (last_tx,))
        c.execute("DELETE FROM transactions WHERE id = ?", (last_tx,))
    refused_by_verify(site, f"seq {first_gone}", "missing")


@BOTH_BACKENDS
def test_reordered_pair(site: Env, history: list[dict[str, Any]]) -> None:
    """Two rows swap their content (everything but seq)."""
    a, b = history[2]["seq"], history[3]["seq"]
    cols = "tx_id, stream, stream_version, type, type_version, data, hash"
    with raw_db(site) as c:
        ra = c.execute(f"SELECT {cols} FROM events WHERE seq = ?", (a,)).fetchone()
        rb = c.execute(f"SELECT {cols} FROM events WHERE seq = ?", (b,)).fetchone()
        assert ra != rb
        c.execute("BEGIN")
        c.execute("DELETE FROM events WHERE seq IN (?, ?)", (a, b))
        c.execute(f"INSERT INTO events (seq, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (a, *rb))
        c.execute(f"INSERT INTO events (seq, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (b, *ra))
        c.execute("COMMIT")
    refused_by_verify(site, f"seq {a}")


@BOTH_BACKENDS
def test_edited_transaction_actor(site: Env, history: list[dict[str, Any]]) -> None:
    tx = history[4]["tx"]
    first = min(e["seq"] for e in history if e["tx"] == tx)
    with raw_db(site) as c:
        c.execute("UPDATE transactions SET actor = 'mallory@evil' WHERE id = ?", (tx,))
        assert c.total_changes == 1
    refused_by_verify(site, f"seq {first}", "hash")


@BOTH_BACKENDS
def test_edited_transaction_time(site: Env, history: list[dict[str, Any]]) -> None:
    """Backdating a transaction (what `--at`/`rollback --to` resolve against) is detected."""
    tx = history[-1]["tx"]
    with raw_db(site) as c:
        c.execute("UPDATE transactions SET recorded_at = recorded_at - 1 WHERE id = ?", (tx,))
    refused_by_verify(site)


# ---------------------------------------------------------------------------- read models


@BOTH_BACKENDS
def test_edited_read_model_row(site: Env) -> None:
    with raw_db(site) as c:
        row_id, state = c.execute(
            "SELECT id, state FROM component_versions WHERE component_id = 'weather' "
            "AND to_seq IS NULL"
        ).fetchone()
        doc = json.loads(state)
        assert isinstance(doc, dict), state
        if isinstance(doc.get("secret_keys"), list):
            doc["secret_keys"] = [*doc["secret_keys"], "INJECTED"]
        else:  # whatever the row's shape becomes, change one of its values
            key = sorted(k for k, v in doc.items() if isinstance(v, str))[0]
            doc[key] = doc[key] + "x"
        c.execute("UPDATE component_versions SET state = ? WHERE id = ?", (json.dumps(doc), row_id))
    line = refused_by_verify(site, "read model")
    assert "weather" in line, line
    # ... and `state rebuild` repairs it from the log.
    ok(site.run("state", "rebuild"))
    assert ok(site.run("state", "verify")).out.startswith("ok:")


@BOTH_BACKENDS
def test_deleted_read_model_row(site: Env) -> None:
    with raw_db(site) as c:
        c.execute("DELETE FROM component_versions WHERE component_id = 'fetch'")
    refused_by_verify(site, "read model")


# ---------------------------------------------------------------------------- the WAL

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM events").fetchone()
print("ready", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


@contextmanager
def reader_held_open(db: Path) -> Iterator[None]:
    """Another process keeps a read transaction open: nothing after it gets checkpointed, so
    the commits made meanwhile live only in the -wal file."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


@SQLITE
def test_truncated_wal(site: Env, history: list[dict[str, Any]], tmp_path: Path) -> None:
    before = history[-1]["seq"]
    copy = Env(tmp_path / "copy")
    with reader_held_open(site.db):
        ok(site.run("env", "set", "AFTER_1=1"))
        ok(site.run("env", "set", "AFTER_2=2", "AFTER_3=3"))
        ok(site.run("permission", "grant", "network", "fetch", "api.fetch.example.com"))
        full = events_of(site)[-1]["seq"]
        wal = site.db.with_name(site.db.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 32
        # The copy a backup tool would take: database, WAL and the data dir's marker.
        shutil.copytree(site.root, copy.root, ignore=shutil.ignore_patterns("*-shm"))
    marker = json.loads((copy.root / "materialized.json").read_text())
    assert marker["seq"] == full > before
    copied_wal = copy.db.with_name(copy.db.name + "-wal")
    size = copied_wal.stat().st_size
    with copied_wal.open("r+b") as f:
        f.truncate(32 + (size - 32) // 2)
    # The log in the copy lost its last commits, the files say they were written for seq `full`.
    line = refused_by_verify(copy, "missing")
    assert str(full) in line, line
    with raw(copy.db) as c:
        remaining = c.execute("SELECT count(*) FROM events").fetchone()[0]
    assert before <= remaining < full
    assert f"seq {remaining + 1}" in line, line


@SQLITE
def test_intact_wal_copy_verifies(site: Env, tmp_path: Path) -> None:
    """The same copy without the truncation is fine (so the test above detects the cut)."""
    copy = Env(tmp_path / "copy")
    with reader_held_open(site.db):
        ok(site.run("env", "set", "AFTER_1=1"))
        shutil.copytree(site.root, copy.root, ignore=shutil.ignore_patterns("*-shm"))
    assert ok(copy.run("state", "verify")).out.startswith("ok:")


# ---------------------------------------------------------------------------- old schema


def first_revision_fixtures() -> list[Path]:
    found = sorted(DB_FIXTURES.glob("v0001*.db"))
    return found


@pytest.mark.parametrize("fixture", first_revision_fixtures(), ids=lambda p: p.name)
def test_first_revision_database_opens_with_history_intact(fixture: Path, env: Env) -> None:
    with raw(fixture) as c:
        assert (
            c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            == (migrate.REVISIONS[0])
        )
    env.root.mkdir(exist_ok=True)
    shutil.copyfile(fixture, env.db)
    original = env.db.read_bytes()

    history = env.run("state", "history", "-o", "json")
    assert history.code == 0, history.err
    expected_history = fixture.with_name(fixture.stem + ".history.json")
    if expected_history.exists():
        assert json.loads(history.out) == json.loads(expected_history.read_text())
    expected_tags = fixture.with_name(fixture.stem + ".tags.json")
    if expected_tags.exists():
        assert json.loads(ok(env.run("state", "tags", "-o", "json")).out) == json.loads(
            expected_tags.read_text()
        )
    verify = env.run("state", "verify")
    assert verify.code == 0, (
        f"a database written by revision {migrate.REVISIONS[0]} no longer verifies: "
        f"{verify.err.strip()}"
    )
    with raw(env.db) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate.HEAD
    backups = sorted(p.name for p in env.root.glob(f"{env.db.name}.bak-*"))
    if migrate.REVISIONS[0] == migrate.HEAD:
        # The head is still the first revision: nothing to upgrade, so no backup either.
        # (The upgrade path itself cannot be exercised until a second revision exists.)
        assert backups == []
    else:
        assert len(backups) == 1, backups
        backup = env.root / backups[0]
        assert migrate.REVISIONS[0] in backup.name
        with raw(backup) as c:
            assert (
                c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
                == (migrate.REVISIONS[0])
            )
            assert c.execute("SELECT count(*) FROM events").fetchone()[0] == len(
                json.loads(history.out)
            )
        # The backup is the original database (page for page; the header's journal-mode
        # bytes may differ), not a partially upgraded one.
        with raw(backup) as c:
            backup_dump = list(c.iterdump())
        fixture_copy = env.root / "fixture-copy.db"
        fixture_copy.write_bytes(original)
        with raw(fixture_copy) as c:
            assert list(c.iterdump()) == backup_dump


def test_there_is_a_first_revision_fixture() -> None:
    assert first_revision_fixtures(), f"no v0001*.db fixture in {DB_FIXTURES}"
