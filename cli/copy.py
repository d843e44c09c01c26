"""`wassette-state state copy --to URL`: move a store, history and all, to another database."""

from __future__ import annotations

import sys
from typing import Any

import click

from wassette_state.cli.main import App, output_option, pass_app
from wassette_state.cli.output import emit, escape
from wassette_state.cli.state import plural


@click.command("copy", short_help="Copy the whole store, history and all, to an empty database.")
@click.option(
    "--to",
    "to",
    metavar="URL|PATH",
    required=True,
    help="The destination: postgresql://USER@HOST/DB (an empty database), or a SQLite file "
    "(a new one is created).",
)
@output_option
@pass_app
def copy_cmd(app: App, to: str) -> None:
    """Copy the store (--db) to an empty database: SQLite to PostgreSQL, back, or to another
    file. Every transaction and event keeps its seq, tx id, time, actor, command and hash; the
    tags, the store's lineage and the wasm blobs come along. The copy's read models are rebuilt
    from its log and it is verified before its one transaction commits: all or nothing.

    The source is read in one snapshot and never changed (changes made meanwhile are not in
    the copy). Secret values are never in a store, so the secrets dir is not moved, nor the
    component dir: keep pointing at them. Then use the copy with --db / WASSETTE_STATE_DB.

    Refused, with one Error: line and nothing written: a destination that already holds a
    store, the source itself, an unreachable server (exit 2); a source that fails 'state
    verify' (exit 4: a broken chain is not copied).

    \b
    Examples:
      createdb -h 127.0.0.1 -U postgres wassette
      wassette-state state copy --to postgresql://postgres@127.0.0.1/wassette
      wassette-state --db postgresql://postgres@127.0.0.1/wassette state copy --to ./state.db
    """
    from wassette_state.store.files.config import to_url
    from wassette_state.store.usecases.copy import copy_store

    progress = Progress() if sys.stderr.isatty() else None
    try:
        done = copy_store(app.settings, to_url(to), progress)
    finally:
        if progress is not None:
            progress.clear()
    emit(
        {
            "status": "ok",
            "source": done.source,
            "destination": done.destination,
            "seq": done.seq,
            "transactions": done.transactions,
            "events": done.events,
            "tags": done.tags,
            "contents": done.contents,
            "blobs": done.blobs,
        },
        app.output,
        f"copied {plural(done.events, 'event')} in {plural(done.transactions, 'transaction')} "
        f"(up to seq {done.seq}), {plural(done.tags, 'tag')} and "
        f"{plural(done.blobs, 'wasm blob')} from {escape(done.source)} "
        f"to {escape(done.destination)}; the copy verified",
    )


class Progress:
    """One line on a terminal's stderr, rewritten in place; gone once the copy ends."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        line = f"{phase} {done}/{total}" if total else phase
        sys.stderr.write(f"\r\033[K{line}…")
        sys.stderr.flush()
        self.shown = True

    def clear(self, *_: Any) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
