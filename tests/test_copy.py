"""`state copy --to URL`: a whole store, history and all, SQLite → PostgreSQL → SQLite.

Real files, the real PostgreSQL server, the installed CLI. A store with a varied history
(attaches of real components, policies and grants, env, secret keys, detach, rollback, undo,
tags, an import) is copied there and back; every row of the log is the same column by column,
and the state at every seq, the history and the tags read the same on all three.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, ok, tree_bytes, wait_for
from tests.test_postgres_errors import run_isolated, without_psycopg
from wassette_state.store.files.config import to_url
from wassette_state.store.persistence import db, migrate
from wassette_state.store.persistence.schema import (
    component_versions,
    contents,
    entities,
    events,
    setting_versions,
    store_identity,
    tags,
    transactions,
)

SECRET_API = "api-secret-value-never-stored-1"
SECRET_TOKEN = "token-secret-value-never-stored-2"
POLICY = 'version: "1.0"\ndescription: weather\npermissions: {}\n'


class PgDatabases:
    """Empty databases on the test server (as `pg_databases(blank=True)`), dropped at the end;
    module-scoped, so one copied store serves every comparison."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.made: list[str] = []

    def blank(self) -> str:
        name = self.server.blank()
        self.made.append(name)
        return str(self.server.url(name))

    def drop_all(self) -> None:
        for name in self.made:
            self.server.drop(name)


@pytest.fixture(scope="module")
def pg_blank(pg_server: Any) -> Iterator[PgDatabases]:
    dbs = PgDatabases(pg_server)
    yield dbs
    dbs.drop_all()


def build_history(env: Env) -> None:
    """About 20 transactions by three actors touching every kind of event."""
    inputs = env.root / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    fx.write_component(inputs / "fetch.wasm", kind="simple")
    fx.write_component(inputs / "mixed.wasm", kind="mixed")
    (inputs / "weather.policy.yaml").write_text(POLICY)
    w, f = str(inputs / "weather.wasm"), str(inputs / "fetch.wasm")
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("alice@x", ("component", "attach", w, "--policy", str(inputs / "weather.policy.yaml"))),
        ("bob@x", ("secret", "set", "weather", f"API={SECRET_API}")),
        ("carol@x", ("permission", "grant", "network", "weather", "api.example.com")),
        ("alice@x", ("env", "set", "LOG=info", "REGION=eu")),
        ("alice@x", ("state", "tag", "before-fetch")),
        ("bob@x", ("component", "attach", f)),
        ("bob@x", ("secret", "set", "fetch", f"TOKEN={SECRET_TOKEN}")),
        ("carol@x", ("permission", "grant", "storage", "fetch", "fs:///tmp", "--access", "read")),
        ("alice@x", ("env", "unset", "REGION")),
        ("alice@x", ("component", "attach", str(inputs / "mixed.wasm"), "--id", "mixed")),
        ("bob@x", ("component", "detach", "fetch")),
        ("alice@x", ("state", "tag", "detached")),
        ("carol@x", ("state", "rollback", "--to", "tag:before-fetch", "--yes", "--reason", "x")),
        ("carol@x", ("state", "undo", "--yes")),
        ("bob@x", ("secret", "delete", "weather", "API")),
        ("alice@x", ("state", "export", str(inputs / "snap.yaml"))),
        ("alice@x", ("env", "set", "LOG=debug")),
        ("alice@x", ("permission", "revoke", "network", "weather", "api.example.com")),
        ("bob@x", ("state", "import", str(inputs / "snap.yaml"), "--prune", "--yes")),
        ("alice@x", ("state", "tag", "imported")),
        ("bob@x", ("secret", "set", "weather", f"TOKEN={SECRET_TOKEN}")),
    ]
    for actor, args in steps:
        in_process(env, *args, actor=actor)


def in_process(env: Env, *args: str, actor: str = "tester@test") -> str:
    """The CLI's click command run in this process (no interpreter start-up: the history is
    long); the copies themselves and every refusal run the installed CLI as a subprocess."""
    from click.testing import CliRunner

    from wassette_state.cli.main import cli

    done = CliRunner().invoke(cli, list(args), env=env.environ(actor), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.stdout


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, pg_blank: PgDatabases) -> dict[str, Any]:
    """The source (SQLite), its copy on PostgreSQL, and the copy of that copy back on SQLite."""
    root = tmp_path_factory.mktemp("copy")
    src = Env(root / "src")
    src.root.mkdir()
    build_history(src)
    pg = Env(src.root, pg_blank.blank())  # same dirs: only the database moves
    there = src.run("state", "copy", "--to", pg.db_arg)
    back = Env(root / "back")
    back.root.mkdir()
    again = pg.run("state", "copy", "--to", str(back.db))
    return {"src": src, "pg": pg, "back": back, "there": there, "again": again}


def rows(env: Env, table: Any, order: Any, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    engine = migrate.open_engine(to_url(env.db_arg), writing=False)
    try:
        with db.read_tx(engine) as conn:
            cols = [c for c in table.columns if c.name not in skip]
            return [tuple(r) for r in conn.execute(select(*cols).order_by(*order))]
    finally:
        engine.dispose()


def head_seq(env: Env) -> int:
    return int(rows(env, store_identity, [store_identity.c.id])[0][3])


# --------------------------------------------------------------------------- the round trip


def test_copies_report_and_stay_quiet_off_a_terminal(trio: dict[str, Any]) -> None:
    seq = head_seq(trio["src"])
    for key, source, dest in (
        ("there", trio["src"], trio["pg"]),
        ("again", trio["pg"], trio["back"]),
    ):
        result = ok(trio[key])
        assert result.err == ""  # no progress line without a terminal
        assert result.out.startswith(f"copied {seq} events in ")
        assert f"(up to seq {seq}), 3 tags and " in result.out
        assert result.out.endswith(f" from {source.db_arg} to {dest.db_arg}; the copy verified\n")
    assert "postgresql://postgres@127.0.0.1" in trio["there"].out


def test_every_log_row_is_identical_column_by_column(trio: dict[str, Any]) -> None:
    src, pg, back = trio["src"], trio["pg"], trio["back"]
    for table, order in (
        (transactions, [transactions.c.id]),
        (events, [events.c.seq]),
        (tags, [tags.c.name]),
        (contents, [contents.c.hash]),
        (store_identity, [store_identity.c.id]),
    ):
        want = rows(src, table, order)
        assert want, table.name
        assert rows(pg, table, order) == want, table.name
        assert rows(back, table, order) == want, table.name
    assert len(rows(src, transactions, [transactions.c.id])) >= 16
    kinds = {r[4] for r in rows(src, transactions, [transactions.c.id])}
    assert kinds == {"change", "rollback", "import"}


def test_read_models_are_rebuilt_to_the_same_rows(trio: dict[str, Any]) -> None:
    for table, order in (
        (component_versions, [component_versions.c.from_seq, component_versions.c.component_id]),
        (setting_versions, [setting_versions.c.from_seq, setting_versions.c.key]),
        (entities, [entities.c.kind, entities.c.key]),
    ):
        want = rows(trio["src"], table, order, skip=("id",))
        assert want
        assert rows(trio["pg"], table, order, skip=("id",)) == want
        assert rows(trio["back"], table, order, skip=("id",)) == want


def test_verify_passes_on_each(trio: dict[str, Any]) -> None:
    seq = head_seq(trio["src"])
    for env in (trio["src"], trio["pg"], trio["back"]):
        out = json.loads(ok(env.run("state", "verify", "-o", "json")).out)
        assert out["ok"] and out["events"] == seq and out["problems"] == []


EXPORTED_AT = re.compile(r'\n  "exported_at": \d+,')


def snapshot_at(env: Env, seq: int, subprocess: bool, dirs_of: Env | None = None) -> str:
    """`export - --json --at seq:N` as printed, without the moment it was exported: by the
    installed CLI, or by the same click command in this process (fast, for every seq)."""
    args = ["state", "export", "-", "--json", "--at", f"seq:{seq}"]
    # Before the first paths.set (seq 0) the file names the dirs the CLI resolves: the same
    # dirs for all (the copy is used on the same host's dirs).
    dirs = dirs_of or env
    extra = {
        "WASSETTE_COMPONENT_DIR": str(dirs.component_dir),
        "WASSETTE_SECRETS_DIR": str(dirs.secrets_dir),
    }
    if subprocess:
        out = ok(env.run(*args, extra_env=extra)).out
    else:
        from click.testing import CliRunner

        from wassette_state.cli.main import cli

        done = CliRunner().invoke(cli, args, env=env.environ(**extra), catch_exceptions=False)
        assert done.exit_code == 0, done.output
        out = done.stdout
    assert EXPORTED_AT.search(out), out[:300]
    return EXPORTED_AT.sub("", out)


def test_export_at_every_seq_is_identical(trio: dict[str, Any]) -> None:
    """The store's lineage travels with it: the snapshots are the same, to the byte."""
    src, pg, back = trio["src"], trio["pg"], trio["back"]
    last = head_seq(src)
    for seq in range(0, last + 1):
        want = snapshot_at(src, seq, subprocess=False)
        assert snapshot_at(pg, seq, subprocess=False) == want, seq
        assert snapshot_at(back, seq, subprocess=False, dirs_of=src) == want, seq
    for seq in (1, last):
        want = snapshot_at(src, seq, subprocess=True)
        assert snapshot_at(pg, seq, subprocess=True) == want, seq
        assert snapshot_at(back, seq, subprocess=True, dirs_of=src) == want, seq


@pytest.mark.parametrize(
    "args",
    [
        ("state", "history"),
        ("state", "history", "-o", "json"),
        ("state", "tags", "-o", "json"),
        ("state", "diff", "tag:before-fetch", "tag:imported", "-o", "json"),
        ("state", "blame", "weather"),
        ("component", "list", "-o", "json"),
        ("env", "list", "-o", "json"),
    ],
)
def test_reads_are_identical(trio: dict[str, Any], args: tuple[str, ...]) -> None:
    want = ok(trio["src"].run(*args)).out
    assert want.strip()
    assert ok(trio["pg"].run(*args)).out == want
    assert ok(trio["back"].run(*args)).out == want


def test_blobs_follow_and_the_copy_materializes_from_them(
    trio: dict[str, Any], tmp_path: Path
) -> None:
    """A copy in another dir with an empty component dir: its first change writes every
    component's wasm from the blobs that came along."""
    src, pg = trio["src"], trio["pg"]
    blobs = {p.name for p in (src.root / "blobs").rglob("*") if p.is_file()}
    assert len(blobs) == 3
    assert {p.name for p in (pg.data_dir / "blobs").rglob("*") if p.is_file()} == blobs
    assert {p.name for p in (trio["back"].root / "blobs").rglob("*") if p.is_file()} == blobs
    back = Env(tmp_path)
    ok(pg.run("state", "copy", "--to", str(back.db)))
    assert {p.name for p in (back.root / "blobs").rglob("*") if p.is_file()} == blobs
    assert not back.component_dir.exists()
    ok(back.run("env", "set", "AFTER=copy"))
    for cid in ("weather", "mixed"):
        assert (back.component_dir / f"{cid}.wasm").read_bytes() == (
            src.component_dir / f"{cid}.wasm"
        ).read_bytes()
    out = json.loads(ok(back.run("state", "verify", "-o", "json")).out)
    assert out["ok"] and out["events"] == head_seq(src) + 2  # paths.set (new dirs), env.set


def test_no_secret_value_reaches_the_copies(trio: dict[str, Any]) -> None:
    src, pg, back = trio["src"], trio["pg"], trio["back"]
    assert SECRET_TOKEN.encode() in (src.secrets_dir / "weather.yaml").read_bytes()
    for path in back.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_API.encode() not in data and SECRET_TOKEN.encode() not in data, path
    with db.read_tx(migrate.open_engine(to_url(pg.db_arg), writing=False)) as conn:
        dumped = "".join(
            str(r)
            for table in (transactions, events, contents, tags, store_identity)
            for r in conn.execute(select(table))
        )
    assert "API" in dumped  # the key names are there, the values never
    assert SECRET_API not in dumped and SECRET_TOKEN not in dumped


def test_the_copy_takes_new_changes_on_its_chain(
    trio: dict[str, Any], pg_blank: PgDatabases
) -> None:
    """A copy is a store of its own: a change appends after the copied head, chained to it."""
    src = trio["src"]
    pg = Env(src.root, pg_blank.blank())
    ok(src.run("state", "copy", "--to", pg.db_arg))
    seq = head_seq(src)
    ok(pg.run("env", "set", "ON=pg"))
    out = json.loads(ok(pg.run("state", "verify", "-o", "json")).out)
    assert out["ok"] and out["events"] == seq + 1
    assert head_seq(src) == seq  # the source is not touched by changes to the copy


# --------------------------------------------------------------------------- refusals


def small_store(root: Path, url: str | None = None) -> Env:
    env = Env(root, url)
    root.mkdir(parents=True, exist_ok=True)
    in_process(env, "env", "set", "A=1", "B=2")
    in_process(env, "env", "unset", "A")
    in_process(env, "state", "tag", "t")
    return env


def pg_rows(url: str) -> list[Any]:
    """Every row of the log's tables (nothing there: [])."""
    import psycopg

    from tests.pg import raw

    out: list[Any] = []
    with raw(url) as c:
        for table in ("store_identity", "transactions", "events", "tags", "contents"):
            try:
                out.append(c.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
            except psycopg.errors.UndefinedTable:
                out.append(None)
    return out


def test_a_destination_with_history_is_refused(tmp_path: Path, pg_blank: PgDatabases) -> None:
    src = small_store(tmp_path / "src")
    other = small_store(tmp_path / "other")
    other_pg = small_store(tmp_path / "other-pg", pg_blank.blank())
    before = tree_bytes(tmp_path)
    r = src.run("state", "copy", "--to", str(other.db))
    assert_refused(src, r, 2, f"the destination {other.db} already holds a store")
    assert "2 transactions, 4 events, 1 tag)" in r.err and "name a new file" in r.err
    rows_before = pg_rows(other_pg.db_arg)
    r = src.run("state", "copy", "--to", other_pg.db_arg)
    assert_refused(src, r, 2, "already holds a store")
    assert pg_rows(other_pg.db_arg) == rows_before
    assert tree_bytes(tmp_path) == before


def test_the_source_itself_is_refused(tmp_path: Path, pg_blank: PgDatabases) -> None:
    src = small_store(tmp_path / "src")
    pg = small_store(tmp_path / "pg", pg_blank.blank())
    (tmp_path / "link.db").symlink_to(src.db)
    before = tree_bytes(tmp_path)
    for to in (str(src.db), "state.db", str(tmp_path / "link.db")):
        r = src.run("state", "copy", "--to", to)
        assert_refused(src, r, 2, "is the source store itself")
    rows_before = pg_rows(pg.db_arg)
    spelled = pg.db_arg.replace("postgresql://", "postgresql+psycopg://")
    assert_refused(pg, pg.run("state", "copy", "--to", spelled), 2, "is the source store itself")
    assert pg_rows(pg.db_arg) == rows_before
    assert tree_bytes(tmp_path) == before


def test_unusable_destinations_are_one_line(tmp_path: Path) -> None:
    src = small_store(tmp_path / "src")
    before = tree_bytes(tmp_path)
    cases = [
        ("postgresql://postgres@127.0.0.1:5433/wassette", "cannot reach the PostgreSQL server"),
        ("postgresql://postgres@127.0.0.1/wst_no_such_db", "does not exist"),
        ("mysql://u@h/db", "unsupported database URL scheme 'mysql'"),
    ]
    for url, said in cases:
        assert_refused(src, src.run("state", "copy", "--to", url), 2, said)
    assert tree_bytes(tmp_path) == before
    packages = without_psycopg(tmp_path)
    before = tree_bytes(src.root)
    r = run_isolated(src, packages, "state", "copy", "--to", "postgresql://postgres@127.0.0.1/x")
    assert_refused(src, r, 2, "the PostgreSQL driver (psycopg 3) is not installed")
    assert tree_bytes(src.root) == before


def test_a_tampered_source_is_not_copied(tmp_path: Path, pg_blank: PgDatabases) -> None:
    import contextlib
    import sqlite3

    src = small_store(tmp_path / "src")
    with contextlib.closing(sqlite3.connect(src.db)) as c, c:
        c.execute("UPDATE events SET data = replace(data, '\"2\"', '\"3\"') WHERE seq = 3")
    before = tree_bytes(tmp_path)
    dest = tmp_path / "dest" / "state.db"
    r = src.run("state", "copy", "--to", str(dest))
    assert_refused(src, r, 4, "the source store fails verification (seq 3: hash mismatch")
    assert "nothing was copied" in r.err
    url = pg_blank.blank()
    assert_refused(src, src.run("state", "copy", "--to", url), 4, "fails verification")
    assert pg_rows(url) == [None] * 5  # not even a schema
    assert not dest.exists() and tree_bytes(tmp_path) == before


# --------------------------------------------------------------------------- interrupted


@pytest.mark.parametrize("to", ["sqlite", "postgres"])
def test_a_copy_killed_midway_leaves_an_empty_store(
    tmp_path: Path, pg_blank: PgDatabases, to: str
) -> None:
    """SIGKILL after the first rows went in (the fault seam holds the process there): the
    destination is an empty store, usable, and a second copy succeeds."""
    src = small_store(tmp_path / "src")
    dest = Env(tmp_path / "dest", pg_blank.blank() if to == "postgres" else None)
    dest.root.mkdir()
    proc = src.start("state", "copy", "--to", dest.db_arg, fault="copy-events:sleep", sleep=60)
    try:
        wait_for(src.fault_log, "fire copy-events sleep")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    time.sleep(0.1)
    assert ok(dest.run("state", "history")).out.strip() == "no events"
    out = json.loads(ok(dest.run("state", "verify", "-o", "json")).out)
    assert out["ok"] and out["events"] == 0
    done = json.loads(ok(src.run("state", "copy", "--to", dest.db_arg, "-o", "json")).out)
    assert done == {
        "status": "ok",
        "source": str(src.db),
        "destination": dest.db_arg,
        "seq": 4,
        "transactions": 2,
        "events": 4,
        "tags": 1,
        "contents": 0,
        "blobs": 0,
    }
    assert ok(dest.run("state", "history")).out == ok(src.run("state", "history")).out


def test_a_terminal_sees_one_progress_line_that_goes_away(
    tmp_path: Path, pg_blank: PgDatabases
) -> None:
    from tests.conftest import run_on_tty

    src = small_store(tmp_path / "src")
    dest = pg_blank.blank()
    code, out = run_on_tty(src, "state", "copy", "--to", dest)
    assert code == 0, out
    assert out.startswith("\r\x1b[Kverifying the source (4 events)…"), repr(out)
    assert "\r\x1b[Kcopying events 4/4…" in out and "\r\x1b[Kverifying the copy…" in out
    # the line is wiped before the result is printed, which is all that stays
    assert out.endswith(
        "\r\x1b[Kcopied 4 events in 2 transactions (up to seq 4), 1 tag and 0 wasm "
        f"blobs from {src.db} to {dest}; the copy verified\n"
    ), repr(out)


def test_the_store_left_behind_still_verifies(tmp_path: Path, pg_blank: PgDatabases) -> None:
    """The default SQLite store and a PostgreSQL store share the data dir (and its marker of
    what the files were written for): after the move, each judges only its own marker."""
    env = Env(tmp_path)
    old = {"WASSETTE_STATE_DB": str(tmp_path / "xdg-data" / "wassette" / "state.db")}
    ok(env.run("env", "set", "A=1", extra_env=old))
    pg = Env(tmp_path, pg_blank.blank())
    assert pg.data_dir == tmp_path / "xdg-data" / "wassette"
    ok(env.run("state", "copy", "--to", pg.db_arg, extra_env=old))
    ok(pg.run("env", "set", "B=2"))  # the marker now names the PostgreSQL store, at seq 3
    for result in (env.run("state", "verify", extra_env=old), pg.run("state", "verify")):
        assert ok(result).err == ""
    assert "ok: 2 events" in env.run("state", "verify", extra_env=old).out
