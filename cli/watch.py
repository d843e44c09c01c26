"""`wassette-state watch`: record changes made to the dirs by others, as they happen."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from wassette_state.cli.main import App, output_option, pass_app
from wassette_state.cli.output import escape, out, safe_json, warn
from wassette_state.cli.state import plural

DEFAULT_DEBOUNCE_MS = 100  # store.watch.DEFAULT_DEBOUNCE_MS, not imported at start-up


@click.command(short_help="Record changes others make to the dirs, as they happen.")
@click.option(
    "--debounce",
    "debounce_ms",
    type=click.IntRange(0, 60_000),
    default=DEFAULT_DEBOUNCE_MS,
    show_default=True,
    metavar="MS",
    help="Quiet time that ends a burst of changes (one transaction per burst).",
)
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave the secrets file of a component Wassette unloaded (as Wassette's unload does).",
)
@output_option
@pass_app
def watch(app: App, debounce_ms: int, keep_secret_values: bool) -> None:
    """Record what Wassette (or anyone) changes in the component and secrets dirs, as
    `sync` transactions by the actor `filesystem`, within about a second of each burst.

    \b
    It scans everything on start (nothing changed while it was down is lost), never records
    this tool's own writes, and ignores Wassette's caches (<id>.cwasm, downloads/, metadata
    rewrites). One line per recorded transaction on stdout (-o json: one JSON object per
    line); warnings on stderr. SIGTERM or Ctrl-C stops it (exit 0).

    A component Wassette unloads leaves the state with its secret values, as with `sync`;
    --keep-secret-values leaves them, so a reload through Wassette finds them.
    """
    if app.output == "yaml":
        raise click.UsageError("watch prints text or JSON lines (-o json), not YAML")
    from wassette_state.store.live.watch import Watch

    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        store = app.store
        settings = store.settings
        click.echo(
            f"watching {escape(str(settings.component_dir))} and "
            f"{escape(str(settings.secrets_dir))} (debounce {debounce_ms} ms); "
            "stop with Ctrl-C",
            err=True,
        )
        count = [0]

        def recorded(r: Any) -> None:
            count[0] += 1
            _print(r, app.output)

        Watch(store, stop, recorded, warn, debounce_ms, keep_secret_values).run()
    finally:
        restore()
    click.echo(f"stopped ({plural(count[0], 'transaction')} recorded)", err=True)


def _print(r: Any, fmt: str) -> None:
    """One line per transaction (secret events carry key names only)."""
    outcome = r.outcome
    adopted = [d for d in r.drifts if d.adoptable]
    if fmt == "json":
        import json

        from wassette_state.cli.output import iso_us
        from wassette_state.cli.state import event_json

        doc = {
            "status": "ok",
            "tx": outcome.tx_id,
            "recorded_at": iso_us(outcome.events[0].recorded_at),
            "trigger": r.trigger,
            "events": [event_json(e) for e in outcome.events],
            "drift": [d.as_dict() for d in r.drifts],
        }
        out(safe_json(json.dumps(doc, ensure_ascii=False)) + "\n")
    else:
        what = "; ".join(f"{d.component_id}: {d.what}" for d in adopted)
        n = plural(len(outcome.events), "event")
        out(escape(f"tx {outcome.tx_id} ({n}, actor filesystem): {what}") + "\n")


def _stop_on_signals(stop: threading.Event) -> Any:
    """SIGTERM/SIGINT ask the watch to stop after the scan in progress (the store stays
    consistent); a second one interrupts at once (exit 130)."""

    def handler(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
