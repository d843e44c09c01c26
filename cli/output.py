"""The one renderer: text tables, JSON and YAML, for every command."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click


def iso_us(us: int) -> str:
    """ISO-8601 UTC with microseconds, the format every machine-readable time uses."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def emit(data: Any, fmt: str, text: str | None = None) -> None:
    """Print `data` as JSON/YAML, or `text` (falling back to JSON) for the text format."""
    if fmt == "json":
        import json

        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "yaml":
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        click.echo(yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True), nl=False)
    elif text is not None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        import json

        click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    """A plain aligned table; long cells are clipped so one row stays one line."""
    cells = [[_clip(str("" if c is None else c), max_width) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
