"""The facade the CLI calls: open a store, run a command as one transaction, read any point."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.errors import (
    BusyError,
    ConflictError,
    FilesNotWritten,
    StoreError,
    ValidationError,
)
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.state import State
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.files.config import Settings
from wassette_state.store.files.materialize import Report as MaterializeReport
from wassette_state.store.persistence import db, log, migrate, readmodel
from wassette_state.store.persistence.schema import store_identity

if TYPE_CHECKING:
    from wassette_state.store.domain import events as ev

logger = logging.getLogger("wassette")

MAX_RETRIES = 20


@dataclass
class Decision:
    """What a command decided: events to append (maybe none) and what to tell the user."""

    events: list[ev.Event]
    details: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    tx_id: int | None
    events: list[log.StoredEvent]
    state: State
    summary: dict[str, Any]


class Store:
    """One store: a database plus the directories its state is materialized into."""

    def __init__(self, settings: Settings, *, writing: bool = True) -> None:
        """`writing=False`: the command only reads, so it never creates the store (a mistyped
        --db is refused) and it can read a read-only copy."""
        self.settings = settings
        try:
            self.engine = migrate.open_engine(settings.db_url, writing=writing)
        except sa_exc.DatabaseError as e:
            raise ValidationError(
                f"{settings.db_url} is not a usable wassette-state database: "
                f"{db._first_line(e.orig)}"
            ) from e
        self._lineage: str | None = None
        # The command line as the user typed it (the CLI sets it, secret values left out): what
        # the user's own transactions record instead of the library's description.
        self.command_line: str | None = None
        # For a Ctrl-C's message: the transaction this process recorded, or that one was
        # being recorded when it came.
        self.last_tx: int | None = None
        self.committing = False
        # Every event this Store appended, for telling a running Wassette after the command
        # (store.live); a long-lived user (a watcher) may clear it.
        self.appended: list[log.StoredEvent] = []
        self.blobs = materialize.BlobStore(settings.blob_dir)
        self._dirs_noted = False
        self._files_lock_held = False
        marker = self.read_marker()
        if marker is not None and marker.get("data_dir") == str(settings.data_dir):
            # (a marker that came with a copy of the store names the original's dirs)
            self.note_moved_dirs(marker)

    # ------------------------------------------------------------ files

    @property
    def marker_path(self) -> Any:
        return self.settings.data_dir / "materialized.json"

    def read_marker(self) -> dict[str, Any] | None:
        import json

        try:
            doc = json.loads(self.marker_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _marker_seq(self) -> int | None:
        """The seq this store's files are written up to in these dirs (None: unknown)."""
        marker = self.own_marker()
        if marker is None or marker.get("component_dir") != str(self.settings.component_dir):
            return None
        seq = marker.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None

    def own_marker(self) -> dict[str, Any] | None:
        """The marker when it was written for this database: stores that share a data dir (a
        PostgreSQL store and the SQLite one it was copied from) each judge only their own."""
        marker = self.read_marker()
        if marker is None or "database" not in marker:
            return marker
        want = migrate.marker_identity(self.settings.db_url).get("database")
        return marker if want is None or marker["database"] == want else None

    def materialize(
        self, ids: set[str] | None = None, env: bool = False, sweep: bool = False
    ) -> MaterializeReport:
        """Bring the component dir (and, with `env` or for all ids, the env file) in line with
        the current state, serialized across processes.

        The state is read afresh under the lock, so a slower process can never write files of
        a state that a faster one has already replaced. With `ids`, the components changed
        since the marker's seq are written too (another writer between its commit and its
        files, or one killed there), so the marker can say "written up to the head" truthfully;
        without a marker for these dirs to go on, everything is. `sweep`: temp files of a
        killed writer go too (a full run always sweeps).
        """
        import json

        from wassette_state.store.domain.state import INSTANCE_STREAM
        from wassette_state.store.files import envfile, fsutil

        fsutil.ensure_dir(self.settings.data_dir)
        with self.files_locked():
            done = self._marker_seq()
            with self.reading() as conn:
                seq = log.head(conn)[0]
                if ids is not None and (done is None or done > seq):
                    ids = None  # no marker to go on, or one ahead of this log: everything
                if ids is not None and done is not None and done < seq:
                    since = log.streams_between(conn, done, seq)
                    env = env or INSTANCE_STREAM in since
                    ids = ids | (since - {INSTANCE_STREAM})
                env = env or ids is None
                targets = readmodel.known_components(conn) if ids is None else ids
                state = readmodel.state_at(
                    conn, only=targets if ids is not None else None, settings=env
                )
                # (a component the read models lack but the log has is a lost row, not a
                # detach: its files stay)
                targets -= _log_says_exist(conn, targets - set(state.components))
            if ids is None or sweep:
                # A writer killed mid-write left its marker behind, so its temp files are
                # found by the repair that the lagging marker triggers.
                fsutil.remove_stale_temps(self.settings.component_dir)
            # (durable before the marker says they are current)
            try:
                report = materialize.materialize(
                    state, self.settings.component_dir, self.blobs, targets
                )
            except fsutil.DirReplaced as e:
                raise files_not_written(self.last_tx, e) from None
            marker: dict[str, Any] = {
                "component_dir": str(self.settings.component_dir),
                "secrets_dir": str(self.settings.secrets_dir),
                "data_dir": str(self.settings.data_dir),
                "seq": seq,
                **migrate.marker_identity(self.settings.db_url),
            }
            old = self.read_marker() or {}
            if env:
                rendered = envfile.render(state.environment)
                envfile.write(self.settings.env_file, rendered)
                marker["env_sha256"] = rendered.sha256
            elif "env_sha256" in old:
                marker["env_sha256"] = old["env_sha256"]
            # Not fsynced: a marker lost in a crash only lags, and a lagging marker means
            # "repair", which is always safe.
            fsutil.atomic_write(
                self.marker_path, json.dumps(marker).encode(), mode=0o600, durable=False
            )
        return report

    @property
    def in_flight_path(self) -> Any:
        return self.settings.data_dir / "in-flight"

    def in_flight(self) -> contextlib.AbstractContextManager[None]:
        """Held by a writer from before its commit until its files are written: a repair that
        finds the marker behind while another holds it is finishing that writer's change,
        not recovering from a crash (and says nothing)."""
        from wassette_state.store.files import fsutil

        fsutil.ensure_dir(self.settings.data_dir)
        return db.file_lock(self.in_flight_path, shared=True)

    @contextlib.contextmanager
    def files_locked(self) -> Iterator[None]:
        """The lock that serializes writing the files across processes; reentrant here, so a
        sync can hold it from its repair through its scan to its commit."""
        if self._files_lock_held:
            yield
            return
        from wassette_state.store.files import fsutil

        fsutil.ensure_dir(self.settings.data_dir)
        with db.file_lock(self.settings.data_dir / "materialize"):
            self._files_lock_held = True
            try:
                yield
            finally:
                self._files_lock_held = False

    def state_and_head(self, scope: set[str] | None = None) -> tuple[State, int]:
        """The state and the seq it is at, read in one snapshot."""
        lazy = readmodel.LazyBodies(self.engine) if scope is None else None
        with self.reading() as conn:
            state = readmodel.state_at(conn, None, only=scope, settings=True, lazy=lazy)
            return state, log.head(conn)[0]

    def note_moved_dirs(self, recorded: dict[str, Any] | None) -> None:
        """One warning line when the dirs this store last wrote are not the ones resolved now."""
        from wassette_state.store.files.config import moved_dirs_warning

        if self._dirs_noted or recorded is None:
            return
        message = moved_dirs_warning(self.settings, recorded)
        if message:
            self._dirs_noted = True
            logger.warning("%s", message)

    def check_dirs(self) -> None:
        """Before anything is recorded: the dirs the state is written into must not be
        symlinks (a planted link would make the tool write elsewhere)."""
        from wassette_state.store.domain.errors import ValidationError

        for what, path in (
            ("component dir", self.settings.component_dir),
            ("secrets dir", self.settings.secrets_dir),
        ):
            if path.is_symlink():
                raise ValidationError(
                    f"the {what} {path} is a symbolic link; refusing to write through it"
                )

    def repair_files(self) -> MaterializeReport | None:
        """After a crash between commit and file writes, the marker lags: redo everything."""
        from wassette_state.store.files import envfile
        from wassette_state.store.usecases import staging

        staging.recover(self)  # secrets files staged by an interrupted command
        marker = self.read_marker()
        head = self.head_seq()
        if (
            marker is not None
            and marker.get("component_dir") == str(self.settings.component_dir)
            and marker.get("seq") == head
        ):
            if "env_sha256" not in marker or envfile.is_current(
                self.settings.env_file, marker["env_sha256"]
            ):
                return None
            logger.warning("repaired the env file %s", self.settings.env_file)
            return self.materialize(set(), env=True)
        if marker is None and head == 0:
            return None
        in_flight = db.held_elsewhere(self.in_flight_path)
        with self.files_locked():
            # A marker behind the log is most often another writer between its commit and
            # its files (it waits for this lock): once it is done, nothing is left to repair.
            if self.files_current(self.head_seq()):
                return None
            # Behind: what changed since (materialize adds it); no marker: everything.
            report = self.materialize(set(), sweep=not in_flight)
        if (report.written or report.removed) and not in_flight:
            logger.warning(
                "repaired component files: %d written, %d removed",
                len(report.written),
                len(report.removed),
            )
        return report

    def files_current(self, head: int) -> bool:
        """The marker says the files (the env file too) are written up to `head`, in these
        dirs: nothing to repair."""
        from wassette_state.store.files import envfile

        marker = self.read_marker()
        if (
            marker is None
            or marker.get("component_dir") != str(self.settings.component_dir)
            or marker.get("seq") != head
        ):
            return False
        return "env_sha256" not in marker or envfile.is_current(
            self.settings.env_file, marker["env_sha256"]
        )

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ reading

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        with db.read_tx(self.engine) as conn:
            yield conn

    @property
    def lineage(self) -> str:
        if self._lineage is None:
            with self.reading() as conn:
                self._lineage = conn.execute(select(store_identity.c.lineage)).scalar_one()
        return self._lineage

    def state(self, at: int | None = None, scope: set[str] | None = None) -> State:
        """The state at `at`; with a `scope`, only those components (plus the settings)."""
        lazy = readmodel.LazyBodies(self.engine) if scope is None else None
        with self.reading() as conn:
            return readmodel.state_at(conn, at, only=scope, settings=True, lazy=lazy)

    def component(self, component_id: str) -> Any:
        """One current component (reads only its rows), or NotFound."""
        from wassette_state.store.domain.errors import unknown_component
        from wassette_state.store.domain.state import check_id

        check_id(component_id)
        with self.reading() as conn:
            comp = readmodel.state_at(conn, None, only=component_id).components.get(component_id)
        if comp is None:
            raise unknown_component(component_id)
        return comp

    def component_ids(self) -> set[str]:
        with self.reading() as conn:
            return readmodel.current_component_ids(conn)

    def head_seq(self) -> int:
        with self.reading() as conn:
            return log.head(conn)[0]

    def history(self, query: log.Query) -> list[log.StoredEvent]:
        with self.reading() as conn:
            return log.read(conn, query)

    # ------------------------------------------------------------ writing

    def execute(
        self,
        command: str,
        decide: Callable[[State], Decision],
        *,
        kind: str = "change",
        reason: str | None = None,
        retry: bool = False,
        after: Callable[[State, list[log.StoredEvent]], None] | None = None,
        actor: str | None = None,
        scope: set[str] | None = None,
        stage: Any = None,
    ) -> Outcome:
        """Decide on a snapshot, append with a version check, then materialize.

        A command that is safe to re-decide (`retry=True`) decides again on a conflict, then under
        the write lock (so it cannot lose twice); others
        report the conflict (exit 3) so the user can look at what changed. A command about
        known components passes them as `scope`: it then decides on those components (and the
        settings) only, which keeps a one-component change cheap on a store of thousands.
        """
        self.check_dirs()
        if scope and kind != "sync":
            from wassette_state.store.usecases import drift

            # (it repairs the files first, under the secrets and files locks)
            keep = bool(getattr(stage, "keep_values", False))
            drift.record_first(self, scope, command, keep)
        else:
            self.repair_files()
        attempts = MAX_RETRIES if retry else 1
        for attempt in range(1, attempts + 1):
            # A retry decides under the write lock, so it cannot lose the race again: with many
            # writers on one stream, deciding on a snapshot each time could lose every time.
            under_lock = attempt > 1
            self.committing = False
            # Lock order, kept by every writer: the stage's files, then the database. Held
            # until the stage is settled.
            order = contextlib.ExitStack()
            if under_lock and stage is not None:
                order.enter_context(stage.lock())
            flight = contextlib.ExitStack()  # from before the commit until the files are written
            order.callback(flight.close)
            try:
                with contextlib.ExitStack() as held:
                    wconn = None
                    if under_lock:
                        flight.enter_context(self.in_flight())
                        wconn = held.enter_context(db.write_tx(self.engine))
                    with contextlib.ExitStack() as reading:
                        conn = wconn if wconn is not None else reading.enter_context(self.reading())
                        base, decision, expected = self._decide(conn, decide, scope)
                    if not decision.events:
                        order.close()
                        return Outcome(None, [], base, decision.summary)
                    if stage is not None:  # secrets files: staged now, put in place after commit
                        decision.details = {**decision.details, **stage.prepare(base, decision)}
                    fsutil.fault("decided")  # (the fault-injection tests' seam)
                    self.committing = True
                    if wconn is None:
                        flight.enter_context(self.in_flight())
                        wconn = held.enter_context(db.write_tx(self.engine))
                    held.enter_context(gc_paused())
                    appended = log.append(
                        wconn,
                        log.TxInfo(
                            actor=actor or self.settings.actor,
                            command=self._recorded(command, actor),
                            kind=kind,
                            reason=reason,
                            details=decision.details,
                        ),
                        decision.events,
                        expected,
                    )
                    readmodel.apply(
                        wconn, appended.events, base, decision.events, appended.metadata
                    )
            except BaseException as e:
                if not self.committing:  # deciding failed (or was refused): nothing staged
                    order.close()
                    raise
                try:
                    if stage is not None:  # committed or not? the log says (Ctrl-C after commit)
                        stage.settle(None)
                finally:
                    order.close()
                # A lost stream race is decided again; a lock wait already took its bound.
                busy = isinstance(e, BusyError)
                if not isinstance(e, ConflictError) or busy or attempt == attempts:
                    raise
                logger.info("conflict on attempt %d; deciding again under the lock", attempt)
                continue
            self.committing = False
            self.last_tx = appended.tx_id
            self.appended.extend(appended.events)
            writing = flight.pop_all()  # held until the files are written, below
            with order:
                if stage is not None:
                    stage.settle(True)
            with writing:
                return self._written(appended, decision, base, after)
        raise StoreError("unreachable")  # pragma: no cover

    def _written(
        self,
        appended: log.Appended,
        decision: Decision,
        base: State,
        after: Callable[[State, list[log.StoredEvent]], None] | None,
    ) -> Outcome:
        """After the commit: the committed change's files, and its outcome."""
        logger.info(
            "tx %d appended %d events (seq %d..%d)",
            appended.tx_id,
            len(appended.events),
            appended.events[0].seq,
            appended.events[-1].seq,
        )
        from wassette_state.store.domain.fold import project

        state = project(decision.events, base)
        if after is not None:
            after(state, appended.events)
        touched = {e.component_id for e in appended.events if e.component_id}
        env = any(e.type in ("env.set", "env.unset") for e in appended.events)
        try:
            from wassette_state.store.files import fsutil

            fsutil.fault("committed")
            self.materialize(touched, env=env)
        except OSError as e:
            raise files_not_written(appended.tx_id, e) from e
        return Outcome(appended.tx_id, appended.events, state, decision.summary)

    def _decide(
        self, conn: Connection, decide: Callable[[State], Decision], scope: set[str] | None
    ) -> tuple[State, Decision, dict[str, int]]:
        """The decision on the state `conn` sees, and the stream versions it was based on."""
        # Unscoped decisions (attach, import, rollback) compare components by content hash:
        # texts are fetched only if a decision reads them.
        lazy = readmodel.LazyBodies(self.engine) if scope is None else None
        base = readmodel.state_at(conn, only=scope, settings=True, lazy=lazy)
        decision = decide(base)
        if scope is not None:
            _check_scope(scope, decision.events)
        if decision.events:
            decision.events = self._with_paths(base, decision.events)
        streams = sorted({log.stream_of(e) for e in decision.events})
        return base, decision, log.stream_versions(conn, streams)

    def _recorded(self, command: str, actor: str | None) -> str:
        """The user's command line when there is one (a command may extend it, as undo adds
        the transaction it undoes); the library's description otherwise, and always for what
        another actor records (sync's `filesystem`)."""
        if self.command_line is None or actor is not None or command.startswith(self.command_line):
            return command
        return self.command_line

    def _with_paths(self, base: State, new: list[ev.Event]) -> list[ev.Event]:
        """The log records where the state is materialized, whenever that changes."""
        want = (str(self.settings.component_dir), str(self.settings.secrets_dir))
        have = (base.paths.component_dir, base.paths.secrets_dir) if base.paths else None
        if have == want:
            return new
        if have is not None:
            self.note_moved_dirs({"component_dir": have[0], "secrets_dir": have[1]})
        from wassette_state.store.domain import events as ev

        return [ev.PathsSet(component_dir=want[0], secrets_dir=want[1]), *new]

    # ------------------------------------------------------------ maintenance

    def rebuild(self) -> int:
        """Recompute the read models from the log under the write lock."""
        with db.write_tx(self.engine) as conn, gc_paused():
            count = 0

            def counted() -> Iterator[log.StoredEvent]:
                nonlocal count
                for se in log.iter_all(conn):
                    count += 1
                    yield se

            readmodel.write_all(conn, readmodel.derive(counted(), validate=False))
        # The files follow the rebuilt read models (a lost row may have kept them from it).
        self.materialize(None)
        return count


def files_not_written(tx_id: int | None, e: OSError) -> FilesNotWritten:
    """Exit 5: what was recorded, the path and what went wrong, and what happens next."""
    from wassette_state.store.files.fsutil import DirReplaced

    done = f"recorded as tx {tx_id}, but " if tx_id is not None else ""
    if isinstance(e, DirReplaced):
        return FilesNotWritten(
            f"{done}Wassette's files were not all written: {e.filename} {e.strerror}; nothing "
            "was written through it: put the directory back, and the next command writes them"
        )
    where = f"{e.filename}: " if e.filename else ""
    return FilesNotWritten(
        f"{done}writing Wassette's files failed ({where}{e.strerror or e}); the next command "
        "repairs them"
    )


def _log_says_exist(conn: Connection, ids: set[str]) -> set[str]:
    """Of components the read models lack, those whose last event is not a detach: a repair
    must not delete their files (a lost read-model row is not a detach; rebuild repairs it)."""
    alive = set()
    for cid in sorted(ids):
        last = log.read(conn, log.Query(stream=cid, limit=1, reverse=True))
        if last and last[0].type != "component.detached":
            alive.add(cid)
    if alive:
        logger.warning(
            "the read models lack %d component(s) the log has (%s); their files are kept: "
            "run 'wassette-state rebuild'",
            len(alive),
            ", ".join(sorted(alive)[:5]),
        )
    return alive


def _check_scope(scope: set[str], new: list[ev.Event]) -> None:
    """A scoped decision must not touch what it did not read: its read models would be wrong."""
    for e in new:
        cid = getattr(e, "component_id", None)
        if cid is not None and cid not in scope:
            raise StoreError(f"internal error: {e.type} for {cid!r} outside the command's scope")


def open_store(settings: Settings) -> Store:
    return Store(settings)
