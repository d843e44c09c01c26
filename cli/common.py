"""Helpers shared by the mutating commands: one shape of result for every command."""

from __future__ import annotations

from typing import Any

from wassette_state.cli.main import App
from wassette_state.cli.output import emit
from wassette_state.cli.state import event_json, plural


def report(app: App, outcome: Any, text: str, extra: dict[str, Any] | None = None) -> None:
    """`-o json`: {status, tx, events, …}; text: one short human line."""
    data: dict[str, Any] = {
        "status": "ok",
        "tx": outcome.tx_id,
        "events": [event_json(e) for e in outcome.events],
        **(extra or {}),
    }
    if outcome.tx_id is None:
        text = f"{text} (no change)"
    else:
        text = f"{text} (tx {outcome.tx_id}, {plural(len(outcome.events), 'event')})"
    emit(data, app.output, text)
