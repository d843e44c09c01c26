"""Temporal read models: one row per version of each component and instance setting.

State as of seq S = for each entity, its latest row with from_seq <= S if that row is still open
at S. Large immutable values (metadata, policy text) live once in `contents`, by sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, or_, select, true, update

from wassette_state.store.domain.errors import StoreError
from wassette_state.store.domain.gcutil import gc_paused
from wassette_state.store.domain.state import Component, Metadata, Paths, Policy, State, compact
from wassette_state.store.persistence import backend, db
from wassette_state.store.persistence.log import StoredEvent
from wassette_state.store.persistence.schema import (
    component_versions,
    contents,
    entities,
    setting_versions,
)

if TYPE_CHECKING:  # replays load the event models; reading a state does not
    from wassette_state.store.domain import events as ev


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Encoder:
    """Turns domain values into row JSON + content blobs; caches hashes of shared objects."""

    def __init__(self) -> None:
        self.blobs: dict[str, str] = {}
        # Texts of a base state are stored already (and may not even be loaded: states hand
        # them out by hash): while `base` is on, their hashes are only noted, so a new version
        # that keeps them (a secret key set, a grant) never fetches or rewrites them.
        self.base = False
        self.stored: set[str] = set()

    def _keep(self, ref: str, text: Callable[[], str]) -> None:
        if self.base:
            self.stored.add(ref)
        elif ref not in self.blobs and ref not in self.stored:
            self.blobs[ref] = text()

    def _metadata_ref(self, metadata: Metadata) -> str:
        ref = metadata.sha256
        self._keep(ref, lambda: metadata.raw)
        return ref

    def component(self, c: Component) -> str:
        policy = None
        if c.policy is not None:
            p = c.policy
            ref = p.sha256
            self._keep(ref, lambda: p.policy_content)
            policy = {
                "content": ref,
                "source_uri": c.policy.source_uri,
                "attached_at": c.policy.attached_at,
            }
        return compact(
            {
                "source_uri": c.source_uri,
                "wasm_sha256": c.wasm_sha256,
                "metadata": self._metadata_ref(c.metadata),
                "policy": policy,
                "secret_keys": list(c.secret_keys),
            }
        )

    @staticmethod
    def setting(value: object) -> str:
        if isinstance(value, Paths):
            return compact({"component_dir": value.component_dir, "secrets_dir": value.secrets_dir})
        return compact(value)


@dataclass
class Change:
    kind: str  # component | setting
    key: str
    seq: int
    state: str | None  # None: the entity leaves the state at seq


@dataclass
class Deriver:
    """Replays events over the entities' current values, emitting version-row changes."""

    components: dict[str, tuple[Component, str]] = field(default_factory=dict)
    settings: dict[str, tuple[object, str]] = field(default_factory=dict)
    encoder: Encoder = field(default_factory=Encoder)

    def feed(self, seq: int, event: ev.Event, metadata: Metadata | None = None) -> Change | None:
        from wassette_state.store.domain.fold import evolve_component, evolve_setting, setting_key

        cid = getattr(event, "component_id", None)
        if cid is not None:
            cur = self.components.get(cid)
            nxt = evolve_component(cur[0] if cur else None, event, metadata)
            if nxt is None:
                if cur is None:
                    return None
                del self.components[cid]
                return Change("component", cid, seq, None)
            encoded = self.encoder.component(nxt)
            self.components[cid] = (nxt, encoded)
            if cur is not None and cur[1] == encoded:
                return None
            return Change("component", cid, seq, encoded)
        key = setting_key(event)
        if key is None:
            return None
        old = self.settings.get(key)
        value = evolve_setting(key, old[0] if old else None, event)
        if value is None:
            if old is None:
                return None
            del self.settings[key]
            return Change("setting", key, seq, None)
        encoded = self.encoder.setting(value)
        self.settings[key] = (value, encoded)
        if old is not None and old[1] == encoded:
            return None
        return Change("setting", key, seq, encoded)


def _table(kind: str) -> Any:
    return component_versions if kind == "component" else setting_versions


def _key_col(kind: str) -> Any:
    return component_versions.c.component_id if kind == "component" else setting_versions.c.key


def _state_col(kind: str) -> Any:
    return component_versions.c.state if kind == "component" else setting_versions.c.value


def deriver_for(base: State, touched: set[str] | None = None) -> Deriver:
    """A deriver positioned at `base`, for the touched entities only (None: all of them)."""
    d = Deriver()
    d.encoder.base = True
    for cid, comp in base.components.items():
        if touched is None or cid in touched:
            d.components[cid] = (comp, d.encoder.component(comp))
    for name, value in base.environment.items():
        if touched is None or f"env:{name}" in touched:
            d.settings[f"env:{name}"] = (value, d.encoder.setting(value))
    if base.paths is not None and (touched is None or "paths" in touched):
        d.settings["paths"] = (base.paths, d.encoder.setting(base.paths))
    d.encoder.base = False
    return d


def apply(
    conn: Connection,
    stored: list[StoredEvent],
    base: State,
    originals: list[ev.Event] | None = None,
    metadata: Mapping[int, Metadata] | None = None,
) -> None:
    """Update the read models for freshly appended events, inside the append's transaction.

    `base` is the state the events were decided on; the append's version check guarantees the
    touched streams have not moved since. Rows are written in batches: one UPDATE closes the
    open version of each touched entity, one INSERT adds the new versions.
    """
    if originals is not None:  # the validated events the append came from: no re-validation
        decoded = [(se.seq, e) for se, e in zip(stored, originals, strict=True)]
    else:
        decoded = [(se.seq, se.event()) for se in stored]
    from wassette_state.store.domain.fold import setting_key

    touched = {getattr(e, "component_id", None) or setting_key(e) or "" for _, e in decoded}
    d = deriver_for(base, touched)
    rows: dict[str, list[list[Any]]] = {"component": [], "setting": []}
    first_change: dict[tuple[str, str], int] = {}
    open_rows: dict[tuple[str, str], list[Any]] = {}
    metadata = metadata or {}
    for seq, event in decoded:
        change = d.feed(seq, event, metadata.get(seq))
        if change is None:
            continue
        k = (change.kind, change.key)
        first_change.setdefault(k, change.seq)
        prev = open_rows.pop(k, None)
        if prev is not None:
            prev[2] = change.seq
        if change.state is not None:
            row = [change.key, change.seq, None, change.state]
            open_rows[k] = row
            rows[change.kind].append(row)
    for kind in ("component", "setting"):
        table, key_col, state_col = _table(kind), _key_col(kind), _state_col(kind)
        closes = [{"k": key, "s": seq} for (kd, key), seq in first_change.items() if kd == kind]
        if closes:
            conn.execute(
                update(table)
                .where(and_(key_col == bindparam("k"), table.c.to_seq.is_(None)))
                .values(to_seq=bindparam("s")),
                closes,
            )
        if rows[kind]:
            db.bulk_insert(
                conn, table, (key_col.name, "from_seq", "to_seq", state_col.name), rows[kind]
            )
    _write_blobs(conn, d.encoder.blobs)
    db.bulk_insert(conn, entities, ("kind", "key"), sorted(first_change), ignore_existing=True)


def _write_blobs(conn: Connection, blobs: Mapping[str, str]) -> None:
    """Content-addressed: a text already stored is the same text, so conflicts are skipped."""
    db.bulk_insert(conn, contents, ("hash", "body"), list(blobs.items()), ignore_existing=True)


# ---------------------------------------------------------------- full derivation


@dataclass
class Rows:
    """The read models as derived from the log, ready to write or to compare."""

    components: list[list[Any]] = field(default_factory=list)  # [key, from, to, state]
    settings: list[list[Any]] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)


class RowBuilder:
    """Accumulates the version rows of a replay, one event at a time (bounded by entities)."""

    def __init__(self, validate: bool = True) -> None:
        # `verify` validates every event; `rebuild` trusts what was validated on the way in.
        self.validate = validate
        self.deriver = Deriver()
        self.rows = Rows()
        self._open: dict[tuple[str, str], list[Any]] = {}

    def feed(self, se: StoredEvent) -> None:
        event = se.event() if self.validate else se.trusted_event()
        change = self.deriver.feed(se.seq, event, _stored_metadata(se))
        if change is None:
            return
        k = (change.kind, change.key)
        prev = self._open.pop(k, None)
        if prev is not None:
            prev[2] = change.seq
        if change.state is not None:
            row = [change.key, change.seq, None, change.state]
            self._open[k] = row
            (self.rows.components if change.kind == "component" else self.rows.settings).append(row)

    def result(self) -> Rows:
        self.rows.blobs = self.deriver.encoder.blobs
        return self.rows


_META_KEY = ',"metadata":'


def _stored_metadata(se: StoredEvent) -> Metadata | None:
    """An attach's metadata as the very text stored in the log, without re-encoding it.

    The log writes `metadata` as the last field of an attach, after the compact encoding of
    the other (small) fields: when the text starts with exactly those, the rest up to the
    closing brace is the compact metadata text. Any other layout (stores written before the
    stored form kept this order held sorted keys) is re-encoded from the data instead.
    """
    if se.type != "component.attached" or se.data_text is None:
        return None
    text = se.data_text
    head = compact({k: v for k, v in se.data.items() if k != "metadata"})
    at = len(head) - 1
    if not (text.startswith(head[:-1]) and text.startswith(_META_KEY, at) and text.endswith("}")):
        return None
    return Metadata(doc=se.data["metadata"], raw=text[at + len(_META_KEY) : -1])


def derive(stored: Iterable[StoredEvent], validate: bool = True) -> Rows:
    builder = RowBuilder(validate)
    for se in stored:
        builder.feed(se)
    return builder.result()


def write_all(conn: Connection, rows: Rows) -> None:
    """Replace the read models with `rows` (used by rebuild)."""
    conn.execute(delete(component_versions))
    conn.execute(delete(setting_versions))
    conn.execute(delete(entities))
    for kind, items in (("component", rows.components), ("setting", rows.settings)):
        table, key_col, state_col = _table(kind), _key_col(kind), _state_col(kind)
        db.bulk_insert(conn, table, (key_col.name, "from_seq", "to_seq", state_col.name), items)
        keys = sorted({r[0] for r in items})
        db.bulk_insert(
            conn, entities, ("kind", "key"), [(kind, k) for k in keys], ignore_existing=True
        )
    _write_blobs(conn, rows.blobs)


def read_all(conn: Connection) -> Rows:
    """The read-model tables as stored, in the same shape as `derive` (for verify)."""
    rows = Rows()
    for kind, target in (("component", rows.components), ("setting", rows.settings)):
        table, key_col, state_col = _table(kind), _key_col(kind), _state_col(kind)
        for r in conn.execute(
            select(key_col, table.c.from_seq, table.c.to_seq, state_col).order_by(
                table.c.from_seq, key_col
            )
        ):
            target.append(list(r))
    return rows


# ---------------------------------------------------------------- as-of queries


def _latest(conn: Connection, kind: str, at: int | None, keys: Iterable[str] | None = None) -> Any:
    """(key, state) of every entity of `kind` as of seq `at` (None: now), or of `keys` only."""
    table, key_col, state_col = _table(kind), _key_col(kind), _state_col(kind)
    if at is None:
        stmt = select(key_col, state_col).where(table.c.to_seq.is_(None))
        return stmt if keys is None else stmt.where(key_col.in_(keys))
    inner = table.alias("v")
    before = and_(inner.c[key_col.name] == entities.c.key, inner.c.from_seq <= at)
    if backend.of(conn).lateral_as_of:
        # Each entity's version row read straight from its backward index scan; the
        # scalar-subquery form below made PostgreSQL hash-join a scan of every version.
        latest = (
            select(inner.c[state_col.name].label("state"), inner.c.to_seq)
            .where(before)
            .order_by(inner.c.from_seq.desc())
            .limit(1)
            .lateral("latest")
        )
        stmt = (
            select(entities.c.key, latest.c.state)
            .select_from(entities.join(latest, true()))
            .where(
                and_(
                    entities.c.kind == kind,
                    or_(latest.c.to_seq.is_(None), latest.c.to_seq > at),
                )
            )
        )
        return stmt if keys is None else stmt.where(entities.c.key.in_(keys))
    latest_id = (
        select(inner.c.id).where(before).order_by(inner.c.from_seq.desc()).limit(1)
    ).scalar_subquery()
    stmt = (
        select(key_col, state_col)
        .select_from(entities.join(table, table.c.id == latest_id))
        .where(and_(entities.c.kind == kind, or_(table.c.to_seq.is_(None), table.c.to_seq > at)))
    )
    return stmt if keys is None else stmt.where(key_col.in_(keys))


class LazyBodies:
    """Metadata texts of a state, fetched by hash on first use, all pending ones at once.

    Contents are immutable and content-addressed, so fetching later yields the same bytes the
    state named; a state whose metadata nobody reads (as-of queries, diffs by hash, rollback
    decisions) never moves the 30–40 MB of tool schemas of a large fleet.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: set[str] = set()
        self.loaded: dict[str, str] = {}

    def want(self, ref: str) -> None:
        self.pending.add(ref)

    def __call__(self, ref: str) -> str:
        if ref not in self.loaded:
            refs = self.pending | {ref}
            self.pending = set()
            with db.read_tx(self.engine) as conn:
                self.loaded.update(_bodies(conn, refs))
        body = self.loaded.get(ref)  # kept: components can share a text (same policy)
        if body is None:
            raise StoreError(f"content {ref[:12]} is missing from the store (run 'state verify')")
        return body


def state_at(
    conn: Connection,
    at: int | None = None,
    only: str | Iterable[str] | None = None,
    settings: bool | None = None,
    lazy: LazyBodies | None = None,
) -> State:
    """State after seq `at` (None: now). Cost grows with the number of entities, not history.

    `only` restricts the components read; settings (environment, paths) are then skipped too
    unless `settings` is true. With `lazy`, metadata texts are fetched on first use.
    """
    if settings is None:
        settings = only is None
    with gc_paused():
        return _state_at(conn, at, only, settings, lazy)


def _state_at(
    conn: Connection,
    at: int | None,
    only: str | Iterable[str] | None,
    settings: bool,
    lazy: LazyBodies | None,
) -> State:
    comp_rows: list[tuple[str, Any]] = []
    if only is None:
        comp_rows = [(k, json.loads(s)) for k, s in conn.execute(_latest(conn, "component", at))]
    else:
        wanted = sorted({only} if isinstance(only, str) else set(only))
        for i in range(0, len(wanted), 500):
            stmt = _latest(conn, "component", at, wanted[i : i + 500])
            comp_rows.extend((k, json.loads(s)) for k, s in conn.execute(stmt))
    refs: set[str] = set()
    if lazy is None:
        refs = {s["metadata"] for _, s in comp_rows}
        refs |= {s["policy"]["content"] for _, s in comp_rows if s["policy"]}
    bodies = _bodies(conn, refs)
    components: dict[str, Component] = {}
    for cid, s in sorted(comp_rows):
        mref = s["metadata"]
        p = s["policy"]
        if lazy is None:
            metadata = Metadata(raw=bodies[mref], ref=mref)
        else:
            lazy.want(mref)
            metadata = Metadata(ref=mref, loader=lazy)
        components[cid] = Component(
            component_id=cid,
            source_uri=s["source_uri"],
            wasm_sha256=s["wasm_sha256"],
            metadata=metadata,
            policy=None if p is None else _policy(p, bodies, lazy),
            secret_keys=tuple(s["secret_keys"]),
        )
    environment: dict[str, str] = {}
    paths: Paths | None = None
    if settings:
        for key, value in sorted(conn.execute(_latest(conn, "setting", at))):
            decoded = json.loads(value)
            if key == "paths":
                paths = Paths(decoded["component_dir"], decoded["secrets_dir"])
            elif key.startswith("env:"):
                environment[key[4:]] = decoded
    return State(components=components, environment=environment, paths=paths)


def _policy(p: dict[str, Any], bodies: dict[str, str], lazy: LazyBodies | None) -> Policy:
    ref = p["content"]
    if lazy is None:
        return Policy(bodies[ref], p["source_uri"], p["attached_at"], ref=ref)
    lazy.want(ref)
    return Policy(None, p["source_uri"], p["attached_at"], ref=ref, loader=lazy)


def _bodies(conn: Connection, refs: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    ordered = sorted(refs)
    for i in range(0, len(ordered), 500):
        chunk = ordered[i : i + 500]
        out.update(
            (h, b)
            for h, b in conn.execute(
                select(contents.c.hash, contents.c.body).where(contents.c.hash.in_(chunk))
            )
        )
    return out


def known_components(conn: Connection) -> set[str]:
    """Every component id the store has ever seen (their files may need removing)."""
    return set(conn.execute(select(entities.c.key).where(entities.c.kind == "component")).scalars())


def current_component_ids(conn: Connection) -> set[str]:
    return set(
        conn.execute(
            select(component_versions.c.component_id).where(component_versions.c.to_seq.is_(None))
        ).scalars()
    )
