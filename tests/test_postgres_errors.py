"""`--db postgresql://…` when it cannot work: no driver, no server, a refused login, no database.

Each is one `Error:` line, exit 2, naming what to do, and never the password. The missing
driver is real: the CLI runs in an isolated interpreter (`python -I -S`) whose only packages are
this environment's site-packages without psycopg.
"""

from __future__ import annotations

import site
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Env, Result, assert_refused, ok, raw_db
from tests.pg import ADMIN_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_url(user: str = "postgres", port: int | None = None, db: str = "postgres") -> str:
    from sqlalchemy.engine import make_url

    base = make_url(ADMIN_URL)
    return base.set(username=user, port=port or base.port, database=db).render_as_string(False)


def test_an_unreachable_server_is_one_line_exit_2(env: Env) -> None:
    r = env.run("--db", pg_url(port=free_port()), "env", "set", "A=1")
    assert_refused(env, r, 2, "cannot reach the PostgreSQL server")
    assert "start it" in r.err and "Connection refused" in r.err


def test_a_refused_login_is_one_line_exit_2_without_the_password(env: Env) -> None:
    url = pg_url(user="no_such_role_x").replace("no_such_role_x@", "no_such_role_x:s3cret-pw@")
    for args in (("env", "set", "A=1"), ("env", "list")):
        r = env.run("--db", url, *args)
        assert_refused(env, r, 2, "refused the login as 'no_such_role_x'")
        assert "check the user and password" in r.err
        assert "s3cret-pw" not in r.text


def test_a_missing_database_says_how_to_create_it(env: Env) -> None:
    r = env.run("--db", pg_url(db="wst_no_such_db"), "env", "set", "A=1")
    assert_refused(env, r, 2, "database 'wst_no_such_db' does not exist")
    assert "createdb" in r.err


def test_an_empty_database_becomes_a_store_on_the_first_change(
    env: Env, pg_databases: object
) -> None:
    url = pg_databases(blank=True)  # type: ignore[operator]
    ok(env.run("--db", url, "env", "set", "A=1"))
    assert ok(env.run("--db", url, "env", "list", "-o", "json")).out.count("A") == 1
    with raw_db(Env(env.root, url)) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 2


def without_psycopg(tmp_path: Path) -> Path:
    """A directory holding this environment's packages (symlinks), psycopg left out."""
    hidden = tmp_path / "site-without-psycopg"
    hidden.mkdir()
    for base in site.getsitepackages():
        for entry in Path(base).iterdir():
            if entry.name.lower().startswith(("psycopg", "__pycache__")):
                continue
            target = hidden / entry.name
            if not target.exists():
                target.symlink_to(entry)
    return hidden


def run_isolated(env: Env, packages: Path, *args: str) -> Result:
    # -I: no PYTHONPATH, no user site; -S: not this venv's site-packages. `addsitedir` then
    # reads the .pth files among the symlinks (an editable install's finder is one).
    code = (
        "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wassette-state'; "
        "from wassette_state.cli.main import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(packages), *args],
        capture_output=True,
        text=True,
        env=env.environ(),
        cwd=env.root,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_a_missing_driver_names_the_extra_to_install(env: Env, tmp_path: Path) -> None:
    packages = without_psycopg(tmp_path)
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import site, sys; site.addsitedir(sys.argv[1]); import psycopg",
            str(packages),
        ],
        capture_output=True,
        text=True,
    )
    assert "No module named 'psycopg'" in probe.stderr  # the driver really is gone there
    for args in (("env", "set", "A=1"), ("state", "history")):
        r = run_isolated(env, packages, "--db", pg_url(), *args)
        assert_refused(env, r, 2, "the PostgreSQL driver (psycopg 3) is not installed")
        assert "pip install 'wassette-state[postgres]'" in r.err
    # SQLite needs no driver: the same interpreter works on a file store.
    ok(run_isolated(env, packages, "env", "set", "A=1"))


@pytest.mark.parametrize("url", ["postgres://postgres@127.0.0.1/x", "mysql://u@h/db"])
def test_url_schemes(env: Env, url: str) -> None:
    r = env.run("--db", url, "env", "list")
    if url.startswith("mysql"):
        assert_refused(env, r, 2, "unsupported database URL scheme 'mysql'")
    else:  # postgres:// is PostgreSQL too (here: a database that does not exist)
        assert_refused(env, r, 2, "database 'x' does not exist")
