"""`wassette-state state …`: the log, integrity, and points in time."""

from __future__ import annotations

from typing import Any

import click

from wassette_state.cli.main import App, output_option, pass_app
from wassette_state.cli.output import emit, iso_us, table, warn


@click.group()
def state() -> None:
    """History, snapshots, rollback and integrity of the store.

    Each of these commands works without `state` too: `wassette-state history` is
    `wassette-state state history`.
    """


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


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
        "reason": se.reason,
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
        if "added" in change or "removed" in change:  # a sync: the rules it found changed
            ruled = [f"+{r}" for r in change.get("added") or []]
            ruled += [f"-{r}" for r in change.get("removed") or []]
            return f"{change.get('op')} {'; '.join(ruled) or '(layout only)'}"
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
      wassette-state state history --component weather --since 2h
      wassette-state state history --type policy. -o json
    """
    from wassette_state.store.domain.state import check_id
    from wassette_state.store.persistence.log import Query
    from wassette_state.store.persistence.points import resolve_point

    if component is not None:
        check_id(component, "--component")
    with app.store.reading() as conn:
        from_seq = resolve_point(conn, since) + 1 if since is not None else None
        to_seq = resolve_point(conn, until) if until is not None else None
        query = Query(
            from_seq=from_seq,
            to_seq=to_seq,
            stream=component,
            type_prefix=type_,
            actor=actor,
            tx_id=tx,
            limit=limit,
            reverse=reverse,
        )
        if app.output in ("json", "yaml"):
            # Streamed: one page of the log in memory at a time, each event written as it
            # comes, whatever the length of the log.
            from wassette_state.cli.output import emit_list

            emit_list((event_json(se) for se in _pages(conn, query)), app.output)
            return
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
            for se in _pages(conn, query)
        ]
    text = (
        table(["seq", "tx", "time (utc)", "actor", "kind", "type", "component", "detail"], rows)
        if rows
        else "no events"
    )
    emit(None, "text", text)


HISTORY_PAGE = 64  # events read at a time (an attach's metadata can be large)


def _pages(conn: Any, query: Any) -> Any:
    """The events `query` selects, read a page at a time (same order, same limit)."""
    import dataclasses

    from wassette_state.store.persistence import log

    left = query.limit
    bound = None
    while left is None or left > 0:
        page = HISTORY_PAGE if left is None else min(HISTORY_PAGE, left)
        if bound is None:
            q = dataclasses.replace(query, limit=page)
        elif query.reverse:
            upper = bound - 1 if query.to_seq is None else min(query.to_seq, bound - 1)
            q = dataclasses.replace(query, to_seq=upper, limit=page)
        else:
            lower = bound + 1 if query.from_seq is None else max(query.from_seq, bound + 1)
            q = dataclasses.replace(query, from_seq=lower, limit=page)
        events = log.read(conn, q)
        yield from events
        if len(events) < page:
            return
        bound = events[-1].seq
        if left is not None:
            left -= len(events)
        del events


@state.command(short_help="Check the hash chain, read models and database (exit 4 if bad).")
@output_option
@pass_app
def verify(app: App) -> None:
    """Check the hash chain, the read models and the database; exit 4 on any failure."""
    from wassette_state.store.domain.errors import IntegrityError
    from wassette_state.store.usecases.verify import verify as run_verify

    marker = app.store.own_marker()  # before the log (see verify): writers may be running
    with app.store.reading() as conn:
        report = run_verify(conn, (marker or {}).get("seq"))
    if report.ok:
        warn_drift(app)
    data = {
        "ok": report.ok,
        "events": report.events,
        "transactions": report.transactions,
        "problems": report.problems,
        "warnings": report.warnings,
    }
    for w in report.warnings:
        warn(w)
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


def _point(app: App, conn: object, when: str | None) -> tuple[int, str | None]:
    """Resolve WHEN (or now) to a seq; also return the tag name when WHEN was a tag."""
    from wassette_state.store.persistence.points import resolve_point

    if when is None:
        from wassette_state.store.persistence import log

        return log.head(conn)[0], None  # type: ignore[arg-type]
    seq = resolve_point(conn, when)  # type: ignore[arg-type]
    tag = when.strip()[4:] if when.strip().startswith("tag:") else None
    return seq, tag


def snapshot_doc(
    app: App,
    when: str | None,
    component_dir: str | None = None,
    secrets_dir: str | None = None,
    lazy: bool = False,
) -> dict[str, Any]:
    """The export document for the state at WHEN (default now)."""
    from wassette_state.store.persistence import log, readmodel
    from wassette_state.store.usecases.exporter import AsOf, exported_at, state_doc

    store = app.store
    with store.reading() as conn:
        seq, tag = _point(app, conn, when)
        state = readmodel.state_at(conn, seq)
        at_us = log.time_of_seq(conn, seq) if seq else None
    paths = state.paths
    return state_doc(
        state,
        component_dir=component_dir
        or (paths.component_dir if paths else str(store.settings.component_dir)),
        secrets_dir=secrets_dir
        or (paths.secrets_dir if paths else str(store.settings.secrets_dir)),
        as_of=AsOf(seq, iso_us(at_us) if at_us else iso_us(0), tag),
        lineage=store.lineage,
        at=exported_at(),
        lazy=lazy,
    )


@state.command("export", short_help="Write a Wassette-compatible snapshot to a file.")
@click.argument("target", metavar="FILE")
@click.option("--at", "at", metavar="WHEN", help="Export the state as it was then.")
@click.option("--component-dir", "component_dir", help="Component dir to write in the file.")
@click.option("--secrets-dir", "secrets_dir", help="Secrets dir to write in the file.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(("state", "manifest")),
    default="state",
    show_default=True,
    help="state: the snapshot; manifest: a provisioning manifest for 'wassette serve --manifest'.",
)
@click.option(
    "--wasm-dir",
    "wasm_dir",
    metavar="DIR",
    help="(manifest) Write each component's wasm here as <id>.wasm and point the manifest at it.",
)
@click.option(
    "--yaml/--json",
    "as_yaml",
    default=None,
    help="Write YAML / JSON whatever FILE is called (default: YAML for .yaml/.yml, else JSON).",
)
@output_option
@pass_app
def export_cmd(
    app: App,
    target: str,
    at: str | None,
    component_dir: str | None,
    secrets_dir: str | None,
    format_: str,
    wasm_dir: str | None,
    as_yaml: bool | None,
) -> None:
    """Write a Wassette-compatible snapshot (YAML for .yaml/.yml, else JSON; - for stdout,
    --yaml for YAML there).

    With --format manifest: a provisioning manifest that a stock 'wassette serve --manifest
    FILE' provisions into the same components, tools and permissions; what a manifest cannot
    carry (secrets, environment, other policy parts) is listed as warnings (-o json: a summary).

    \b
    Examples:
      wassette-state state export state.yaml
      wassette-state state export backup.json --at 2026-11-25T10:00:00Z
      wassette-state state export deploy.yaml --format manifest --at tag:release
      wassette-state state export - --yaml | less
    """
    from wassette_state.store.domain.snapshot_model import format_for

    fmt = format_for(target) if as_yaml is None else "yaml" if as_yaml else "json"
    if format_ == "manifest":
        from wassette_state.cli.manifest import export

        export(app, target, at, wasm_dir, component_dir, secrets_dir, fmt)
        return
    if wasm_dir is not None:
        raise click.UsageError("--wasm-dir goes with --format manifest")
    from wassette_state.store.usecases.exporter import (
        render_state_json,
        render_state_yaml,
        write_output,
    )

    doc = snapshot_doc(app, at, component_dir, secrets_dir, lazy=True)
    warn_drift(app, files=doc["as_of"]["seq"] == app.store.head_seq())
    data = render_state_yaml(doc) if fmt == "yaml" else render_state_json(doc)
    write_output(target, data)
    if target != "-":
        from wassette_state.cli.output import escape

        n = len(doc["components"])
        click.echo(
            f"exported {n} component{'s' if n != 1 else ''} as of seq {doc['as_of']['seq']} "
            f"to {escape(target)}",
            err=True,
        )


@state.command("import", short_help="Make the state match a snapshot, as one transaction.")
@click.argument("source", metavar="FILE")
@click.option("--prune", is_flag=True, help="Also remove what the file does not have.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--strict", is_flag=True, help="Fail if a component's wasm cannot be found.")
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave the values of secret keys it removes in the secrets files.",
)
@click.option("--yes", "-y", is_flag=True, help="With --prune: do not ask for confirmation.")
@output_option
@pass_app
def import_cmd(
    app: App,
    source: str,
    prune: bool,
    dry_run: bool,
    strict: bool,
    keep_secret_values: bool,
    yes: bool,
) -> None:
    """Make the state match a snapshot (merge by default), as one audited transaction.

    With --prune it also removes what the file does not have: on a terminal it asks first;
    without one it needs --yes.

    \b
    Examples:
      wassette-state state import handoff.yaml
      wassette-state state import backup.json --prune --dry-run
      wassette-state state import deploy.yaml   # a 'wassette serve --manifest' manifest too
    """
    from wassette_state.store.usecases.importer import run_import
    from wassette_state.store.usecases.secret_commands import secrets_needed

    confirm = _confirm(yes, dry_run, "import") if prune else None
    outcome = run_import(
        app.store,
        source,
        prune=prune,
        dry_run=dry_run,
        strict=strict,
        keep_secret_values=keep_secret_values,
        confirm=confirm,
    )
    s = outcome.summary
    ids = sorted({e.component_id for e in outcome.events if e.component_id})
    ids = ids or [c for c in outcome.state.components]
    needed = secrets_needed(app.store, outcome.state, ids)
    data = {
        "status": "ok",
        "tx": outcome.tx_id,
        "events": [event_json(e) for e in outcome.events],
        "dry_run": dry_run,
        "plan": s["plan"],
        "skipped": s["skipped"],
        "reports": s["reports"],
        "secrets_needed": _needed_json(app, needed),
    }
    if s.get("ignored") is not None:  # a provisioning manifest: what it says that is not kept
        from wassette_state.cli.manifest import warn_not_imported

        data["not_imported"] = warn_not_imported(s)
    lines = []
    head = "plan (dry run, nothing written)" if dry_run else "import"
    if not s["plan"]:
        lines.append(f"{head}: nothing to change")
    else:
        lines.append(f"{head}:")
        lines.extend(f"  {p}" for p in s["plan"])
    if outcome.tx_id is not None:
        lines.append(f"recorded as tx {outcome.tx_id} ({plural(len(outcome.events), 'event')})")
    for r in s["reports"]:
        lines.append(f"note: {r['component_id']}: {r['note']}")
    for sk in s["skipped"]:
        warn(f"skipped {sk['component_id']}: {sk['reason']}")
    if needed:
        lines.append("secret values needed (the state file carries key names only):")
        lines.extend(_needed_lines(app, needed))
    emit(data, app.output, "\n".join(lines))


@state.command("show")
@click.option("--at", "at", metavar="WHEN", help="Show the state as it was then.")
@output_option
@pass_app
def show(app: App, at: str | None) -> None:
    """Print the state now or at any point (the export format)."""
    doc = snapshot_doc(app, at)
    if app.output != "text":
        emit(doc, app.output)
        return
    lines = [f"as of seq {doc['as_of']['seq']} ({doc['as_of']['recorded_at']})"]
    rows = []
    for c in doc["components"]:
        meta = c["metadata"] or {}
        rows.append(
            (
                c["component_id"],
                len(meta.get("tool_names") or []),
                "yes" if c["policy"] else "no",
                ",".join((c["secrets"] or {}).get("env_keys", [])),
                c["wasm_sha256"][:12],
            )
        )
    lines.append(
        table(["component", "tools", "policy", "secret keys", "sha256"], rows)
        if rows
        else "no components"
    )
    if doc["environment"]:
        lines.append("")
        lines.append(table(["env", "value"], sorted(doc["environment"].items())))
    emit(doc, app.output, "\n".join(lines))


def _confirm(yes: bool, dry_run: bool, what: str, noun: str | None = None) -> Any:
    """How a change that removes things is confirmed: not at all with --yes or --dry-run;
    on a terminal by asking (the plan first); without one, it is refused (as Wassette
    cancels): nobody saw the plan. Checked before the store is opened."""
    from wassette_state.cli.output import can_ask, escape

    if yes or dry_run:
        return None
    if not can_ask():
        raise click.UsageError(
            f"{what} changes the state and there is no terminal to confirm it on: pass --yes "
            "to apply it (--dry-run shows the plan)"
        )

    def ask(plan: list[str]) -> bool:
        # stderr: stdout stays machine-readable with -o json
        click.echo("plan:", err=True)
        for p in plan:
            click.echo(f"  {escape(p)}", err=True)
        return click.confirm(f"apply this {noun or what}?", default=False, err=True)

    return ask


def _needed_json(app: App, needed: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Secret values to supply: the command reads them on stdin (`stdin` is what to type,
    with each `…` replaced by the value), never from its command line."""
    from wassette_state.store.domain.secret_hints import secret_set_command, secret_set_input

    return [
        {
            "component_id": cid,
            "keys": keys,
            "command": secret_set_command(cid, keys, app.command_prefix),
            "stdin": secret_set_input(keys),
        }
        for cid, keys in needed.items()
    ]


def _needed_lines(app: App, needed: dict[str, list[str]]) -> list[str]:
    from wassette_state.store.domain.secret_hints import secret_set_hint

    return [f"  {secret_set_hint(cid, keys, app.command_prefix)}" for cid, keys in needed.items()]


def _rollback_report(app: App, outcome: Any, label: str) -> None:
    from wassette_state.store.usecases.secret_commands import secrets_needed

    s = outcome.summary
    ids = sorted({e.component_id for e in outcome.events if e.component_id})
    needed = secrets_needed(app.store, outcome.state, ids) if outcome.tx_id else {}
    data = {
        "status": "ok",
        "tx": outcome.tx_id,
        "events": [event_json(e) for e in outcome.events],
        "target_seq": s["target_seq"],
        "dry_run": s["dry_run"],
        "plan": s["plan"],
        "skipped": s.get("skipped", []),
        "secrets_needed": _needed_json(app, needed),
    }
    lines = []
    if not s["plan"] and s.get("skipped"):
        lines.append(f"{label}: nothing that can be restored differs from seq {s['target_seq']}")
    elif not s["plan"]:
        lines.append(f"{label}: the state already equals seq {s['target_seq']}; nothing to do")
    else:
        head = f"{label} to seq {s['target_seq']}" + (
            " (dry run, nothing written)" if s["dry_run"] else ""
        )
        lines.append(head + ":")
        lines.extend(f"  {p}" for p in s["plan"])
    if outcome.tx_id is not None:
        lines.append(f"recorded as tx {outcome.tx_id} ({plural(len(outcome.events), 'event')})")
    for sk in s.get("skipped", []):
        warn(f"skipped {sk['component_id']}: {sk['reason']}")
    if needed:
        lines.append("secret values needed (values are never in the log):")
        lines.extend(_needed_lines(app, needed))
    emit(data, app.output, "\n".join(lines))


@state.command(short_help="Return to the state at WHEN, as one new transaction.")
@click.option("--to", "to", required=True, metavar="WHEN", help="The point to return to.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit log).")
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave the values of secret keys it removes in the secrets files.",
)
@output_option
@pass_app
def rollback(
    app: App, to: str, dry_run: bool, yes: bool, reason: str | None, keep_secret_values: bool
) -> None:
    """Make the state equal to what it was at WHEN, as one new audited transaction.

    \b
    Examples:
      wassette-state state rollback --to tag:before-upgrade --reason "bad policy"
      wassette-state state rollback --to 15m --dry-run
    """
    from wassette_state.store.usecases.history import rollback as do

    confirm = _confirm(yes, dry_run, "rollback")
    outcome = do(
        app.store,
        to,
        dry_run=dry_run,
        reason=reason,
        confirm=confirm,
        keep_secret_values=keep_secret_values,
    )
    _rollback_report(app, outcome, "rollback")


@state.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit log).")
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave the values of secret keys it removes in the secrets files.",
)
@output_option
@pass_app
def undo(app: App, dry_run: bool, yes: bool, reason: str | None, keep_secret_values: bool) -> None:
    """Roll back the most recent transaction."""
    from wassette_state.store.usecases.history import undo as do

    confirm = _confirm(yes, dry_run, "undo", "rollback")
    outcome = do(
        app.store,
        dry_run=dry_run,
        reason=reason,
        confirm=confirm,
        keep_secret_values=keep_secret_values,
    )
    _rollback_report(app, outcome, "undo")


@state.command(short_help="List what changed between two points (default: until now).")
@click.argument("since", metavar="WHEN")
@click.argument("until", metavar="[WHEN]", required=False)
@output_option
@pass_app
def diff(app: App, since: str, until: str | None) -> None:
    """List what changed between two points (default second point: now).

    \b
    Example:
      wassette-state state diff tag:release-1 -o json
    """
    from wassette_state.store.domain.diff import diff as do
    from wassette_state.store.persistence import readmodel

    with app.store.reading() as conn:
        a, _ = _point(app, conn, since)
        b, _ = _point(app, conn, until)
        # Metadata is compared by hash first: only changed components' texts are fetched.
        lazy = readmodel.LazyBodies(app.store.engine)
        changes = do(readmodel.state_at(conn, a, lazy=lazy), readmodel.state_at(conn, b, lazy=lazy))
    data = [c.as_dict() for c in changes]
    rows: list[tuple[str, str, str, str]] = []
    for c in changes:
        cid = c.component_id or "-"
        rows.append((cid, c.field, _short(c.before), _short(c.after)))
        # a policy change: each rule it adds (after) and removes (before), one row each
        rules = c.rules or {}
        rows += [(cid, "policy rule", "-", r) for r in rules.get("added", [])]
        rows += [(cid, "policy rule", r, "-") for r in rules.get("removed", [])]
    text = (
        f"seq {a} → seq {b}\n" + table(["component", "field", "before", "after"], rows)
        if rows
        else f"no differences between seq {a} and seq {b}"
    )
    emit(data, app.output, text)


def _short(value: Any) -> str:
    import json

    if value is None:
        return "-"
    if isinstance(value, dict) and "policy_content" in value:
        import hashlib

        digest = hashlib.sha256(value["policy_content"].encode()).hexdigest()[:10]
        return f"policy {digest} ({value.get('source_uri')})"
    if isinstance(value, str):
        return value
    return json.dumps(value)


@state.command(short_help="Who last set each aspect of a component.")
@click.argument("component_id", metavar="ID")
@output_option
@pass_app
def blame(app: App, component_id: str) -> None:
    """For each aspect of a component (wasm, policy, each secret key): who last set it."""
    from wassette_state.store.domain.state import check_id
    from wassette_state.store.usecases.history import blame as do

    check_id(component_id)
    entries = do(app.store, component_id)
    data = [
        {**e, "recorded_at": iso_us(e["recorded_at"]) if e["recorded_at"] else None}
        for e in entries
    ]
    rows = [
        (
            e["aspect"],
            e["seq"] or "-",
            e["tx"] or "-",
            (e["recorded_at"] or "-")[:19].replace("T", " "),
            e["actor"] or "-",
            e["type"] or "-",
            e["command"] or "-",
        )
        for e in data
    ]
    emit(
        data,
        app.output,
        table(["aspect", "seq", "tx", "time (utc)", "actor", "event", "command"], rows),
    )


@state.command()
@click.argument("name")
@click.option("--at", "at", metavar="WHEN", help="The point to name (default now).")
@output_option
@pass_app
def tag(app: App, name: str, at: str | None) -> None:
    """Name a point in history, usable as tag:NAME wherever WHEN is."""
    from wassette_state.store.usecases.history import add_tag

    t = add_tag(app.store, name, at)
    emit({"status": "ok", **t}, app.output, f"tagged seq {t['seq']} as {name}")


@state.command()
@output_option
@pass_app
def tags(app: App) -> None:
    """List tags."""
    from wassette_state.store.usecases.history import list_tags

    items = [{**t, "created_at": iso_us(t["created_at"])} for t in list_tags(app.store)]
    rows = [
        (t["name"], t["seq"], t["created_at"][:19].replace("T", " "), t["actor"]) for t in items
    ]
    emit(
        items,
        app.output,
        table(["name", "seq", "created (utc)", "actor"], rows) if rows else "no tags",
    )


@state.command(short_help="Record changes made to the dirs outside wassette-state.")
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave the secrets file of a component recorded as gone (as Wassette's unload does).",
)
@output_option
@pass_app
def sync(app: App, keep_secret_values: bool) -> None:
    """Record changes made to the component and secrets dirs outside wassette-state (drift).

    A component whose wasm is gone (Wassette unloaded it) leaves the state, and its secrets
    file goes too, so a component loaded later under that id inherits no values;
    --keep-secret-values leaves the file, as Wassette's unload does.
    """
    from wassette_state.store.usecases.drift import sync as do

    outcome, drifts = do(app.store, keep_secret_values)
    lines = [
        f"{d.component_id}: {d.what}" + ("" if d.adoptable else " (not adopted)") for d in drifts
    ] or ["no drift: the files match the state"]
    if outcome.tx_id is not None:
        n = plural(len(outcome.events), "event")
        lines.append(f"recorded as tx {outcome.tx_id} ({n}, actor filesystem)")
    data = {
        "status": "ok",
        "tx": outcome.tx_id,
        "events": [event_json(e) for e in outcome.events],
        "drift": [d.as_dict() for d in drifts],
    }
    emit(data, app.output, "\n".join(lines))


def warn_drift(app: App, files: bool = True) -> None:
    """Export and verify mention drift: the files say something the log does not.

    `files=False` keeps the checks of the log against the marker but skips the scan of the
    component and secrets dirs: an export of a past point does not contain what the files
    hold now, so their drift does not concern it (and the scan reads every file).
    """
    from wassette_state.store.usecases.drift import find

    marker = app.store.own_marker()
    head = app.store.head_seq()
    if marker is not None and marker.get("seq", 0) > head:
        warn(
            f"the files were written for seq {marker['seq']} but the log ends at seq "
            f"{head}: committed events are missing (truncated WAL or an older database copy?)"
        )
        return
    if marker is not None and marker.get("seq") != head:
        warn("the files lag behind the log (an interrupted command); the next change repairs them")
        return
    if not files:
        return
    drifts = find(app.store).drifts
    if drifts:
        warn(
            f"{len(drifts)} change(s) in the component/secrets dirs are not in the log "
            f"(first: {drifts[0].component_id}: {drifts[0].what}); "
            "run 'wassette-state state sync' to record them"
        )
