"""A real `wassette-state watch` subprocess on an Env's dirs, and reading what it recorded from
the store's database (used by tests/test_watch.py and bench/live_watch.py)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import Env, wassette_exe


@dataclass
class Tx:
    id: int
    actor: str
    kind: str
    recorded_at_us: int
    types: list[str]


def transactions(db: Path, after: int = 0) -> list[Tx]:
    """Transactions after tx `after`, read straight from the SQLite file (a WAL reader never
    waits for a writer, and this costs no CLI start-up while polling)."""
    if not db.exists():
        return []
    uri = f"file:{db}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
        try:
            rows = conn.execute(
                "SELECT t.id, t.actor, t.kind, t.recorded_at, e.type FROM transactions t "
                "JOIN events e ON e.tx_id = t.id WHERE t.id > ? ORDER BY e.seq",
                (after,),
            ).fetchall()
        except sqlite3.OperationalError as e:  # the store is being created
            if "no such table" in str(e):
                return []
            raise
    out: dict[int, Tx] = {}
    for tx_id, actor, kind, at, type_ in rows:
        out.setdefault(tx_id, Tx(tx_id, actor, kind, at, [])).types.append(type_)
    return list(out.values())


def last_tx(db: Path) -> int:
    txs = transactions(db)
    return txs[-1].id if txs else 0


def wait_for(
    db: Path, after: int, want: set[str], timeout: float = 10.0, poll: float = 0.01
) -> list[Tx]:
    """Transactions after `after` until their event types cover `want` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        txs = transactions(db, after)
        if want <= {t for tx in txs for t in tx.types}:
            return txs
        if time.monotonic() > deadline:
            raise AssertionError(f"not recorded within {timeout}s: {want}; got {txs}")
        time.sleep(poll)


@dataclass
class WatchProcess:
    """`wassette-state -v watch -o json` running on the Env; stdout and stderr collected."""

    env: Env
    args: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()  # e.g. setpriv … to run it without some capabilities
    proc: subprocess.Popen[str] | None = None
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, ready_timeout: float = 30.0) -> WatchProcess:
        self.proc = subprocess.Popen(
            [*self.prefix, wassette_exe(), "-v", "watch", "-o", "json", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env.environ(),
            cwd=self.env.root,
        )
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            t = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)
        # The first scan runs once the dirs are watched (or known not to exist yet); ready
        # when it is done.
        self.wait_stderr("scan 1 (start):", ready_timeout)
        return self

    def wait_stderr(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on stderr: {''.join(self.err)[-3000:]}")
            time.sleep(0.01)

    def scans(self) -> int:
        return sum(1 for line in self.err if ": scan " in line)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.out) if line.strip()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Send `sig`; the exit code and how long the exit took."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"watch did not stop within {timeout}s after {sig}") from None
        took = time.monotonic() - start
        for t in self._threads:
            t.join(timeout=5)
        return code, took

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def __enter__(self) -> WatchProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pump(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)
