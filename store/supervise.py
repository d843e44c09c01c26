"""`wassette-state serve`: the real Wassette as a child on the store's dirs and env (issue 12.3).

- Other wassette-state commands find it through `<data dir>/serve.json` (its URL and this
  process's pid, removed on exit), so every change they record is served at once (store.live).
- Its log (stderr) is passed through unchanged and read (store.wassette_log): each changing
  built-in tool call an MCP client makes is recorded, once Wassette is done writing (a short
  quiet period), as a `sync` transaction by `mcp:<client name>` with the tool call as the
  command. What the call changed is what `state sync` finds in the files (store.drift), so a
  call that changed nothing records nothing.
- SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to Wassette (which runs in its own session,
  so a terminal's Ctrl-C reaches it once); the command exits with Wassette's status (128+N
  when a signal N ended it).

Hook for `watch` (issue 12.2): `Supervisor.record` is the one place a change Wassette made is
recorded; a watcher running beside it would record the same drift as `filesystem` first unless
it defers to `serve` (it can check `serving(data_dir)`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from wassette_state.store import wassette_log
from wassette_state.store.config import SERVE_FILE

logger = logging.getLogger("wassette")

DEFAULT_BIND = "127.0.0.1:9001"  # Wassette 0.8.0's default
QUIET = 0.15  # seconds without a new changing call before recording: Wassette has written
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def bind_address(args: list[str], config_bind: str | None) -> str:
    """Where the child listens: its `--bind-address`, else config.toml's, else the default."""
    for i, arg in enumerate(args):
        if arg == "--bind-address" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--bind-address="):
            return arg.partition("=")[2]
    return config_bind or DEFAULT_BIND


class Supervisor:
    def __init__(self, store: Any, argv: list[str], env: dict[str, str], url: str) -> None:
        self.store = store
        self.argv = argv
        self.env = env
        self.url = url
        self.calls: queue.Queue[wassette_log.Call | None] = queue.Queue()
        self.recorded: list[int] = []
        self._reader = wassette_log.Reader()
        self._lock = threading.Lock()
        self._open = 0

    @property
    def serve_file(self) -> Path:
        return Path(self.store.settings.data_dir) / SERVE_FILE

    def run(self) -> int:
        from wassette_state.store import drift, fsutil

        # What changed while nobody supervised is nobody's agent's doing: recorded first, as
        # `state sync` records it (actor filesystem).
        outcome, _ = drift.sync(self.store)
        self.store.appended.clear()
        if outcome.tx_id is not None:
            logger.warning(
                "wassette-state: recorded tx %d: drift found before Wassette started (%s)",
                outcome.tx_id,
                _events(len(outcome.events)),
            )
        try:
            proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            from wassette_state.store.errors import ValidationError

            raise ValidationError(f"cannot start {self.argv[0]}: {e.strerror or e}") from None
        fsutil.ensure_dir(self.serve_file.parent)
        fsutil.atomic_write(
            self.serve_file,
            json.dumps({"url": self.url, "pid": os.getpid(), "child": proc.pid}).encode(),
            mode=0o600,
            durable=False,
        )
        previous = {s: signal.signal(s, lambda n, _f: _forward(proc, n)) for s in FORWARDED}
        # Wassette `serve` logs on stdout (`run` on stderr): both are passed through and read.
        assert proc.stdout is not None and proc.stderr is not None
        self._open = 2
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            threading.Thread(target=self._read, args=(stream, out), daemon=True).start()
        try:
            self._loop()
            return _status(proc.wait())
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            with _suppress():
                if json.loads(self.serve_file.read_text()).get("pid") == os.getpid():
                    self.serve_file.unlink()

    def _read(self, stream: IO[bytes], out: Any) -> None:
        """Wassette's log: passed through as is, and read for changing tool calls."""
        for raw in stream:
            with _suppress():
                out.buffer.write(raw)
                out.buffer.flush()
            with self._lock:
                call = self._reader.feed(raw.decode("utf-8", "replace"))
            if call is not None:
                self.calls.put(call)
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self.calls.put(None)

    def _loop(self) -> None:
        pending: list[wassette_log.Call] = []
        last = 0.0
        while True:
            try:
                call = self.calls.get(timeout=QUIET / 3 if pending else None)
            except queue.Empty:
                call = None
                if time.monotonic() - last >= QUIET:
                    self.record(pending)
                    pending = []
                continue
            if call is None:  # Wassette closed its log: it is ending
                self.record(pending)
                return
            pending.append(call)
            last = time.monotonic()

    def record(self, calls: list[wassette_log.Call]) -> None:
        """Record what `calls` changed in the files, by their client."""
        if not calls:
            return
        from wassette_state.store import drift
        from wassette_state.store.errors import StoreError

        actors = sorted({c.actor for c in calls})
        commands = list(dict.fromkeys(c.command for c in calls))
        actor = actors[0] if len(actors) == 1 else "mcp:" + "|".join(a[4:] for a in actors)
        try:
            outcome, _ = drift.sync(self.store, actor=actor, command="; ".join(commands))
        except StoreError as e:
            logger.warning("wassette-state: could not record %s: %s", "; ".join(commands), e)
            return
        finally:
            self.store.appended.clear()  # Wassette made it: nothing to tell Wassette
        if outcome.tx_id is not None:
            self.recorded.append(outcome.tx_id)
            logger.warning(
                "wassette-state: recorded tx %d (%s) by %s: %s",
                outcome.tx_id,
                _events(len(outcome.events)),
                actor,
                "; ".join(commands),
            )


def _events(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def _forward(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        with _suppress():
            proc.send_signal(signum)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _suppress() -> contextlib.suppress:
    return contextlib.suppress(OSError, ValueError, KeyError)
