"""The one renderer: text tables, JSON and YAML, for every command.

Strings from the store (actors, env values, paths, tool descriptions) are user-controlled, so
nothing reaches the terminal raw: control characters (C0, DEL, C1, and the bidirectional
overrides) are shown as escapes (`\\x1b`) in every table cell and message, and in JSON output.
Tables are sized to the terminal (on one, long cells are clipped to fit; piped, never) and
measure text in display columns, so wide characters (CJK, emoji) keep the columns aligned.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

# C0 (but newline, tab and CR of a CRLF in multi-line text), DEL, C1, and the Unicode bidi
# embeddings/overrides/isolates that can make a terminal show text other than what it is.
_CONTROLS = "\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_IN_CELL = re.compile(f"[{_CONTROLS}]")
_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) <= 0xFF else f"\\u{ord(ch):04x}"


def escape(text: str) -> str:
    """One line, every control character shown as an escape (cells, messages)."""
    return _IN_CELL.sub(_escape_char, text)


def escape_text(text: str) -> str:
    """Multi-line text (a policy, a plan): lines and tabs kept, other controls escaped."""
    return _IN_TEXT.sub(_escape_char, text)


# JSON with ensure_ascii=False escapes C0 itself; DEL, C1 and the bidi controls it leaves raw.
_JSON_RAW = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_json(text: str) -> str:
    """JSON text with the controls json.dumps leaves raw as \\u escapes (same document)."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def iso_us(us: int) -> str:
    """ISO-8601 UTC with microseconds, the format every machine-readable time uses."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def emit(data: Any, fmt: str, text: str | None = None) -> None:
    """Print `data` as JSON/YAML, or `text` (falling back to JSON) for the text format."""
    if fmt == "json" or (fmt != "yaml" and text is None):
        import json

        out(safe_json(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
    elif fmt == "yaml":
        out(_yaml(data))
    elif text is not None:
        out(escape_text(text) + ("" if text.endswith("\n") else "\n"))


def _yaml(data: Any) -> str:
    """YAML escapes every non-printable character itself."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


def emit_list(items: Iterable[Any], fmt: str) -> None:
    """A JSON/YAML list written item by item, in constant memory: the same bytes as `emit`
    of the whole list (`json.dumps(..., indent=2)`), for logs of any length."""
    import json

    first = True
    for item in items:
        if fmt == "yaml":
            out(_yaml([item]), flush=False)
        else:
            body = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            out(("[\n  " if first else ",\n  ") + safe_json(body), flush=False)
        first = False
    if first:
        out("[]\n")
    elif fmt != "yaml":
        out("\n]\n")


class OutputFailed(Exception):
    """Writing to stdout failed (a full disk, a closed pipe): the command did not succeed."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


def out(text: str, flush: bool = True) -> None:
    """Write to stdout; a failed write is an error of its own (never an exit 0)."""
    try:
        if flush and len(text) > _WHOLE_MIN:
            _write_whole(text)
            return
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except OSError as e:
        raise OutputFailed(e) from None


_WHOLE_MIN = 8192  # Python's stdout buffer: a text larger than this is written past it


def _write_whole(text: str) -> None:
    """A large text written to the file descriptor until every byte is out, or an error.
    Python's stdout drops the rest of a text that a pipe took only partly when its reader
    went away (`history | head`: 65,536 of 271,406 bytes written, no error, exit 0)."""
    import os

    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):  # not a file (captured in a test)
        stream.write(text)
        stream.flush()
        return
    stream.flush()
    data = memoryview(text.encode(stream.encoding or "utf-8", stream.errors or "strict"))
    while data:
        data = data[os.write(fd, data) :]


# ------------------------------------------------------------------ tables


def display_width(text: str) -> int:
    """Columns a terminal gives the text: wide (East Asian wide/fullwidth, most emoji) 2,
    combining marks and other zero-width characters 0, everything else 1."""
    if text.isascii():
        return len(text)
    import unicodedata

    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def _clip(text: str, width: int) -> str:
    """At most `width` display columns, the last one an ellipsis when anything was cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for ch in text:
        w = display_width(ch)
        if used + w > width - 1:
            break
        kept.append(ch)
        used += w
    return "".join(kept) + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def terminal_columns() -> int | None:
    """The terminal's width when stdout is one, else None (nothing to fit)."""
    if not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns


def _fit(widths: list[int], floors: list[int], columns: int) -> list[int]:
    """Narrow the widest columns (never below their floor) until the row fits `columns`."""
    gaps = 2 * (len(widths) - 1)
    if sum(widths) + gaps <= columns:
        return widths
    lo, hi = 0, max(widths)
    while lo < hi:  # the largest cap under which the row fits
        cap = (lo + hi + 1) // 2
        if sum(min(w, max(cap, f)) for w, f in zip(widths, floors, strict=True)) + gaps <= columns:
            lo = cap
        else:
            hi = cap - 1
    return [min(w, max(lo, f)) for w, f in zip(widths, floors, strict=True)]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], clip: bool = True) -> str:
    """An aligned table, one row per line. On a terminal, long cells are clipped so a row
    fits its width (`clip=False`: never, e.g. secret values asked for); piped, never."""
    cells = [[escape(str("" if c is None else c)) for c in row] for row in rows]
    heads = [h.upper() for h in headers]
    widths = [display_width(h) for h in heads]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], display_width(c))
    columns = terminal_columns() if clip else None
    if columns is not None:
        floors = [max(display_width(h), 8) for h in heads]
        widths = _fit(widths, floors, columns)
        cells = [[_clip(c, w) for c, w in zip(row, widths, strict=True)] for row in cells]
    lines = ["  ".join(_pad(h, w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def warn(message: str) -> None:
    click.echo(f"Warning: {escape(message)}", err=True)


def is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def can_ask() -> bool:
    """Someone can answer a question: stdin and stderr (where it is asked) are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()
