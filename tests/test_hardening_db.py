"""Damaged, lost, foreign, read-only and mistyped databases (issue 14): read commands read
what can be read and never create a store; writes are refused in one line when they cannot
be done; damage is a verification failure (exit 4); a refused command changes no byte.

Read-only places: the tests run as root, which ignores file modes, so the commands run without
the capabilities that let root do so (`setpriv`); as another user, the modes alone do it. A
full disk is a small tmpfs, mounted for the test (root only).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Env,
    Result,
    assert_refused,
    fill,
    mounted_small_disk,
    ok,
    raw_db,
    tree_bytes,
    wassette_exe,
)

READS = (
    ("env", "list", "-o", "json"),
    ("state", "history", "-o", "json"),
    ("state", "show", "-o", "json"),
    ("component", "list", "-o", "json"),
    ("state", "export", "-"),
    ("state", "verify", "-o", "json"),
)
WRITES = (
    ("env", "set", "NEW=1"),
    ("env", "unset", "A"),
    ("state", "tag", "t1"),
    ("state", "rebuild"),
    ("state", "rollback", "--to", "seq:0", "--yes"),
)


@pytest.fixture(autouse=True)
def fixed_export_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # exports compare byte for byte


def seeded(env: Env) -> Env:
    ok(env.run("env", "set", "A=1", "B=two"))
    ok(env.run("env", "set", "C=3"))
    return env


# ---------------------------------------------------------------- a store that lost its database


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_lost_database_is_never_taken_for_a_new_store(env: Env, how: str) -> None:
    seeded(env)
    if how == "truncated":
        env.db.write_bytes(b"")
    else:
        env.db.unlink()
    before = tree_bytes(env.root)
    for args in [*READS, *WRITES]:
        r = env.run(*args)
        assert_refused(env, r, code=4, contains="the database was lost")
        assert "materialized.json" in r.err and "seq 4" in r.err
    assert tree_bytes(env.root) == before
    assert env.db.exists() == (how == "truncated")
    # What the message says to do: move the marker away, and a new store starts.
    (env.root / "materialized.json").rename(env.root / "materialized.json.old")
    ok(env.run("env", "set", "A=1"))
    assert ok(env.run("state", "verify")).out.startswith("ok: 2 events")


def test_another_databases_marker_does_not_make_this_one_lost(env: Env) -> None:
    seeded(env)
    other = env.root / "other.db"
    assert_refused(env, env.run("--db", str(other), "env", "list"), code=2, contains="no wassette")
    assert not other.exists()
    ok(env.run("--db", str(other), "env", "set", "X=1"))
    assert "X" in ok(env.run("--db", str(other), "env", "list")).out


# ---------------------------------------------------------------- read commands never create


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a[:2]))
def test_read_commands_never_create_a_store(env: Env, args: tuple[str, ...]) -> None:
    missing = env.root / "typo" / "stat.db"
    r = env.run("--db", str(missing), *args)
    assert_refused(env, r, code=2, contains=f"no wassette-state store at {missing}")
    assert not missing.parent.exists()
    assert not env.db.exists()


def test_verify_of_an_empty_file_is_not_ok(env: Env) -> None:
    env.db.write_bytes(b"")
    assert_refused(env, env.run("state", "verify"), code=2, contains="no wassette-state store")
    assert env.db.read_bytes() == b""


# ---------------------------------------------------------------- another application's file


def foreign(path: Path, journal: str = "delete", alembic: bool = False) -> None:
    with closing(sqlite3.connect(path)) as c:
        c.execute(f"PRAGMA journal_mode={journal}")
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        c.execute("INSERT INTO notes (body) VALUES ('precious')")
        if alembic:
            c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            c.execute("INSERT INTO alembic_version VALUES ('ae1027a6acf')")
        c.commit()


@pytest.mark.parametrize("alembic", [False, True], ids=["plain", "alembic-managed"])
def test_another_applications_database_stays_byte_identical(env: Env, alembic: bool) -> None:
    foreign(env.db, alembic=alembic)
    before = tree_bytes(env.root)
    for args in [*WRITES, *READS]:
        r = env.run(*args)
        assert_refused(env, r, code=2, contains="is not a wassette-state database")
        assert "(notes)" in r.err or "alembic_version" in r.err
    assert tree_bytes(env.root) == before  # not even switched to WAL
    assert sorted(p.name for p in env.root.iterdir() if not p.name.endswith(".lock")) == [
        "state.db"
    ]


# ---------------------------------------------------------------- a read-only copy


def run_unprivileged(env: Env, *args: str) -> Result:
    """The CLI as a user the file modes apply to (root without its override capabilities)."""
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    proc = subprocess.run(
        [*prefix, wassette_exe(), *args],
        capture_output=True,
        text=True,
        env=env.environ("auditor@test"),
        cwd="/",
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    modes = {p: p.stat().st_mode & 0o7777 for p in paths}
    try:
        for p in paths:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        yield
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


@pytest.mark.parametrize("what", ["directory", "file"])
def test_a_read_only_copy_can_be_read_and_refuses_writes(env: Env, what: str) -> None:
    seeded(env)
    expected = {args: ok(env.run(*args)).out for args in READS}
    before = tree_bytes(env.root)
    paths = [env.db] + ([env.root] if what == "directory" else [])
    with read_only(*paths):
        for args in READS:
            r = run_unprivileged(env, *args)
            assert r.code == 0, (args, r.err)
            assert r.out == expected[args], args
        for args in WRITES:
            r = run_unprivileged(env, *args)
            assert_refused(env, r, code=2, contains="cannot be changed here")
            assert "read-only" in r.err
    after = tree_bytes(env.root)
    if what == "file":  # a read-only reader may leave SQLite's empty -wal/-shm beside it
        after = {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))}
    assert after == before


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_small_disk(tmp_path / "disk") as mount:
        yield mount


def test_a_full_disk_still_reads_and_refuses_writes_saying_why(env: Env, small_disk: Path) -> None:
    disk_env = Env(small_disk)
    seeded(disk_env)
    expected = {args: ok(disk_env.run(*args)).out for args in READS}
    filler = fill(small_disk)
    before = tree_bytes(small_disk)
    for args in READS:
        r = disk_env.run(*args)
        assert r.code == 0, (args, r.err)
        assert r.out == expected[args], args
        assert "not a usable" not in r.err
    for args in WRITES:
        r = disk_env.run(*args)
        assert_refused(disk_env, r, code=2, contains="no space is left on the device")
    assert tree_bytes(small_disk) == before
    filler.unlink()
    ok(disk_env.run("env", "set", "AFTER=1"))
    assert ok(disk_env.run("state", "verify")).out.startswith("ok:")


# ---------------------------------------------------------------- a damaged page


def damage_a_log_page(db: Path) -> None:
    with raw_db(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = c.execute("PRAGMA page_size").fetchone()
        pages = [
            r[0]
            for r in c.execute(
                "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf'"
            )
        ]
    page = pages[len(pages) // 2]
    with db.open("r+b") as f:
        f.seek((page - 1) * page_size + 100)
        f.write(b"\xde\xad\xbe\xef" * 200)


def test_a_damaged_page_is_a_verification_failure(env: Env) -> None:
    values = [f"K{i}={'v' * 40}{i}" for i in range(400)]
    ok(env.run("env", "set", *values))
    damage_a_log_page(env.db)
    r = env.run("state", "verify")
    assert_refused(env, r, code=4, contains="verification failed: the database is damaged")
    doc: dict[str, Any] = json.loads(env.run("state", "verify", "-o", "json").out)
    assert doc["ok"] is False and len(doc["problems"]) == 1
    r = env.run("state", "rebuild")
    assert_refused(env, r, code=4, contains="is damaged")
    assert "unexpected failure" not in r.err
    r = env.run("state", "history")
    assert_refused(env, r, code=4, contains="is damaged")


def test_a_database_copied_elsewhere_still_opens(env: Env, tmp_path: Path) -> None:
    """The probe before opening (no WAL switch, no creation) still lets a moved store open."""
    seeded(env)
    copy = tmp_path / "moved" / "state.db"
    copy.parent.mkdir()
    shutil.copyfile(env.db, copy)
    r = ok(env.run("--db", str(copy), "env", "list", "-o", "json"))
    assert json.loads(r.out)
