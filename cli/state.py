"""`wassette state …`: the log, integrity, and points in time."""

from __future__ import annotations

from typing import Any

import click

from cli.main import App, output_option, pass_app
from cli.output import emit, iso_us, table


@click.group()
def state() -> None:
    """History, snapshots, rollback and integrity of the store."""


def event_json(se: Any) -> dict[str, Any]:
    """The documented `state history -o json` shape."""
    return {
        "seq": se.seq,
        "tx": se.tx_id,
        "recorded_at": iso_us(se.recorded_at),
        "actor": se.actor,
        "kind": se.kind,
        "command": se.command,
        "type": se.type,
        "component_id": se.component_id,
        "data": se.data,
    }


def _summary(se: Any) -> str:
    d = se.data
    t = se.type
    if t == "component.attached":
        return f"{d['source_uri']} sha256:{d['wasm_sha256'][:12]}"
    if t == "policy.attached":
        return str(d["source_uri"])
    if t == "policy.changed":
        change = d.get("change") or {}
        rest = " ".join(f"{k}={v}" for k, v in change.items() if k not in ("op", "kind"))
        return " ".join(str(x) for x in (change.get("op"), change.get("kind"), rest) if x)
    if t in ("secret.keys_set", "secret.keys_deleted"):
        return ", ".join(d["keys"])
    if t == "env.set":
        return f"{d['key']}={d['value']}"
    if t == "env.unset":
        return str(d["key"])
    if t == "paths.set":
        return f"components={d['component_dir']} secrets={d['secrets_dir']}"
    return ""


@state.command()
@click.option("--component", "component", metavar="ID", help="Only this component's events.")
@click.option("--type", "type_", metavar="T", help="Event type or prefix (e.g. 'policy.').")
@click.option("--actor", "actor", metavar="A", help="Only transactions by this actor.")
@click.option("--since", metavar="WHEN", help="Only events after this point.")
@click.option("--until", metavar="WHEN", help="Only events up to this point.")
@click.option("--tx", "tx", type=click.IntRange(min=1), help="Only this transaction.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N events.")
@click.option("--reverse", is_flag=True, help="Newest first.")
@output_option
@pass_app
def history(
    app: App,
    component: str | None,
    type_: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
    tx: int | None,
    limit: int | None,
    reverse: bool,
) -> None:
    """Show the audit log, oldest first.

    \b
    Examples:
      wassette state history --component weather --since 2h
      wassette state history --type policy. -o json
    """
    from store.log import Query
    from store.service import resolve_point
    from store.state import check_id

    if component is not None:
        check_id(component, "--component")
    with app.store.reading() as conn:
        from_seq = resolve_point(conn, since) + 1 if since else None
        to_seq = resolve_point(conn, until) if until else None
        from store import log

        events = log.read(
            conn,
            Query(
                from_seq=from_seq,
                to_seq=to_seq,
                stream=component,
                type_prefix=type_,
                actor=actor,
                tx_id=tx,
                limit=limit,
                reverse=reverse,
            ),
        )
    data = [event_json(se) for se in events]
    rows = [
        (
            se.seq,
            se.tx_id,
            iso_us(se.recorded_at)[:19].replace("T", " "),
            se.actor,
            se.kind,
            se.type,
            se.component_id or "-",
            _summary(se),
        )
        for se in events
    ]
    text = (
        table(["seq", "tx", "time (utc)", "actor", "kind", "type", "component", "detail"], rows)
        if rows
        else "no events"
    )
    emit(data, app.output, text)


@state.command()
@output_option
@pass_app
def verify(app: App) -> None:
    """Check the hash chain, the read models and the database; exit 4 on any failure."""
    from store.errors import IntegrityError
    from store.verify import verify as run_verify

    with app.store.reading() as conn:
        report = run_verify(conn)
    data = {
        "ok": report.ok,
        "events": report.events,
        "transactions": report.transactions,
        "problems": report.problems,
        "warnings": report.warnings,
    }
    for w in report.warnings:
        click.echo(f"Warning: {w}", err=True)
    if not report.ok:
        if app.output != "text":
            emit(data, app.output)
        raise IntegrityError(f"verification failed: {report.problems[0]}")
    emit(
        data,
        app.output,
        f"ok: {report.events} events in {report.transactions} transactions; hash chain, "
        "read models and database integrity verified",
    )


@state.command()
@output_option
@pass_app
def rebuild(app: App) -> None:
    """Recompute the read models from the event log."""
    import time

    start = time.perf_counter()
    count = app.store.rebuild()
    elapsed = time.perf_counter() - start
    emit(
        {"status": "ok", "events": count, "seconds": round(elapsed, 3)},
        app.output,
        f"rebuilt read models from {count} events in {elapsed:.2f}s",
    )
