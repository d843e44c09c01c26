"""The files a store keeps in Wassette's dirs: written after each commit under one lock, with a
marker that says up to which seq they are, repaired from the log after a crash.

A mixin of `service.Store`: everything here is about the files, nothing about deciding or
appending events.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from wassette_state.store.domain.errors import FilesNotWritten
from wassette_state.store.files import materialize
from wassette_state.store.files.materialize import Report as MaterializeReport
from wassette_state.store.persistence import db, log, migrate, readmodel

if TYPE_CHECKING:
    from wassette_state.store.files.config import Settings

logger = logging.getLogger("wassette")


class KeptFiles:
    """The files half of a store (see the module docstring)."""

    settings: Settings
    blobs: materialize.BlobStore
    last_tx: int | None
    _files_lock_held: bool

    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

    def head_seq(self) -> int:
        raise NotImplementedError

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

    def repair_files(self) -> MaterializeReport | None:
        """After a crash between commit and file writes the marker lags: write what changed
        since its seq (everything, without a marker for these dirs)."""
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
