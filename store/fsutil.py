"""Atomic, symlink-safe file writes: the only way the project writes into its directories."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def ensure_dir(path: Path, mode: int = 0o755) -> None:
    """Create the directory (and parents); refuse a symlink in its place.

    An existing directory is only ever tightened to `mode`, never loosened: the data dir may be
    the user's home (`--db ~/state.db`) and a 0700 component dir stays 0700.
    """
    if path.is_symlink():
        from wassette_state.store.errors import ValidationError

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
    import stat

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


# Beyond this many files one sync of everything beats a fsync per file.
FSYNC_EACH_MAX = 32


def make_durable(paths: list[Path], directory: Path) -> None:
    """Flush written files and the directory entries that name them to disk.

    A command changes a handful of files: fsync each and the directory once, instead of a
    system-wide sync that also waits for every other process's dirty pages.
    """
    if len(paths) > FSYNC_EACH_MAX:
        os.sync()
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(directory)


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
    import errno
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
