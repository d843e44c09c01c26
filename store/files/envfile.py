"""The instance env as a file for `wassette serve|run --env-file FILE`.

Wassette 0.8.0 reads that file line by line (measured with the real binary): blank lines and
lines starting with `#` are skipped; every other line is `KEY=VALUE`, split at the first `=`,
both sides trimmed, and one pair of matching quotes (`"…"` or `'…'`) around the value removed.
Nothing else: no escapes, no `$VAR` expansion, no `export`, no value spanning lines (a line
without `=` stops Wassette with an error). So every value is written between double quotes, as
is: `#`, quotes, `=`, backslashes, `$`, leading or trailing spaces and CRs all come back
unchanged. A value holding a line feed cannot be written at all; such a key gets a comment
line in the file, and `start-command` passes it with `--env KEY=VALUE` instead (Wassette gives
`--env` precedence over `--env-file`, and both over config.toml's `[environment_vars]`).

`render` is pure; `write` puts the bytes in place atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODE = 0o600

HEADER = (
    "# The environment of a Wassette instance, written by wassette-state from its store\n"
    "# ('wassette-state env set/unset' change it; edits made here are overwritten).\n"
    "# Start Wassette with it: wassette serve --env-file <this file>\n"
    "# (see 'wassette-state start-command').\n"
)


@dataclass(frozen=True)
class Rendered:
    data: bytes
    # keys whose value an env file cannot hold (a line feed): pass them with `--env`
    unwritable: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def fits(value: str) -> bool:
    """Whether Wassette's line-based reader gets this value back from a quoted line."""
    return "\n" not in value


def line(key: str, value: str) -> str:
    return f'{key}="{value}"\n'


def render(environment: Mapping[str, str]) -> Rendered:
    out = [HEADER]
    unwritable: list[str] = []
    for key in sorted(environment):
        value = environment[key]
        if fits(value):
            out.append(line(key, value))
        else:
            unwritable.append(key)
            out.append(
                f"# {key}: its value has a line break, which an env file cannot hold; "
                "pass it with --env (start-command does)\n"
            )
    return Rendered("".join(out).encode("utf-8"), unwritable)


def parse(text: str) -> dict[str, str]:
    """Wassette 0.8.0's reading of an env file (for tests and checks); raises ValueError on a
    line it refuses."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        if raw.endswith("\r"):  # Rust's str::lines drops the CR of a CRLF
            raw = raw[:-1]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ValueError(f"invalid environment variable format at line {number}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def is_current(path: Path, expected_sha256: str | None) -> bool:
    """The file is there, a regular file with mode 0600 and the bytes last written."""
    import os
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != MODE:
        return False
    if expected_sha256 is None:
        return True
    return hashlib.sha256(path.read_bytes()).hexdigest() == expected_sha256


def write(path: Path, rendered: Rendered) -> bool:
    """Put the file in place (atomic, 0600, never through a planted symlink); False when it
    already held exactly these bytes."""
    from wassette_state.store.files import fsutil

    if is_current(path, rendered.sha256):
        return False
    fsutil.ensure_dir(path.parent)
    fsutil.atomic_write(path, rendered.data, mode=MODE)
    return True
