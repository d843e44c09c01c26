"""`export --format manifest` and the manifest side of `import`: what goes to the terminal.

Everything a manifest cannot carry is one `Warning: not in the manifest: …` line on stderr and
an entry of `not_expressible` with `-o json`; on import, what a manifest says that is not
imported is a `Warning: not imported: …` line and an entry of `not_imported`.
"""

from __future__ import annotations

from typing import Any

import click

from wassette_state.cli.main import App
from wassette_state.cli.output import emit


def note_line(note: dict[str, Any]) -> str:
    head = f"{note['component_id']}: " if note.get("component_id") is not None else ""
    return f"{head}{note['what']}: {note['detail']}"


def export(
    app: App,
    target: str,
    at: str | None,
    wasm_dir: str | None,
    component_dir: str | None,
    secrets_dir: str | None,
    fmt: str | None = None,
) -> None:
    from wassette_state.cli.output import escape, iso_us, warn
    from wassette_state.cli.state import _point, warn_drift
    from wassette_state.store.domain.errors import ValidationError
    from wassette_state.store.domain.snapshot_model import format_for
    from wassette_state.store.persistence import log, readmodel
    from wassette_state.store.usecases.exporter import write_output
    from wassette_state.store.usecases.manifest_export import export_manifest

    if component_dir is not None or secrets_dir is not None:
        raise ValidationError(
            "--component-dir/--secrets-dir name the dirs in a state file; a manifest has none "
            "(give 'wassette serve' its --component-dir)"
        )
    if target == "-" and app.output in ("json", "yaml"):
        raise ValidationError(
            f"-o {app.output} prints a summary on stdout: write the manifest to a FILE, not '-'"
        )
    store = app.store
    with store.reading() as conn:
        seq, tag = _point(app, conn, at)
        state = readmodel.state_at(conn, seq)
        at_us = log.time_of_seq(conn, seq) if seq else None
    warn_drift(app, files=seq == store.head_seq())
    result = export_manifest(store, state, fmt or format_for(target), wasm_dir)  # type: ignore[arg-type]
    write_output(target, result.data)
    notes = [n.as_dict() for n in result.notes]
    for n in notes:
        warn(f"not in the manifest: {note_line(n)}")
    plural = "s" if result.components != 1 else ""
    if target != "-":
        click.echo(
            f"exported {result.components} component{plural} as a Wassette provisioning "
            f"manifest as of seq {seq} to {escape(target)}"
            + (f" ({len(notes)} thing(s) it cannot carry, listed above)" if notes else ""),
            err=True,
        )
    if app.output in ("json", "yaml"):
        emit(
            {
                "status": "ok",
                "format": "manifest",
                "target": target,
                "as_of": {
                    "seq": seq,
                    "recorded_at": iso_us(at_us) if at_us else iso_us(0),
                    "tag": tag,
                },
                "components": result.components,
                "not_expressible": notes,
            },
            app.output,
        )


def warn_not_imported(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The import's `not_imported` list, each also a warning line on stderr."""
    ignored: list[dict[str, Any]] = list(summary.get("ignored") or [])
    for n in ignored:
        from wassette_state.cli.output import warn

        warn(f"not imported: {note_line(n)}")
    return ignored
