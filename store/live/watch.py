"""`watch`: what Wassette (or anyone) changes in the component and secrets dirs, recorded as it
happens, as the `sync` transactions `state sync` records (this module only decides when to run
`drift.sync`; what counts as drift, and the locking that keeps the store's own writes from
counting, are drift.py's).

Why a change of ours is never recorded: `drift.sync` holds the files lock from its repair
through its scan to its commit and scans a state whose files are written, so after our own
materialization there is no difference between the files and the state, hence nothing to record.
Why cache rewrites are not even scanned for: Wassette rewrites `<id>.cwasm`, `downloads/` and
`<id>.metadata.json` on every load (the metadata with a new `created_at` each time, so not even
the same bytes), and none of them is state: drift never reads a known component's metadata, and
a new component's `.wasm` event triggers the scan that reads its metadata.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wassette_state.store.domain.errors import StoreError

logger = logging.getLogger("wassette")

DEFAULT_DEBOUNCE_MS = 100
# Each wait for changes ends after this long without any, so that the watch can check its dirs
# still exist (a deleted dir takes its inotify watch with it), retry a failed scan, and stop.
POLL_MS = 250
# A store busy for this long makes the scan give up and retry later (SIGTERM is then handled
# promptly, not after the CLI's 60 s busy timeout).
BUSY_TIMEOUT_MS = 1000
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)

# Names in the component dir whose change may be drift (see drift_scan.detect).
_STATE_SUFFIXES = (".wasm", ".policy.yaml", ".policy.meta.json")


@dataclass
class Recorded:
    """One transaction the watch recorded, with why it scanned (`start`, `change`, `retry`,
    `dir`: a watched dir appeared, vanished or was replaced)."""

    outcome: Any
    drifts: list[Any]
    trigger: str


@dataclass
class Watch:
    """Records drift of `store`'s dirs until `stop` is set.

    `on_recorded` is called once per transaction; `on_warning` once per distinct problem
    (a file it cannot read, drift it cannot adopt, a busy store) until it goes away.
    """

    store: Any
    stop: threading.Event
    on_recorded: Callable[[Recorded], None]
    on_warning: Callable[[str], None]
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    keep_secret_values: bool = False
    # Who made the changes a scan is about to record, when someone knows (`serve` reads it
    # from Wassette's log): (actor, command), or None for `filesystem` / `state sync`.
    attribute: Callable[[], tuple[str, str] | None] | None = None
    scans: int = 0
    _warned: set[str] = field(default_factory=set)
    _failures: int = 0
    _retry_at: float = 0.0
    _polling: bool = False

    def __post_init__(self) -> None:
        self.roots = _unique(
            [Path(self.store.settings.component_dir), Path(self.store.settings.secrets_dir)]
        )
        self.component_dir = Path(self.store.settings.component_dir)
        self.secrets_dir = Path(self.store.settings.secrets_dir)
        _short_busy_timeout(self.store)

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Scan once (what changed while nobody watched), then after every burst of changes."""
        trigger = "start"
        while not self.stop.is_set():
            ident = _identities(self.roots)
            existing = [r for r in self.roots if ident[r] is not None]
            if not existing:  # nothing to watch yet: scan once, then wait for a dir to appear
                self._scan(trigger)
                trigger = "dir"
                while not self.stop.is_set() and _identities(self.roots) == ident:
                    self._retry_if_due()
                    self.stop.wait(POLL_MS / 1000)
                continue
            self._watch(existing, ident, trigger)
            trigger = "dir"

    def _watch(self, existing: list[Path], ident: dict[Path, Any], trigger: str) -> None:
        """Until a watched dir changes identity: the watcher is started BEFORE the scan, so a
        change made during the scan is seen by the next one."""
        import watchfiles

        pending: str | None = trigger
        try:
            changes_iter = watchfiles.watch(
                *existing,
                watch_filter=None,
                debounce=max(self.debounce_ms, 1000),
                step=max(self.debounce_ms, 1),
                stop_event=self.stop,
                rust_timeout=POLL_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
                recursive=False,  # `downloads/` (Wassette's) is never looked into
                force_polling=self._polling or None,
            )
            for changes in changes_iter:
                if _identities(self.roots) != ident:
                    return  # deleted, recreated, appeared: watch again and scan everything
                if any(self._relevant(path) for _, path in changes):
                    pending = "change"
                if pending is not None and time.monotonic() >= self._retry_at:
                    pending = None if self._scan(pending) else "retry"
        except (FileNotFoundError, NotADirectoryError):
            return  # a dir vanished while the watcher started: watch again
        except OSError as e:  # e.g. the inotify watch limit: polling finds the same changes
            where = ", ".join(map(str, existing))
            if not self._polling:
                self._polling = True
                self._warn(f"cannot watch {where} ({e}); polling instead")
                return
            self._warn(f"cannot watch {where} ({e}); trying again")
            self.stop.wait(1.0)  # (an unreadable dir, say) until it can be watched

    # ------------------------------------------------------------ what a change means

    def _relevant(self, path: str) -> bool:
        """Whether a changed path can be drift (else: a cache rewrite, a temp file...)."""
        p = Path(path)
        name = p.name
        if name.startswith("."):  # temp files (ours: .NAME.*.tmp), `.staged/`
            return False
        parent = p.parent
        if parent == self.component_dir and name.endswith(_STATE_SUFFIXES):
            return True
        if parent == self.secrets_dir:
            return name.endswith(".yaml")
        return False

    # ------------------------------------------------------------ recording

    def _retry_if_due(self) -> None:
        if self._failures and time.monotonic() >= self._retry_at:
            self._scan("retry")

    def _scan(self, trigger: str) -> bool:
        """One `drift.sync`; False (and a retry scheduled) when it could not run."""
        from wassette_state.store.usecases.drift import sync

        self.scans += 1
        who = self.attribute() if self.attribute is not None else None
        try:
            if who is None:
                outcome, drifts = sync(self.store, self.keep_secret_values, unreadable_ok=True)
            else:
                outcome, drifts = sync(
                    self.store,
                    self.keep_secret_values,
                    unreadable_ok=True,
                    actor=who[0],
                    command=who[1],
                )
        except (StoreError, OSError) as e:
            self._failures += 1
            delay = RETRY_S[min(self._failures, len(RETRY_S)) - 1]
            self._retry_at = time.monotonic() + delay
            logger.info("scan %d (%s): failed, retrying in %gs", self.scans, trigger, delay)
            self._warn(f"{_message(e)}; retrying")
            return False
        # (the store keeps what it appended for telling Wassette at the end of a command: a
        # watch runs for days, and who tells Wassette about a change is `serve`'s call)
        self.store.appended.clear()
        done = f"tx {outcome.tx_id}" if outcome.tx_id is not None else "nothing to record"
        logger.info("scan %d (%s): %s", self.scans, trigger, done)
        if self._failures:
            logger.info("the scan succeeded again")
        self._failures = 0
        self._retry_at = 0.0
        self._note(d for d in drifts if not d.adoptable)
        if outcome.tx_id is not None:
            self.on_recorded(Recorded(outcome, drifts, trigger))
        return True

    def _note(self, refused: Iterable[Any]) -> None:
        """A warning per drift not adopted, once while it lasts."""
        now = {f"{d.component_id}: {d.what} (not adopted)" for d in refused}
        for message in sorted(now - self._warned):
            self.on_warning(message)
        # failures (not drift) stay until the next success clears them
        self._warned = now

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.on_warning(message)


def _message(e: BaseException) -> str:
    from wassette_state.store.domain.errors import BusyError, ConflictError

    if isinstance(e, (BusyError, ConflictError)):  # its own text names the CLI's timeout
        return "the store is busy (another process is writing to it)"
    if isinstance(e, OSError):
        name = e.filename if isinstance(e.filename, str) else None
        return f"cannot read {name}: {e.strerror}" if name else f"{e.strerror or e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _identities(roots: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """Each dir's (device, inode), None when it is not a dir: a change means re-watch it."""
    out: dict[Path, tuple[int, int] | None] = {}
    for root in roots:
        try:
            st = os.stat(root)
        except OSError:
            out[root] = None
            continue
        out[root] = (st.st_dev, st.st_ino) if os.path.isdir(root) else None
    return out


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _short_busy_timeout(store: Any) -> None:
    """The watch's SQLite connections wait BUSY_TIMEOUT_MS for the write lock, not the CLI's
    minute: a long writer makes a scan fail and retry, and never holds up a SIGTERM."""
    from sqlalchemy import event

    from wassette_state.store.persistence import db

    if db.sqlite_path(store.settings.db_url) is None:
        return

    @event.listens_for(store.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    store.engine.dispose()  # connections made before the listener get it too
