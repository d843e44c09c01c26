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
    StoreError,
    ValidationError,
)
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.state import State
from wassette_state.store.files import fsutil, materialize
from wassette_state.store.files.config import Settings
from wassette_state.store.persistence import db, log, migrate, readmodel
from wassette_state.store.persistence.schema import store_identity
from wassette_state.store.usecases.kept_files import KeptFiles, files_not_written

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


class Store(KeptFiles):
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


def _check_scope(scope: set[str], new: list[ev.Event]) -> None:
    """A scoped decision must not touch what it did not read: its read models would be wrong."""
    for e in new:
        cid = getattr(e, "component_id", None)
        if cid is not None and cid not in scope:
            raise StoreError(f"internal error: {e.type} for {cid!r} outside the command's scope")


def open_store(settings: Settings) -> Store:
    return Store(settings)
