"""Atomic, symlink-safe file writes: the only way the project writes into its directories."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


def ensure_dir(path: Path, mode: int = 0o755) -> None:
    """Create the directory (and parents); refuse a symlink in its place.

    An existing directory is only ever tightened to `mode`, never loosened: the data dir may be
    the user's home (`--db ~/state.db`) and a 0700 component dir stays 0700.
    """
    if path.is_symlink():
        from wassette_state.store.domain.errors import ValidationError

        raise ValidationError(f"{path} is a symbolic link; refusing to write through it")
    created = not path.exists()
    missing = []
    parent = path
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for new in reversed(missing):  # each with exactly `mode`, whatever the umask
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=mode)
            os.chmod(new, mode)
    if created:  # the new directory's own entry survives a crash too
        _fsync_dir(path.parent)
    current = path.stat().st_mode & 0o777
    if current & ~mode:
        os.chmod(path, current & mode)


def private_file(path: Path) -> bool:
    """Whether only this user could have written `path` and its directory (a cache entry is
    trusted only then: another local user must not be able to plant tool schemas)."""
    try:
        st, dst = os.lstat(path), os.stat(path.parent)
    except OSError:
        return False
    me = os.geteuid()
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == me
        and dst.st_uid == me
        and not (st.st_mode | dst.st_mode) & 0o022
    )


def atomic_write(
    path: Path, data: bytes, mode: int = 0o644, mtime: int | None = None, durable: bool = True
) -> None:
    """Write beside the target and rename over it.

    The rename replaces a planted symlink instead of following it, and the temp file is created
    with O_EXCL, so nothing is ever written outside the directory. The mode is set explicitly,
    whatever the umask.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:  # derived files skip this: one sync for the batch (files.materialize)
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(directory: Path) -> int:
    """Temp files of writers that died mid-write (call only under the lock those writers take,
    so every temp file found belongs to a dead process)."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if (
            entry.name.startswith(".")
            and entry.name.endswith(".tmp")
            and entry.is_file(follow_symlinks=False)
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def read_if_file(path: Path) -> bytes | None:
    """Contents of a regular file, or None when absent; a symlink counts as absent."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None


def remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


class DirReplaced(OSError):
    """The directory a command writes into no longer is the one it opened (swapped for a
    symbolic link, moved or removed meanwhile): nothing more is written, through its path or
    into the directory it opened."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            errno.ESTALE,
            "was replaced (by a symbolic link or another directory) while files were written "
            "into it",
            str(path),
        )


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class Dir:
    """A directory opened once, by a handle: every name is looked up in it (`dir_fd=`), never
    through its path again, so swapping the path for a link cannot send a file elsewhere, and
    files are opened with O_NOFOLLOW. `check()` tells whether the path still names it: a
    command checks before and after it writes, and stops (DirReplaced) when it does not."""

    def __init__(self, path: Path, mode: int = 0o755, create: bool = True) -> None:
        self.path = path
        if path.is_symlink():
            raise DirReplaced(path)
        if create:
            try:
                ensure_dir(path, mode)
            except OSError:
                if path.is_symlink():
                    raise DirReplaced(path) from None
                raise
        try:
            self.fd = os.open(path, _DIR_FLAGS)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # a link put there since
                raise DirReplaced(path) from None
            raise
        st = os.fstat(self.fd)
        self._ident = (st.st_dev, st.st_ino)

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError:
            raise DirReplaced(self.path) from None
        if (st.st_dev, st.st_ino) != self._ident:
            raise DirReplaced(self.path)

    def sub(self, name: str, mode: int = 0o700) -> Dir:
        """A directory inside this one, created with `mode` (whatever the umask)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=self.fd)
            os.chmod(name, mode, dir_fd=self.fd, follow_symlinks=False)
            os.fsync(self.fd)
        return _SubDir(self, name)

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def is_link(self, name: str) -> bool:
        st = self.lstat(name)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def read(self, name: str, limit: int | None = None) -> bytes | None:
        """A regular file's bytes; None when absent, not a regular file (a link) or over
        `limit` bytes."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise
        return read_fd(fd, limit)

    def write(
        self,
        name: str,
        data: bytes,
        mode: int = 0o644,
        mtime: int | None = None,
        durable: bool = True,
    ) -> None:
        """`atomic_write` inside this directory: a temp file beside the target (O_EXCL,
        O_NOFOLLOW), renamed over it (a planted link is replaced, never followed)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = f".{name}.{os.urandom(6).hex()}.tmp"
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=self.fd)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(self.path / name)) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
            if isinstance(e, OSError) and e.errno is not None:  # say which file (ENOSPC…)
                raise OSError(e.errno, e.strerror, str(self.path / name)) from None
            raise

    def remove(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.fd)
            return True
        except FileNotFoundError:
            return False

    def rename_to(self, name: str, target: Dir, target_name: str) -> None:
        os.replace(name, target_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def make_durable(self, names: list[str]) -> None:
        """`make_durable` for names in this directory."""
        if len(names) > FSYNC_EACH_MAX:
            os.sync()
            return
        for name in names:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.fd)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.fsync()


def read_fd(fd: int, limit: int | None = None) -> bytes | None:
    """What an open file descriptor holds if it is a regular file (of at most `limit`
    bytes), else None; the descriptor is closed."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _SubDir(Dir):
    """A directory opened through its parent's handle (never through a path)."""

    def __init__(self, parent: Dir, name: str) -> None:
        self.path = parent.path / name
        self._parent = parent
        self._name = name
        try:
            self.fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise DirReplaced(self.path) from None
            raise
        st = os.fstat(self.fd)
        self._ident = (st.st_dev, st.st_ino)

    def check(self) -> None:
        self._parent.check()
        st = self._parent.lstat(self._name)
        if st is None or (st.st_dev, st.st_ino) != self._ident:
            raise DirReplaced(self.path)


# Beyond this many files one sync of everything beats a fsync per file.
FSYNC_EACH_MAX = 32


def make_durable(paths: list[Path], directory: Path) -> None:
    """Flush written files and the directory entries that name them to disk.

    A command changes a handful of files: fsync each and the directory once, instead of a
    system-wide sync that also waits for every other process's dirty pages.
    """
    with Dir(directory, create=False) as d:
        d.make_durable([p.name for p in paths])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ fault injection (tests only)

FAULT_ENV = "WASSETTE_STATE_FAULT"  # STEP:ACTION[:N][,…]  (N-th passage at STEP, default 1)
FAULT_LOG_ENV = "WASSETTE_STATE_FAULT_LOG"  # a file: every step passed, and the fault fired
_passed: dict[str, int] = {}
fired: list[str] = []  # the faults injected in this process


def fault(step: str, path: Path | str | None = None) -> None:
    """A seam for the fault-injection tests, called before each write, fsync, rename and unlink
    of a two-phase change (store.staging). Unset (always, outside the tests) it does nothing.

    ACTION: `enospc` / `eacces` raise that OSError; `kill` SIGKILLs this process; `sigint`
    sends it SIGINT (Ctrl-C); `sleep` pauses it (`WASSETTE_STATE_FAULT_SLEEP` seconds), to
    line up a race. Several faults: comma-separated. `WASSETTE_STATE_FAULT_LOG` names a file
    that gets one line per step passed (`pass STEP`) and per fault injected
    (`fire STEP ACTION`).
    """
    spec = os.environ.get(FAULT_ENV)
    trace = os.environ.get(FAULT_LOG_ENV)
    if not spec and not trace:
        return
    count = _passed[step] = _passed.get(step, 0) + 1
    if trace:
        _fault_note(trace, f"pass {step}")
    for fault_spec in (spec or "").split(","):
        want, _, rest = fault_spec.partition(":")
        action, _, nth = rest.partition(":")
        if want == step and count == (int(nth) if nth else 1):
            _inject(step, action, trace, path)


def _inject(step: str, action: str, trace: str | None, path: Path | str | None = None) -> None:
    fired.append(f"{step}:{action}")
    if trace:
        _fault_note(trace, f"fire {step} {action}")
    import signal

    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "sleep":  # hold this process here, to line up a race with another one
        import time

        time.sleep(float(os.environ.get("WASSETTE_STATE_FAULT_SLEEP", "3")))
    elif action in ("enospc", "eacces"):
        code = errno.ENOSPC if action == "enospc" else errno.EACCES
        if path is not None:
            raise OSError(code, os.strerror(code), str(path))
        raise OSError(code, os.strerror(code))
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r}")


def _fault_note(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def reset_faults() -> None:
    """Forget the passages counted so far (tests that inject faults in their own process)."""
    _passed.clear()
    fired.clear()
