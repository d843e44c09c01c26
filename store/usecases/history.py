"""Rollback, undo, blame and tags: history used to change or explain the present."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import exc as sa_exc

from wassette_state.store.domain.diff import reconcile
from wassette_state.store.domain.errors import NotFound, ValidationError, unknown_component
from wassette_state.store.domain.state import TAG_RE, State
from wassette_state.store.persistence import db, log, readmodel
from wassette_state.store.persistence.points import resolve_point
from wassette_state.store.persistence.schema import events, tags
from wassette_state.store.usecases.service import Decision, Outcome, Store


@dataclass(frozen=True)
class RollbackPlan:
    target_seq: int
    plan: list[str]
    event_count: int


def rollback(
    store: Store,
    when: str,
    *,
    dry_run: bool = False,
    reason: str | None = None,
    confirm: Any = None,
    command: str | None = None,
    keep_secret_values: bool = False,
) -> Outcome:
    """Make now equal to the state at WHEN by appending one `rollback` transaction.

    Values of secret keys it removes leave the secrets files, unless `keep_secret_values`."""
    with store.reading() as conn:
        target_seq = resolve_point(conn, when)
        target = readmodel.state_at(conn, target_seq)
    return _rollback_to(
        store,
        target_seq,
        target,
        dry_run,
        reason,
        confirm,
        command or f"state rollback --to {when}",
        keep_secret_values,
    )


def undo(
    store: Store,
    *,
    dry_run: bool = False,
    reason: str | None = None,
    confirm: Any = None,
    keep_secret_values: bool = False,
) -> Outcome:
    """Roll back the most recent transaction (which may itself be a rollback)."""
    with store.reading() as conn:
        _, _, last_tx, _ = log.head(conn)
        if last_tx == 0:
            raise NotFound("nothing to undo: the log is empty")
        first = conn.execute(
            select(events.c.seq).where(events.c.tx_id == last_tx).order_by(events.c.seq).limit(1)
        ).scalar_one()
        target_seq = first - 1
        target = readmodel.state_at(conn, target_seq)
    return _rollback_to(
        store,
        target_seq,
        target,
        dry_run,
        reason,
        confirm,
        f"{store.command_line or 'state undo'} (tx {last_tx})",
        keep_secret_values,
    )


def _rollback_to(
    store: Store,
    target_seq: int,
    target: State,
    dry_run: bool,
    reason: str | None,
    confirm: Any,
    command: str,
    keep_secret_values: bool = False,
) -> Outcome:
    from wassette_state.store.usecases import staging

    def decide(state: State) -> Decision:
        goal, skipped = _restorable(store, state, target)
        out, plan = reconcile(state, goal, prune=True)
        return Decision(
            out,
            details={"target_seq": target_seq, "plan": plan, "skipped": skipped},
            summary={
                "plan": plan,
                "target_seq": target_seq,
                "dry_run": dry_run,
                "skipped": skipped,
            },
        )

    current = store.state()
    preview = decide(current)
    if dry_run or not preview.events:
        return Outcome(None, [], current, preview.summary)
    if confirm is not None and not confirm(preview.summary["plan"]):
        raise ValidationError("rollback cancelled; nothing was changed")
    return store.execute(
        command,
        decide,
        kind="rollback",
        reason=reason,
        stage=staging.SecretsChange(store, staging.leaving_values(store, keep_secret_values)),
    )


def _restorable(store: Store, current: State, target: State) -> tuple[State, list[dict[str, str]]]:
    """The target, less components whose wasm bytes are nowhere to be found (left as they
    are now, and reported), so a rollback never records a component it cannot serve."""
    from wassette_state.store.files import fsutil
    from wassette_state.store.files.materialize import sha256_hex

    components = dict(target.components)
    skipped: list[dict[str, str]] = []
    for cid, comp in target.components.items():
        now = current.components.get(cid)
        if now is not None and now.wasm_sha256 == comp.wasm_sha256:
            continue
        if store.blobs.has(comp.wasm_sha256):
            continue
        local = fsutil.read_if_file(store.settings.component_dir / f"{cid}.wasm")
        if local is not None and sha256_hex(local) == comp.wasm_sha256:
            store.blobs.put(local, comp.wasm_sha256)
            continue
        if now is None:
            del components[cid]
        else:
            components[cid] = now
        skipped.append(
            {
                "component_id": cid,
                "reason": f"wasm {comp.wasm_sha256[:12]} is not in the blob store",
            }
        )
    return State(components, target.environment, target.paths), skipped


# ------------------------------------------------------------------ blame


def blame(store: Store, component_id: str) -> list[dict[str, Any]]:
    """For each aspect of a component, the event that last set it (newest-first walk of its
    stream, stopping at the attach that started its current life)."""
    with store.reading() as conn:
        comp = readmodel.state_at(conn, None, only=component_id).components.get(component_id)
        if comp is None:
            raise unknown_component(component_id)
        wanted: dict[str, Any] = {"wasm": None, "policy": None}
        for key in comp.secret_keys:
            wanted[f"secret:{key}"] = None
        life_start = None  # the oldest attach of the current life seen so far
        for batch in _walk(conn, component_id):
            ended = False
            for se in batch:
                if se.type == "component.detached":  # an earlier life of this id
                    ended = True
                    break
                _claim(wanted, se, comp)
                if se.type == "component.attached":
                    life_start = se
            if ended or all(v is not None for v in wanted.values()):
                break
        if wanted["policy"] is None and comp.policy is None:
            # No policy now and no policy event in this life: the first attach set "no policy"
            # (a re-attach keeps the policy, so only the attach that started the life counts).
            wanted["policy"] = life_start
    out = []
    for aspect, se in wanted.items():
        out.append(
            {
                "aspect": aspect,
                "seq": se.seq if se else None,
                "tx": se.tx_id if se else None,
                "recorded_at": se.recorded_at if se else None,
                "actor": se.actor if se else None,
                "kind": se.kind if se else None,
                "type": se.type if se else None,
                "command": se.command if se else None,
            }
        )
    return out


def _walk(conn: Connection, stream: str, batch: int = 200) -> Any:
    """Newest-first batches of one stream's events (served by the (stream, seq) index)."""
    upper: int | None = None
    while True:
        rows = log.read(
            conn,
            log.Query(stream=stream, to_seq=upper, limit=batch, reverse=True),
        )
        if not rows:
            return
        yield rows
        upper = rows[-1].seq - 1
        if upper < 1:
            return


def _claim(wanted: dict[str, Any], se: log.StoredEvent, comp: Any) -> None:
    t = se.type
    if t == "component.attached" and wanted["wasm"] is None:
        wanted["wasm"] = se
    if t.startswith("policy.") and wanted["policy"] is None:
        wanted["policy"] = se
    if t == "secret.keys_set":
        for key in se.data.get("keys", []):
            if wanted.get(f"secret:{key}", 0) is None:
                wanted[f"secret:{key}"] = se


# ------------------------------------------------------------------ tags


def add_tag(store: Store, name: str, when: str | None = None) -> dict[str, Any]:
    if not TAG_RE.fullmatch(name) or len(name) > 100:
        raise ValidationError(f"invalid tag name {name[:40]!r} (letters, digits, '.', '_', '-')")
    with db.write_tx(store.engine) as conn:
        seq = resolve_point(conn, when) if when is not None else log.head(conn)[0]
        exists = conn.execute(select(tags.c.seq).where(tags.c.name == name)).scalar()
        if exists is not None:
            raise ValidationError(f"tag {name!r} already exists (at seq {exists})")
        try:
            conn.execute(
                insert(tags).values(
                    name=name,
                    seq=seq,
                    created_at=time.time_ns() // 1000,
                    actor=store.settings.actor,
                )
            )
        except sa_exc.IntegrityError:
            raise ValidationError(f"tag {name!r} already exists") from None
    return {"name": name, "seq": seq}


def list_tags(store: Store) -> list[dict[str, Any]]:
    with store.reading() as conn:
        rows = conn.execute(
            select(tags.c.name, tags.c.seq, tags.c.created_at, tags.c.actor).order_by(
                tags.c.seq, tags.c.name
            )
        ).all()
    return [{"name": r[0], "seq": r[1], "created_at": r[2], "actor": r[3]} for r in rows]
