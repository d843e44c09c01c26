"""`wassette-state serve`: the real Wassette as a child on the store's dirs and env (issue 12.3).

- Other wassette-state commands find it through `<data dir>/serve.json` (its URL and this
  process's pid, removed on exit), so every change they record is served at once (store.live).
- `watch` (store.watch) runs inside it: what changes in the dirs is recorded as `sync`
  transactions within about a second. Wassette's log (stdout for `serve`) is passed through
  unchanged and read (store.wassette_log): a change the watch records within a few seconds of
  a changing built-in tool call is recorded by `mcp:<client name>` with the tool call as its
  command; other changes stay `filesystem`'s. Drift found before Wassette starts is recorded
  first, as `filesystem`'s.
- SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to Wassette (which runs in its own session,
  so a terminal's Ctrl-C reaches it once); the command exits with Wassette's status (128+N
  when a signal N ended it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from wassette_state.store.files.config import SERVE_FILE
from wassette_state.store.live import wassette_log

logger = logging.getLogger("wassette")

DEFAULT_BIND = "127.0.0.1:9001"  # Wassette 0.8.0's default
RECENT = 3.0  # seconds a logged tool call stays the likely cause of the next change seen
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
    def __init__(
        self,
        store: Any,
        argv: list[str],
        env: dict[str, str],
        url: str,
        keep_secret_values: bool = False,
    ) -> None:
        self.store = store
        self.keep_secret_values = keep_secret_values
        self.argv = argv
        self.env = env
        self.url = url
        self.recorded: list[int] = []
        self._reader = wassette_log.Reader()
        self._lock = threading.Lock()
        self._calls: list[tuple[float, wassette_log.Call]] = []

    @property
    def serve_file(self) -> Path:
        return Path(self.store.settings.data_dir) / SERVE_FILE

    def run(self) -> int:
        from wassette_state.store.files import fsutil
        from wassette_state.store.live.watch import Watch
        from wassette_state.store.usecases import drift

        # What changed while nobody supervised is nobody's agent's doing: recorded first, as
        # `state sync` records it (actor filesystem).
        outcome, _ = drift.sync(self.store, self.keep_secret_values)
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
            from wassette_state.store.domain.errors import ValidationError

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
        readers = [
            threading.Thread(target=self._read, args=(stream, out), daemon=True)
            for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))
        ]
        stop = threading.Event()
        watch = Watch(
            self.store,
            stop,
            self._recorded,
            _warn,
            keep_secret_values=self.keep_secret_values,
            attribute=self.take,
        )
        watcher = threading.Thread(target=watch.run, daemon=True)
        for t in (*readers, watcher):
            t.start()
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            for t in readers:
                t.join(timeout=5)
            return _status(code)
        finally:
            stop.set()
            watcher.join(timeout=10)
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
                    self._calls.append((time.monotonic(), call))

    def take(self) -> tuple[str, str] | None:
        """For the watch's next scan: (actor, command) of the tool calls Wassette logged in the
        last seconds, or None (the change is nobody's we know: `filesystem`)."""
        with self._lock:
            recent = [c for t, c in self._calls if time.monotonic() - t <= RECENT]
            self._calls.clear()
        if not recent:
            return None
        actors = sorted({c.actor for c in recent})
        actor = actors[0] if len(actors) == 1 else "mcp:" + "|".join(a[4:] for a in actors)
        return actor, "; ".join(dict.fromkeys(c.command for c in recent))

    def _recorded(self, r: Any) -> None:
        outcome = r.outcome
        self.recorded.append(outcome.tx_id)
        first = outcome.events[0]
        logger.warning(
            "wassette-state: recorded tx %d (%s) by %s: %s",
            outcome.tx_id,
            _events(len(outcome.events)),
            first.actor,
            first.command,
        )
        if not first.actor.startswith("mcp:"):
            # made by hand in the dirs, not through Wassette: Wassette serves it too
            from wassette_state.store.files.config import LiveTarget
            from wassette_state.store.live import notify

            target = LiveTarget(url=self.url, url_from="wassette-state serve")
            for line in notify.tell(self.store, outcome.events, target):
                _warn(line)


def _warn(message: str) -> None:
    logger.warning("wassette-state: %s", message)


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
