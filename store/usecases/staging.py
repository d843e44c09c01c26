"""Two-phase changes of secrets files (DESIGN §3.3).

Secret values are not in the store, so a secrets file cannot be repaired from the log. A
command that changes one therefore stages the new file before its commit and puts it in place
after it:

1. under the secrets lock, the new file is written and fsynced as
   `<secrets dir>/.staged/<lineage>.<after tx>.<token>.<file name>` (empty: the file goes);
2. the transaction records the token (`details.secrets_staged`), so the commit says whether
   the staged file is the truth;
3. after the commit the staged file is renamed over `<file name>` (or the file is removed).

Whatever interrupts this (an OSError, Ctrl-C, SIGKILL), the next command settles what is left
under the same lock, so every staged file it finds belongs to a process that is gone: a staged
file whose transaction committed is put in place, one whose transaction did not is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets as random
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from wassette_state.store.domain.errors import FilesNotWritten, StoreError, ValidationError
from wassette_state.store.files import fsutil
from wassette_state.store.files import secrets as secret_files

if TYPE_CHECKING:
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.state import State
    from wassette_state.store.usecases.service import Decision, Store

logger = logging.getLogger("wassette")

STAGE_DIR = ".staged"
DETAILS_KEY = "secrets_staged"

# component id -> the whole new map of its secrets file ({} : the file goes)
Plan = dict[str, dict[str, str]]


class SecretsNotUpdated(FilesNotWritten):
    """The transaction is recorded but its secrets file is not in place yet (exit 5): the
    staged file stays, and the next command puts it there."""


class LinkedTarget(OSError):
    """A secrets file that became a symbolic link after the change checked it: never
    replaced (nor removed), at rename time too."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            errno.EEXIST,
            "is a symbolic link now (a mounted Secret?); refusing to replace it",
            str(path),
        )


# ------------------------------------------------------------------ the lock


_local = threading.local()


@contextlib.contextmanager
def locked(store: Store) -> Iterator[None]:
    """The secrets lock, re-entrant within a thread. Taking it settles what a dead writer left:
    staged files of changes it committed or not, and temp files holding secret values."""
    from wassette_state.store.persistence import db

    depths: dict[str, int] = _local.__dict__.setdefault("depths", {})
    key = str(store.settings.data_dir)
    if depths.get(key):
        depths[key] += 1
        try:
            yield
        finally:
            depths[key] -= 1
        return
    fsutil.ensure_dir(store.settings.data_dir)
    with db.file_lock(store.settings.data_dir / "secrets"):
        depths[key] = 1
        try:
            fsutil.remove_stale_temps(store.settings.secrets_dir)
            _settle_left_over(store)
            yield
        finally:
            depths[key] = 0


def recover(store: Any) -> None:
    """Run by every command before it reads or changes anything: settle staged files left by
    an interrupted command. Costs one failed directory listing when there are none."""
    try:
        if not os.listdir(store.settings.secrets_dir / STAGE_DIR):
            return
    except (FileNotFoundError, NotADirectoryError):
        return
    with locked(store):  # settles them on entry (unless this thread holds it already)
        pass


def _settle_left_over(store: Store) -> None:
    stage_dir = store.settings.secrets_dir / STAGE_DIR
    if stage_dir.is_symlink():
        return  # not one this tool made: nothing in it is ever put in place
    try:
        names = sorted(os.listdir(stage_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    if not names:
        with contextlib.suppress(OSError):  # a writer died before staging anything
            os.rmdir(stage_dir)
        return
    mine = []
    for name in names:
        parsed = _parse(name)
        if parsed is None or parsed.lineage != store.lineage:
            continue  # another store's (a shared secrets dir): not ours to settle
        mine.append(parsed)
    if not mine:
        return
    committed = _committed_tokens(store, min(p.after for p in mine))
    mine.sort(key=lambda p: (p.after, p.name))
    try:
        secrets = fsutil.Dir(store.settings.secrets_dir, create=False)
    except OSError as e:
        raise _unsettled(store.settings.secrets_dir, e) from None
    with secrets, secrets.sub(STAGE_DIR) as stage:
        for p in mine:
            target = store.settings.secrets_dir / p.file_name
            try:
                if p.token in committed:
                    _promote(stage, p.name, secrets, p.file_name, "recover")
                else:
                    _discard(stage, p.name, "recover")
            except OSError as e:
                # Going on could stage a change on top of the old file, which this one would
                # then overwrite: stop here.
                raise _unsettled(target, e) from None
            if p.token in committed:
                logger.warning(
                    "finished the change of %s recorded in tx %d (the command that made it "
                    "was interrupted)",
                    target,
                    committed[p.token],
                )
            else:
                logger.warning(
                    "discarded a change of %s that was never recorded (an interrupted command)",
                    target,
                )
        try:
            _sync_dirs(secrets, "recover")
        except OSError as e:
            raise StoreError(
                f"cannot sync the secrets dir ({e.strerror}); nothing was changed"
            ) from None


def _unsettled(target: Path, e: OSError) -> StoreError:
    if isinstance(e, (LinkedTarget, fsutil.DirReplaced)):
        what = f"{e.filename} {e.strerror}"
    else:
        what = f"{target} ({e.strerror})"
    return StoreError(
        f"an interrupted change of the secrets file could not be settled: {what}; nothing "
        "was changed"
    )


@dataclass(frozen=True)
class _Staged:
    name: str
    lineage: str
    after: int
    token: str
    file_name: str


def _parse(name: str) -> _Staged | None:
    parts = name.split(".", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3]:
        return None
    return _Staged(name, parts[0], int(parts[1]), parts[2], parts[3])


def _committed_tokens(store: Store, after: int) -> dict[str, int]:
    """Tokens of staged changes recorded by transactions after tx `after` → their tx id."""
    import json

    from wassette_state.store.persistence.schema import transactions

    query = select(transactions.c.id, transactions.c.details).where(
        transactions.c.id > after, transactions.c.details.like(f'%"{DETAILS_KEY}"%')
    )
    out: dict[str, int] = {}
    with store.reading() as conn:
        for tx_id, details in conn.execute(query):
            try:
                token = json.loads(details)[DETAILS_KEY]["token"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(token, str):
                out[token] = int(tx_id)
    return out


# ------------------------------------------------------------------ file steps


def _promote(stage: fsutil.Dir, name: str, secrets: fsutil.Dir, target: str, phase: str) -> None:
    """Put a staged file in place (idempotent: a second run after a crash finishes it), only
    while both dirs are still the ones opened, and never over a link: checked right before
    the rename (or removal), not only when the change started."""
    st = stage.lstat(name)
    if st is None:
        return
    gone = st.st_size == 0  # the file goes: as Wassette does when the last key is deleted
    fsutil.fault(f"{phase}.unlink" if gone else f"{phase}.rename")
    stage.check()  # (and the secrets dir it is in)
    if secrets.is_link(target):
        raise LinkedTarget(secrets.path / target)
    if gone:
        secrets.remove(target)
        fsutil.fault(f"{phase}.unlink-staged")
        stage.remove(name)
    else:
        stage.rename_to(name, secrets, target)


def _discard(stage: fsutil.Dir, name: str, phase: str) -> None:
    fsutil.fault(f"{phase}.discard")
    stage.remove(name)


def _sync_dirs(secrets: fsutil.Dir, phase: str) -> None:
    """The renames and removals are on disk; the emptied staging dir goes (the secrets dir is
    Wassette's: it holds `<id>.yaml` files and nothing else between commands)."""
    fsutil.fault(f"{phase}.fsync-dir")
    secrets.fsync()
    with contextlib.suppress(OSError):  # not empty (another store's), or gone
        os.rmdir(STAGE_DIR, dir_fd=secrets.fd)
    secrets.check()


def _write_staged(stage: fsutil.Dir, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags, 0o600, dir_fd=stage.fd)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        half = len(view) // 2
        _write_all(fd, view[:half])
        fsutil.fault("stage.write")  # a disk that fills up mid-write leaves half a file
        _write_all(fd, view[half:])
        fsutil.fault("stage.fsync")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        stage.remove(name)
        raise
    os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


# ------------------------------------------------------------------ one command's change


def render(values: dict[str, str]) -> bytes:
    """The bytes `secrets.write_values` writes for these values (b"" : no file)."""
    return secret_files.render(values) if values else b""


class SecretsChange:
    """A command's change of secrets files, staged before its commit (`Store.execute(stage=)`).

    `plan(base, events)` runs under the secrets lock, once the events are decided: it reads
    the files it changes and returns their new contents. `prepare` stages them and returns the
    details the transaction records; `settle(committed)` puts them in place or discards them
    (`committed=None`: unknown, e.g. interrupted around the commit, so the log is asked).
    Both dirs are opened once (fsutil.Dir): a secrets dir swapped for a link meanwhile gets
    nothing, before the commit (refused, exit 2) or after it (exit 5, left staged).
    """

    def __init__(
        self,
        store: Store,
        plan: Callable[[State, list[ev.Event]], Plan],
        keep_values: bool = False,
    ) -> None:
        self.store = store
        self.plan = plan
        self.keep_values = keep_values  # the command keeps values of keys that leave
        self.token = ""
        self.after = 0
        self.staged: list[tuple[str, str]] = []  # (staged file, target) names
        self._dirs: tuple[fsutil.Dir, fsutil.Dir] | None = None  # (secrets dir, staging dir)
        self._lock: contextlib.ExitStack | None = None

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The lock `prepare` takes, for a caller that must hold it before the database's write
        lock (the order every writer keeps: secrets, then the database)."""
        return locked(self.store)

    def prepare(self, base: State, decision: Decision) -> dict[str, Any]:
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(locked(self.store))
            wanted = self.plan(base, decision.events)
            if not wanted:
                return {}
            self._stage(wanted)
            fsutil.fault("commit.before")
            if self._dirs is not None:
                self._dirs[1].check()
        except BaseException as e:
            self._discard_all()
            self._unlock()
            if isinstance(e, fsutil.DirReplaced):
                raise ValidationError(f"{e.filename} {e.strerror}; nothing was changed") from None
            if isinstance(e, OSError):
                raise StoreError(
                    f"cannot write the new secrets file ({e.strerror}); nothing was changed"
                ) from None
            raise
        return {DETAILS_KEY: {"token": self.token, "files": len(self.staged)}}

    def _stage(self, wanted: Plan) -> None:
        from wassette_state.store.persistence import log

        secrets_dir = self.store.settings.secrets_dir
        for cid in sorted(wanted):
            refuse_link(secrets_dir, cid)
        changes = []
        for cid in sorted(wanted):
            target = secret_files.secrets_file(secrets_dir, cid)
            data = render(wanted[cid])
            current = secret_files.read_raw(target)
            if (data or None) == current:
                continue  # the file already says this
            changes.append((target.name, data))
        if not changes:
            return
        with self.store.reading() as conn:
            self.after = after = log.head(conn)[2]
        self.token = random.token_hex(8)
        secrets = fsutil.Dir(secrets_dir, 0o700)
        self._dirs = (secrets, secrets.sub(STAGE_DIR, 0o700))
        stage = self._dirs[1]
        for target_name, data in changes:
            staged = f"{self.store.lineage}.{after}.{self.token}.{target_name}"
            _write_staged(stage, staged, data)
            self.staged.append((staged, target_name))
        fsutil.fault("stage.fsync-dir")
        stage.fsync()

    def settle(self, committed: bool | None) -> None:
        try:
            if not self.staged:
                return
            if committed is None:
                try:
                    committed = self.token in _committed_tokens(self.store, self.after)
                except Exception:  # the log cannot say now: the next command will
                    logger.warning("the secrets change is left staged for the next command")
                    return
            if not committed:
                self._discard_all()
                return
            try:
                try:
                    self._promote_all()
                except KeyboardInterrupt:
                    # Ctrl-C once the change is recorded: the files still follow the log.
                    self._promote_all()
                    raise
            except OSError as e:
                raise self._not_updated(e) from None
            self.staged = []
        finally:
            self._close()
            self._unlock()

    def _not_updated(self, e: OSError) -> SecretsNotUpdated:
        tx = self.store.last_tx
        done = f"recorded as tx {tx}" if tx is not None else "the change is recorded"
        if isinstance(e, (LinkedTarget, fsutil.DirReplaced)):
            fix = "the link is gone" if isinstance(e, LinkedTarget) else "the directory is back"
            return SecretsNotUpdated(
                f"{done}, but its secrets file is not in place: {e.filename} {e.strerror}; the "
                f"change stays staged, and the next command puts it in place once {fix}"
            )
        return SecretsNotUpdated(
            f"{done}, but putting its secrets file(s) in place failed ({e.strerror}); they "
            "are staged, and the next command finishes it"
        )

    def _promote_all(self) -> None:
        fsutil.fault("commit.after")
        assert self._dirs is not None
        secrets, stage = self._dirs
        for staged, target in self.staged:
            _promote(stage, staged, secrets, target, "promote")
        _sync_dirs(secrets, "promote")

    def _discard_all(self) -> None:
        if not self.staged or self._dirs is None:
            return
        secrets, stage = self._dirs
        with contextlib.suppress(OSError):  # left over: the next command discards it
            for staged, _ in self.staged:
                _discard(stage, staged, "discard")
            os.rmdir(STAGE_DIR, dir_fd=secrets.fd)
        self.staged = []

    def _close(self) -> None:
        if self._dirs is not None:
            dirs, self._dirs = self._dirs, None
            for d in dirs:
                d.close()

    def _unlock(self) -> None:
        self._close()
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.close()


def refuse_link(secrets_dir: Path, component_id: str, hint: str = "") -> None:
    """A secrets file that is a symbolic link (how Kubernetes mounts a Secret) is read through
    and never replaced."""
    path = secret_files.secrets_file(secrets_dir, component_id)
    try:
        linked = stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if linked:
        raise ValidationError(
            f"the secrets file {path} is a symbolic link (a mounted Secret?); refusing to "
            f"replace it{hint}"
        )


# ------------------------------------------------------------------ plans


def leaving_values(store: Store, keep: bool) -> Callable[[State, list[ev.Event]], Plan]:
    """The plan of detach, rollback and import: values of keys that leave the state leave the
    file Wassette reads (the whole file when the component leaves), unless `keep`."""

    def plan(base: State, events: list[ev.Event]) -> Plan:
        if keep:
            return {}
        from wassette_state.store.domain.fold import project

        after = project(events, base)
        secrets_dir = store.settings.secrets_dir
        hint = "; pass --keep-secret-values to leave its values there"
        out: Plan = {}
        for cid in sorted({c for e in events if (c := getattr(e, "component_id", None))}):
            before = base.components.get(cid)
            if before is None:
                continue
            now = after.components.get(cid)
            if now is None:  # the component leaves: a later one under this id inherits nothing
                if os.path.lexists(secret_files.secrets_file(secrets_dir, cid)):
                    refuse_link(secrets_dir, cid, hint)
                    out[cid] = {}
                continue
            gone = set(before.secret_keys) - set(now.secret_keys)
            if not gone:
                continue
            values = secret_files.read_values(secrets_dir, cid)
            if gone & set(values):
                refuse_link(secrets_dir, cid, hint)
                out[cid] = {k: v for k, v in values.items() if k not in gone}
        return out

    return plan
