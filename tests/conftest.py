"""Shared fixtures: real stores in temp dirs and the installed `wassette` as a subprocess."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def wassette_exe() -> str:
    """The installed console script beside this Python (CI installs the package into a venv)."""
    candidate = Path(sys.executable).parent / "wassette-state"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("wassette-state")
    if found is None:
        raise RuntimeError("the wassette console script is not installed (pip install .)")
    return found


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Env:
    """A store location: database, component dir and secrets dir under one temp dir.

    `url` set: the store's database is that PostgreSQL database (the `backend` parameter)."""

    root: Path
    url: str | None = None

    @property
    def db(self) -> Path:
        """The SQLite file (tests that look at the file itself are SQLite-only)."""
        return self.root / "state.db"

    @property
    def db_arg(self) -> str:
        """What --db / WASSETTE_STATE_DB names: the SQLite file or the PostgreSQL URL."""
        return self.url or str(self.db)

    @property
    def data_dir(self) -> Path:
        """Blobs, the materialization marker, the env file: beside a SQLite file, in the data
        home (XDG_DATA_HOME/wassette) for a PostgreSQL store."""
        return self.root / "xdg-data" / "wassette" if self.url else self.root

    @property
    def backend(self) -> str:
        return "postgres" if self.url else "sqlite"

    @property
    def component_dir(self) -> Path:
        return self.root / "components"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def settings(self, actor: str = "tester@test") -> object:
        import dataclasses

        from wassette_state.store.files.config import resolve

        settings = resolve(self.db_arg, str(self.component_dir), str(self.secrets_dir), actor)
        if self.url:  # the data dir the CLI gets (its XDG_DATA_HOME), not this process's
            settings = dataclasses.replace(settings, data_dir=self.root / "xdg-data" / "wassette")
        return settings

    def store(self, actor: str = "tester@test") -> object:
        from wassette_state.store.usecases.service import Store

        return Store(self.settings(actor))  # type: ignore[arg-type]

    def environ(self, actor: str = "tester@test", **extra: str) -> dict[str, str]:
        """The environment the CLI runs in for this store (for `run`, and for children a test
        starts itself)."""
        # (no COLUMNS/LINES from the runner's terminal: tables are sized to it)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WASSETTE_") and k not in ("COLUMNS", "LINES")
        }
        env.update(
            WASSETTE_STATE_DB=self.db_arg,
            WASSETTE_COMPONENT_DIR=str(self.component_dir),
            WASSETTE_SECRETS_DIR=str(self.secrets_dir),
            WASSETTE_ACTOR=actor,
            HOME=str(self.root / "home"),
            XDG_DATA_HOME=str(self.root / "xdg-data"),
            XDG_CONFIG_HOME=str(self.root / "xdg-config"),
            # No Wassette runs on a test's store unless the test starts one (tests/test_live.py)
            WASSETTE_STATE_WASSETTE_URL="off",
        )
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        input: str | None = None,
        actor: str = "tester@test",
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Result:
        proc = subprocess.run(
            [wassette_exe(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.environ(actor, **(extra_env or {})),
            cwd=cwd or self.root,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str, fault: str, sleep: float = 4) -> subprocess.Popen[str]:
        """The CLI as a background process with a fault injected (fsutil.fault): `STEP:sleep`
        holds it at STEP, to line up a race; `wait_for(self.fault_log, "fire STEP sleep")`
        returns once it is there."""
        environ = self.environ(
            WASSETTE_STATE_FAULT=fault,
            WASSETTE_STATE_FAULT_SLEEP=str(sleep),
            WASSETTE_STATE_FAULT_LOG=str(self.fault_log),
        )
        return subprocess.Popen(
            [wassette_exe(), *args],
            env=environ,
            cwd=self.root,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def fault_log(self) -> Path:
        return self.root / "faults.log"


def wait_for(trace: Path, line: str, timeout: float = 60) -> None:
    """Until the fault log `trace` has `line` (a process reached a step)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trace.exists() and line in trace.read_text().splitlines():
            return
        time.sleep(0.05)
    raise AssertionError(f"{line!r} never reached")


# ------------------------------------------------------------------ backends

# `@BOTH` on a test (or `pytestmark = BOTH`): it runs on SQLite and on PostgreSQL. The `env`
# (and `env_factory`) of a postgres run is a database of its own, cloned from a migrated
# template and dropped afterwards.
BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    from tests import pg

    server = pg.Server.connect()  # fails (never skips) when the server cannot be reached
    yield server
    server.close()


@pytest.fixture
def pg_databases(request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Makes databases cloned from the migrated template (`blank=True`: empty ones); drops
    them after the test."""
    made: list[str] = []
    server = request.getfixturevalue("pg_server")

    def make(blank: bool = False) -> str:
        name = server.blank() if blank else server.clone()
        made.append(name)
        return server.url(name)

    yield make
    for name in made:
        server.drop(name)


def _env_at(root: Path, backend: str, request: pytest.FixtureRequest) -> Env:
    root.mkdir()
    if backend == "postgres":
        return Env(root, request.getfixturevalue("pg_databases")())
    return Env(root)


@pytest.fixture
def env(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Env:
    return _env_at(tmp_path / "site", backend, request)


@pytest.fixture
def env_factory(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Callable[[str], Env]:
    def make(name: str) -> Env:
        return _env_at(tmp_path / name, backend, request)

    return make


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (for 'byte-identical after a refusal' checks)."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def assert_refused(env: Env, result: Result, code: int = 2, contains: str | None = None) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.err
    assert "Traceback" not in result.text
    if contains is not None:
        assert contains in lines[0], lines[0]


@contextmanager
def opened(env: Env, actor: str = "tester@test") -> Iterator[Any]:
    """The env's library Store, closed afterwards."""
    store: Any = env.store(actor)
    try:
        yield store
    finally:
        store.close()


def all_events(env: Env) -> list[Any]:
    from wassette_state.store.persistence import log

    with opened(env) as s:
        return list(s.history(log.Query()))


def ok(result: Result) -> Result:
    """A command that must succeed: exit 0 and never a traceback."""
    assert result.code == 0, (result.code, result.out, result.err)
    assert "Traceback" not in result.text
    return result


def cli_history(env: Env, *args: str) -> list[dict[str, Any]]:
    """`state history -o json` rows."""
    import json

    out: list[dict[str, Any]] = json.loads(ok(env.run("state", "history", "-o", "json", *args)).out)
    return out


@contextmanager
def mounted_small_disk(mount: Path, size: str = "4m") -> Iterator[Path]:
    """A real small file system (tmpfs) at `mount`, to fill up: ENOSPC from the kernel, not
    from a test seam. Mounting needs root: without it the test fails (never skips)."""
    mount.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system `directory` is on, to the last block."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


@contextmanager
def raw_db(where: Path | Env) -> Iterator[Any]:
    """A plain driver connection in autocommit mode, as an attacker (or a bad disk) would edit
    the database: sqlite3 on the file, psycopg on a PostgreSQL env (`?` placeholders work on
    both)."""
    import sqlite3
    from contextlib import closing

    # (duck-typed: pytest loads this module as `conftest` and tests import `tests.conftest`)
    if getattr(where, "url", None):
        from tests import pg

        with pg.raw(where.url) as conn:  # type: ignore[union-attr]
            yield conn
        return
    path = getattr(where, "db", where)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def run_verify(store: Any) -> Any:
    """`state verify`'s report for an open store."""
    from wassette_state.store.usecases.verify import verify

    with store.reading() as conn:
        return verify(conn)


@pytest.fixture
def wassette(env: Env) -> Any:
    """The real Wassette 0.8.0 on this test's dirs (fails, never skips, if it can't be set up)."""
    from real_wassette import RealWassette

    return RealWassette(env)


def run_on_tty(
    env: Env, *args: str, answer: str | None = None, columns: int = 80, **extra: str
) -> tuple[int, str]:
    """The CLI with stdin, stdout and stderr on a pseudo-terminal `columns` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [wassette_exe(), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env.environ(TERM="dumb", **extra),
        cwd=env.root,
        start_new_session=True,  # the pty becomes its controlling terminal, as in a shell
    )
    os.close(slave)
    if answer is not None:
        os.write(master, f"{answer}\n".encode())
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode().replace("\r\n", "\n")
