"""The benchmark harness: every figure of the performance issue, medians, ratios, one table.

    python -m bench            # full sizes (10k components, 1M events; generated once, cached)
    python -m bench --quick    # small sizes, < 1 minute; CI runs it as a smoke check
    python -m bench --json     # the same figures as JSON on stdout (table on stderr)

Each figure is the median of several runs. Ratios against the limit (raw sqlite3) and the peer
(eventsourcing) are computed from runs interleaved with the project's own, in the same process
and the same minute, so machine load affects both sides alike. Targets are reported, never
asserted: the exit status is 0 whenever every figure could be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import baselines
from bench import generate as gen

ACTOR = "bench@runner"


@dataclass(frozen=True)
class Sizes:
    runs: int  # runs of the quick in-process figures
    host: tuple[int, int]  # (components, events): one Wassette host, one command per tx
    fleet_small: tuple[int, int]  # the "100k events" store
    fleet: tuple[int, int]  # the "1M events" store
    fleet_commands_per_tx: int
    appends_per_run: int
    fleet_appends: int  # Store.execute appends on the 10k-component store (0: skip)
    read_runs: int  # state-as-of and history samples
    cli_runs: int  # export runs
    import_runs: int
    rebuild_runs: int
    cold_runs: int


FULL = Sizes(
    runs=5,
    host=(200, 20_000),
    fleet_small=(10_000, 100_000),
    fleet=(10_000, 1_000_000),
    fleet_commands_per_tx=16,
    appends_per_run=200,
    fleet_appends=20,
    read_runs=15,
    cli_runs=5,
    import_runs=3,
    rebuild_runs=3,
    cold_runs=10,
)
QUICK = Sizes(
    runs=3,
    host=(20, 1_000),
    fleet_small=(100, 1_000),
    fleet=(100, 3_000),
    fleet_commands_per_tx=16,
    appends_per_run=20,
    fleet_appends=0,
    read_runs=5,
    cli_runs=2,
    import_runs=1,
    rebuild_runs=2,
    cold_runs=2,
)


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    id: str
    title: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)
    raw_samples: list[float] = field(default_factory=list)
    peer_samples: list[float] = field(default_factory=list)
    limit_label: str = "raw sqlite3"
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable here
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0

    @property
    def raw(self) -> float | None:
        return statistics.median(self.raw_samples) if self.raw_samples else None

    @property
    def peer(self) -> float | None:
        return statistics.median(self.peer_samples) if self.peer_samples else None

    def speed_vs(self, other: float | None) -> float | None:
        """How fast we are relative to `other` (1.0 = same; > 1 = faster)."""
        if other is None or not self.value or not other:
            return None
        return self.value / other if self.higher_is_better else other / self.value

    @property
    def vs_raw(self) -> float | None:
        return self.speed_vs(self.raw)

    @property
    def vs_peer(self) -> float | None:
        return self.speed_vs(self.peer)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "value": self.value,
            "samples": self.samples,
            "higher_is_better": self.higher_is_better,
            "limit": self.raw,
            "limit_label": self.limit_label,
            "limit_samples": self.raw_samples,
            "vs_limit": self.vs_raw,
            "peer": self.peer,
            "peer_samples": self.peer_samples,
            "vs_peer": self.vs_peer,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "details": self.details,
        }


class Clock:
    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Clock:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- context


@dataclass
class Ctx:
    sizes: Sizes
    work: Path
    cache: Path
    seed: int
    regenerate: bool
    progress: bool
    stores: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def store_dir(self, name: str) -> tuple[Path, dict[str, Any]]:
        if name not in self.stores:
            comps, events = getattr(self.sizes, name)
            cpt = 1 if name == "host" else self.sizes.fleet_commands_per_tx
            log(
                f"store {name}: {comps:,} components, {events:,} events (cached under {self.cache})"
            )
            self.stores[name] = gen.ensure(
                comps,
                events,
                self.seed,
                commands_per_tx=cpt,
                cache_dir=self.cache,
                regenerate=self.regenerate,
                progress=self.progress,
            )
        return self.stores[name]

    def tmp(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return path

    def copy_store(self, name: str, with_files: bool = True) -> Path:
        """A private copy of a cached store (the cache itself is never written)."""
        src, _ = self.store_dir(name)
        dst = self.tmp(f"copy-{name}")
        if with_files:
            shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=_link_or_copy)
            for f in ("state.db", "state.db-wal", "state.db-shm", "materialized.json"):
                p = dst / f
                if p.exists():
                    p.unlink()
                    if (src / f).exists():
                        shutil.copy2(src / f, p)
        else:
            for f in ("state.db", "state.db-wal"):
                if (src / f).exists():
                    shutil.copy2(src / f, dst / f)
        return dst


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links for blobs and materialized files (replaced atomically, never edited)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def settings_for(root: Path) -> Any:
    from wassette_state.store.files.config import resolve

    return resolve(str(root / "state.db"), str(root / "components"), str(root / "secrets"), ACTOR)


def open_store(root: Path) -> Any:
    from wassette_state.store.usecases.service import Store

    return Store(settings_for(root))


def wassette_exe() -> str:
    candidate = Path(sys.executable).parent / "wassette-state"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("wassette-state")
    if found is None:
        raise RuntimeError("the wassette-state console script is not installed (pip install .)")
    return found


def cli_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    env.update(
        WASSETTE_STATE_DB=str(root / "state.db"),
        WASSETTE_COMPONENT_DIR=str(root / "components"),
        WASSETTE_SECRETS_DIR=str(root / "secrets"),
        WASSETTE_ACTOR=ACTOR,
    )
    return env


def budgeted(runs: int, budget_s: float, one: Callable[[int], float]) -> tuple[list[float], str]:
    """Up to `runs` samples of `one(i)`, stopping early (after at least one) once the samples
    have used `budget_s` seconds: a figure that misses its target by 100× must not hold the
    run hostage. Returns the samples and a note when runs were cut."""
    samples: list[float] = []
    spent = 0.0
    for i in range(runs):
        with Clock() as c:
            samples.append(one(i))
        spent += c.seconds
        if spent >= budget_s and i + 1 < runs:
            return samples, f"{len(samples)} of {runs} runs (time budget {budget_s:.0f}s)"
    return samples, ""


def run_cli(args: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one `wassette-state …` process; a failure is an error of the figure."""
    with Clock() as c:
        proc = subprocess.run(
            [wassette_exe(), *args], env=env, cwd=cwd, capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"wassette-state {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[:500]}"
        )
    return c.seconds


# --------------------------------------------------------------------------- appends


def single_events(base: Any, count: int, rng: random.Random) -> list[Any]:
    """Realistic one-event commands on a store's current state: permission grants/revokes
    (real policy edits), secret key sets, env sets — in rotation."""
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.policy_edit import grant, revoke

    ids = sorted(base.components)
    contents = {
        cid: (c.policy.policy_content if c.policy else None) for cid, c in base.components.items()
    }
    out: list[Any] = []
    for i in range(count):
        cid = rng.choice(ids)
        kind = i % 3
        if kind == 0:
            host = rng.choice(gen.HOSTS)
            content = contents[cid]
            new, change = grant(content, cid, "network", host)
            if new == content:
                new, change = revoke(content, cid, "network", host)
            contents[cid] = new
            creating = content is None
            out.append(
                ev.PolicyChanged(
                    component_id=cid,
                    policy_content=new,
                    change=change,
                    source_uri=f"file:///srv/components/{cid}.policy.yaml" if creating else None,
                    attached_at=1_764_000_000 if creating else None,
                )
            )
        elif kind == 1:
            keys = sorted(rng.sample(gen.SECRET_KEYS, 1))
            out.append(ev.SecretKeysSet(component_id=cid, keys=keys))
        else:
            key = rng.choice(gen.ENV_KEYS)
            out.append(ev.EnvSet(key=key, value=f"{key.lower()}-{i}"))
    return out


def fig_append_single(ctx: Ctx) -> list[Figure]:
    """1 event per transaction, durable, through Store.execute (+ diagnostics)."""
    from wassette_state.store.domain.fold import project
    from wassette_state.store.persistence import db, log, readmodel
    from wassette_state.store.usecases.service import Decision

    sz = ctx.sizes
    k = sz.appends_per_run
    warm = 3
    ours_root = ctx.copy_store("host")
    logp_root = ctx.copy_store("host", with_files=False)
    raw_root = ctx.copy_store("host", with_files=False)
    ours = open_store(ours_root)
    logp = open_store(logp_root)
    base = ours.state()
    total = warm + sz.runs * k
    events = single_events(base, total, random.Random(11))
    prepared = baselines.prepare(events, base)
    raw = baselines.RawWriter(raw_root / "state.db")

    peer = None
    versions = baselines.StreamVersions()
    if baselines.peer_available():
        peer = baselines.Peer(ctx.tmp("peer-append") / "peer.db")
        src = sqlite3.connect(ours_root / "state.db")
        rows = src.execute("SELECT stream, stream_version, type, data FROM events ORDER BY seq")
        peer.prefill(rows)
        versions = baselines.StreamVersions(
            dict(src.execute("SELECT stream, max(stream_version) FROM events GROUP BY stream"))
        )
        src.close()
    peer_events = [(p.stream, p.type, p.data) for p in prepared]

    state = base
    cursor = {"ours": 0, "log": 0, "raw": 0, "peer": 0}

    def do_ours(n: int) -> None:
        for _ in range(n):
            e = events[cursor["ours"]]
            cursor["ours"] += 1
            # The scope the real command passes (permission/secret set: the component; env: none).
            cid = getattr(e, "component_id", None)
            ours.execute(
                "bench append",
                lambda _s, e=e: Decision([e]),
                scope={cid} if cid else set(),
            )

    def do_log(n: int) -> None:
        nonlocal state
        for _ in range(n):
            e = events[cursor["log"]]
            cursor["log"] += 1
            with db.write_tx(logp.engine) as conn:
                appended = log.append(conn, log.TxInfo(actor=ACTOR, command="bench append"), [e])
                readmodel.apply(conn, appended.events, state)
            state = project([e], state)

    def do_raw(n: int) -> None:
        for _ in range(n):
            raw.append_one(prepared[cursor["raw"]])
            cursor["raw"] += 1

    def do_peer(n: int) -> None:
        assert peer is not None
        for _ in range(n):
            stream, type_, data = peer_events[cursor["peer"]]
            cursor["peer"] += 1
            peer.append([peer.stored(stream, versions.next(stream), type_, data)])

    systems: list[tuple[str, Callable[[int], None]]] = [
        ("ours", do_ours),
        ("log", do_log),
        ("raw", do_raw),
    ]
    if peer is not None:
        systems.append(("peer", do_peer))
    for _, fn in systems:
        fn(warm)
    samples: dict[str, list[float]] = {name: [] for name, _ in systems}
    for _ in range(sz.runs):
        for name, fn in systems:
            with Clock() as c:
                fn(k)
            samples[name].append(k / c.seconds)
    ours.close()
    logp.close()
    raw.close()
    if peer is not None:
        peer.close()

    comps = len(base.components)
    main = Figure(
        "append_single",
        f"append 1 event/tx, durable, Store.execute ({comps} comps)",
        "events/s",
        True,
        samples=samples["ours"],
        raw_samples=samples["raw"],
        peer_samples=samples.get("peer", []),
        target="≥ 50 % of raw sqlite3 and ≥ 1.5× eventsourcing",
        details={"appends_per_run": k, "components": comps, "synchronous": "FULL"},
    )
    vr, vp = main.vs_raw, main.vs_peer
    main.met = (vr is not None and vr >= 0.5) and (vp is None or vp >= 1.5)
    if peer is not None:
        main.details["peer_synchronous"] = peer.synchronous
        main.details["peer_journal_mode"] = peer.journal_mode
    else:
        main.note = "peer not installed (pip install .[bench])"
    diag = Figure(
        "append_single_log",
        "  diag: same, log.append + readmodel.apply only",
        "events/s",
        True,
        samples=samples["log"],
        raw_samples=samples["raw"],
        peer_samples=samples.get("peer", []),
        note="no decide/state read/materialize: the persistence layer alone",
    )
    return [main, diag]


def fig_append_fleet(ctx: Ctx) -> list[Figure]:
    """Informational: Store.execute on a 10k-component store, with the scope the real
    command passes (its component; none for env): the cost does not grow with the fleet."""
    from wassette_state.store.usecases.service import Decision

    n = ctx.sizes.fleet_appends
    if n <= 0:
        return []
    root = ctx.copy_store("fleet_small")
    store = open_store(root)
    store.repair_files()  # the copy's dirs differ from the recorded ones: materialize once
    base = store.state()
    events = single_events(base, n + 1, random.Random(12))

    def scope(e: Any) -> set[str]:
        cid = getattr(e, "component_id", None)
        return {cid} if cid else set()

    store.execute("bench append", lambda _s: Decision([events[0]]), scope=scope(events[0]))
    samples = []
    for e in events[1:]:
        with Clock() as c:
            store.execute("bench append", lambda _s, e=e: Decision([e]), scope=scope(e))
        samples.append(1 / c.seconds)
    store.close()
    return [
        Figure(
            "append_single_fleet",
            f"  info: same on {len(base.components):,} comps",
            "events/s",
            True,
            samples=samples,
            note="scoped like the real command: no state read beyond its component",
        )
    ]


def import_events(ctx: Ctx) -> tuple[list[Any], Any]:
    """The events an import of the fleet store's current state into an empty store appends."""
    from wassette_state.store.domain.diff import reconcile
    from wassette_state.store.domain.state import State

    root, _ = ctx.store_dir("fleet")
    store = open_store(root)
    target = store.state()
    store.close()
    events, _ = reconcile(State(), target, prune=False, components=set(target.components))
    return events, target


def fig_append_batch(ctx: Ctx) -> list[Figure]:
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.state import State
    from wassette_state.store.persistence import db, log, readmodel

    events, target = import_events(ctx)
    prepared = baselines.prepare(events, State())
    peer_rows: list[tuple[str, int, str, str]] = []
    versions = baselines.StreamVersions()
    for p in prepared:
        peer_rows.append((p.stream, versions.next(p.stream), p.type, p.data))
    streams = sorted({ev.stream_of(e) for e in events})
    samples: dict[str, list[float]] = {"ours": [], "raw": [], "peer": []}
    for run in range(ctx.sizes.runs if len(events) < 100_000 else 3):
        root = ctx.tmp(f"batch-ours-{run}")
        store = open_store(root)
        with Clock() as c:
            with store.reading() as conn:
                base = readmodel.state_at(conn)
                expected = log.stream_versions(conn, streams)
            with db.write_tx(store.engine) as conn:
                appended = log.append(
                    conn,
                    log.TxInfo(actor=ACTOR, command="state import snapshot.yaml", kind="import"),
                    events,
                    expected,
                )
                readmodel.apply(conn, appended.events, base, events, appended.metadata)
        store.close()
        samples["ours"].append(len(events) / c.seconds)

        raw_root = ctx.tmp(f"batch-raw-{run}")
        open_store(raw_root).close()  # the project creates the schema
        writer = baselines.RawWriter(raw_root / "state.db")
        with Clock() as c:
            writer.append_batch(prepared)
        writer.close()
        samples["raw"].append(len(events) / c.seconds)

        if baselines.peer_available():
            peer = baselines.Peer(ctx.tmp(f"batch-peer-{run}") / "peer.db")
            stored = [peer.stored(s, v, t, d) for s, v, t, d in peer_rows]
            with Clock() as c:
                peer.append(stored)
            peer.close()
            samples["peer"].append(len(events) / c.seconds)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(raw_root, ignore_errors=True)
    f = Figure(
        "append_batch",
        f"batched append: import {len(target.components):,} comps ({len(events):,} events, 1 tx)",
        "events/s",
        True,
        samples=samples["ours"],
        raw_samples=samples["raw"],
        peer_samples=samples["peer"],
        limit_label="raw sqlite3 executemany",
        target="≥ 30k events/s and ≥ 40 % of raw sqlite3 executemany",
        details={"events": len(events), "components": len(target.components)},
    )
    f.met = f.value >= 30_000 and (f.vs_raw or 0) >= 0.4
    return [f]


# --------------------------------------------------------------------------- reads


def _steady_seqs(stats: dict[str, Any], n: int, rng: random.Random) -> list[int]:
    """Random points after every component was attached (the state holds all of them)."""
    lo = (stats.get("setup_events") or 1) + 1
    hi = stats["events"]
    return [rng.randint(lo, max(lo, hi)) for _ in range(n)]


def _state_samples(ctx: Ctx, name: str, full: bool = False) -> tuple[list[float], list[float], int]:
    """`Store.state(at)` at random points; with `full`, every metadata and policy text of
    the state is read as well (what an export or a materialization needs)."""
    root, stats = ctx.store_dir(name)
    store = open_store(root)
    conn = baselines.connect(root / "state.db")
    seqs = _steady_seqs(stats, ctx.sizes.read_runs + 1, random.Random(21))
    store.state(seqs[0])  # warm the page cache, like any second command would
    baselines.raw_state_at(conn, seqs[0], bodies=full)
    ours, raw = [], []
    comps = 0
    for seq in seqs[1:]:
        with Clock() as c:
            st = store.state(seq)
            if full:
                for comp in st.components.values():
                    _ = comp.metadata.raw, comp.policy.policy_content if comp.policy else None
        ours.append(c.seconds * 1000)
        comps = len(st.components)
        with Clock() as c:
            baselines.raw_state_at(conn, seq, bodies=full)
        raw.append(c.seconds * 1000)
    conn.close()
    store.close()
    return ours, raw, comps


def fig_state_at(ctx: Ctx) -> list[Figure]:
    big_ours, big_raw, comps = _state_samples(ctx, "fleet")
    small_ours, small_raw, _ = _state_samples(ctx, "fleet_small")
    n_big = ctx.store_dir("fleet")[1]["events"]
    n_small = ctx.store_dir("fleet_small")[1]["events"]
    f = Figure(
        "state_at",
        f"state as of random point ({comps:,} comps, {n_big:,} ev)",
        "ms",
        False,
        samples=big_ours,
        raw_samples=big_raw,
        limit_label="raw sqlite3, same SQL",
        target="median ≤ 100 ms",
    )
    f.met = f.value <= 100
    small = Figure(
        "state_at_small",
        f"  same at {n_small:,} events",
        "ms",
        False,
        samples=small_ours,
        raw_samples=small_raw,
        limit_label="raw sqlite3, same SQL",
    )
    ratio = f.value / small.value if small.value else 0.0
    scale = Figure(
        "state_at_scaling",
        f"  scaling: time at {n_big:,} ÷ at {n_small:,}",
        "×",
        False,
        samples=[ratio],
        raw_samples=[(f.raw or 0) / small.raw] if small.raw else [],
        limit_label="raw sqlite3 ratio",
        target="≤ 1.5",
    )
    scale.met = ratio <= 1.5
    full_ours, full_raw, _ = _state_samples(ctx, "fleet", full=True)
    full = Figure(
        "state_at_texts",
        "  info: same, every metadata/policy text read",
        "ms",
        False,
        samples=full_ours,
        raw_samples=full_raw,
        limit_label="raw sqlite3, same SQL + texts",
    )
    return [f, small, scale, full]


def fig_history(ctx: Ctx) -> list[Figure]:
    import wassette_state.cli.main  # noqa: F401  (cli.state is loaded through the click app)
    from wassette_state.cli.state import event_json
    from wassette_state.store.persistence.log import Query

    root, _ = ctx.store_dir("fleet")
    store = open_store(root)
    ids = sorted(store.state().components)
    rng = random.Random(31)
    picks = [rng.choice(ids) for _ in range(ctx.sizes.read_runs + 1)]
    conn = baselines.connect(root / "state.db")
    peer = None
    if baselines.peer_available():
        peer = baselines.Peer(peer_copy_of(ctx, "fleet"))
    ours, raw, peer_s, counts = [], [], [], []
    for i, cid in enumerate(picks):
        with Clock() as c:
            events = store.history(Query(stream=cid))
            _ = [event_json(e) for e in events]
        counts.append(len(events))
        with Clock() as r:
            baselines.raw_history(conn, cid)
        p = None
        if peer is not None:
            with Clock() as p:
                peer.history(cid)
        if i == 0:
            continue  # warm-up
        ours.append(c.seconds * 1000)
        raw.append(r.seconds * 1000)
        if p is not None:
            peer_s.append(p.seconds * 1000)
    store.close()
    conn.close()
    if peer is not None:
        peer.close()
    n = ctx.store_dir("fleet")[1]["events"]
    f = Figure(
        "history",
        f"history --component X ({n:,} ev; ~{statistics.median(counts):.0f} rows)",
        "ms",
        False,
        samples=ours,
        raw_samples=raw,
        peer_samples=peer_s,
        target="≤ 50 ms",
        details={"events_per_component_median": statistics.median(counts)},
    )
    f.met = f.value <= 50
    return [f]


def peer_copy_of(ctx: Ctx, name: str) -> Path:
    """The peer's database holding the same events as a cached store (built once, cached)."""
    root, _ = ctx.store_dir(name)
    path = root / "peer-eventsourcing.db"
    done = root / "peer-eventsourcing.done"
    if done.exists():
        return path
    for p in root.glob("peer-eventsourcing.db*"):
        p.unlink()
    log(f"loading the {name} store's events into eventsourcing (once)")
    peer = baselines.Peer(path)
    src = sqlite3.connect(root / "state.db")
    peer.prefill(src.execute("SELECT stream, stream_version, type, data FROM events ORDER BY seq"))
    src.close()
    peer.close()
    done.write_text("ok\n")
    return path


def fig_rebuild(ctx: Ctx) -> list[Figure]:
    name = "fleet_small" if ctx.sizes is FULL else "fleet"
    ours, raw = [], []
    n = 0
    for _ in range(ctx.sizes.rebuild_runs):
        root = ctx.copy_store(name, with_files=False)
        store = open_store(root)
        with Clock() as c:
            n = store.rebuild()
        store.close()
        ours.append(n / c.seconds)
        shutil.rmtree(root, ignore_errors=True)
        root = ctx.copy_store(name, with_files=False)
        conn = baselines.connect(root / "state.db")
        rows = baselines.read_model_rows(conn)
        with Clock() as c:
            m = baselines.raw_rebuild(conn, rows)
        conn.close()
        raw.append(m / c.seconds)
        shutil.rmtree(root, ignore_errors=True)
    f = Figure(
        "rebuild",
        f"rebuild read models ({n:,} events)",
        "events/s",
        True,
        samples=ours,
        raw_samples=raw,
        limit_label="raw: read+decode log, rewrite rows",
        target="≥ 200k events/s",
    )
    big = ctx.stores.get("fleet")
    if big is not None and big[1].get("seconds_rebuild"):
        secs = big[1]["seconds_rebuild"]
        f.details["generation_rebuild_1M"] = {
            "events": big[1]["events"],
            "seconds": secs,
            "events_per_second": round(big[1]["events"] / secs),
        }
        f.note = (
            f"the {big[1]['events']:,}-event store's rebuild during generation: "
            f"{big[1]['events'] / secs:,.0f} events/s"
        )
    f.met = f.value >= 200_000
    return [f]


# --------------------------------------------------------------------------- CLI


def fig_export(ctx: Ctx) -> list[Figure]:
    root, stats = ctx.store_dir("fleet")
    env = cli_env(root)
    out = ctx.tmp("export")
    seqs = _steady_seqs(stats, ctx.sizes.cli_runs, random.Random(41))
    size = 0

    def one(i: int) -> float:
        nonlocal size
        target = out / f"state-{i}.yaml"
        t = run_cli(["state", "export", str(target), "--at", f"seq:{seqs[i]}"], env, out)
        size = target.stat().st_size
        target.unlink()
        return t

    samples, cut = budgeted(len(seqs), 300, one)
    f = Figure(
        "export_at",
        f"state export --at, {stats['components']:,} comps, YAML (CLI)",
        "s",
        False,
        samples=samples,
        target="median ≤ 1.5 s",
        note=cut,
        details={"file_bytes": size},
    )
    f.met = f.value <= 1.5
    return [f]


def fig_import(ctx: Ctx) -> list[Figure]:
    from wassette_state.store.usecases.service import Store

    root, stats = ctx.store_dir("fleet")
    snap_dir = ctx.tmp("snapshot")
    snapshots = {fmt: snap_dir / f"snapshot.{fmt}" for fmt in ("yaml", "json")}
    for snapshot in snapshots.values():
        run_cli(["state", "export", str(snapshot)], cli_env(root), snap_dir)
    events = 0

    def one(fmt: str, run: int) -> float:
        nonlocal events
        dest = ctx.tmp(f"import-{fmt}-{run}")
        Store(settings_for(dest)).close()  # an empty store, schema created
        # The wasm bytes are in the destination's blob store (as on a host that attached the
        # components before, or after copying the blob store along); the import restores
        # every component from there and materializes its files.
        shutil.copytree(root / "blobs", dest / "blobs", copy_function=_link_or_copy)
        t = run_cli(["state", "import", str(snapshots[fmt])], cli_env(dest), dest)
        conn = sqlite3.connect(dest / "state.db")
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.close()
        shutil.rmtree(dest, ignore_errors=True)
        return t

    out: list[Figure] = []
    for fmt, fid, title in (
        ("yaml", "import", "state import, {n:,}-comp YAML snapshot → empty (CLI)"),
        ("json", "import_json", "  same, the JSON snapshot"),
    ):
        samples, cut = budgeted(ctx.sizes.import_runs, 600, lambda run, fmt=fmt: one(fmt, run))
        f = Figure(
            fid,
            title.format(n=stats["components"]),
            "s",
            False,
            samples=samples,
            target="≤ 3 s",
            note=cut,
            details={"events_appended": events, "snapshot_bytes": snapshots[fmt].stat().st_size},
        )
        f.met = f.value <= 3
        out.append(f)
    return out


def fig_cold_start(ctx: Ctx) -> list[Figure]:
    empty = ctx.tmp("empty")
    env = cli_env(empty)
    # As on a normal install, where Python caches the project's bytecode: a sandbox that sets
    # PYTHONDONTWRITEBYTECODE would make every run recompile the project (~30-40 ms) while
    # click and SQLAlchemy load from the .pyc files written when they were installed.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run_cli(["env", "set", "BENCH=1"], env, empty)  # creates the store (not a cold-start cost)
    py = sys.executable

    def python(code: str) -> float:
        with Clock() as c:
            subprocess.run([py, "-c", code], check=True, env=env, cwd=empty)
        return c.seconds * 1000

    help_s, click_s, list_s, deps_s = [], [], [], []
    for i in range(ctx.sizes.cold_runs + 1):
        h = run_cli(["--help"], env, empty) * 1000
        c = python("import click")
        ls = run_cli(["component", "list"], env, empty) * 1000
        d = python("import sqlalchemy, pydantic, click")
        if i == 0:
            continue  # warm the OS caches
        help_s.append(h)
        click_s.append(c)
        list_s.append(ls)
        deps_s.append(d)
    a = Figure(
        "cold_help",
        "cold start: wassette-state --help",
        "ms",
        False,
        samples=help_s,
        raw_samples=click_s,
        limit_label='python -c "import click"',
        target="≤ 1.3× python -c 'import click'",
    )
    b = Figure(
        "cold_list",
        "cold start: component list (empty store)",
        "ms",
        False,
        samples=list_s,
        raw_samples=deps_s,
        limit_label='python -c "import sqlalchemy, pydantic, click"',
        target="≤ 1.3× python -c 'import sqlalchemy, pydantic, click'",
    )
    for f in (a, b):
        f.met = f.raw is not None and f.value <= 1.3 * f.raw
    return [a, b]


# --------------------------------------------------------------------------- size


def table_bytes(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # SQLite built without the dbstat table
        rows = []
    conn.close()
    return {name: int(size) for name, size in rows}


def fig_db_size(ctx: Ctx) -> list[Figure]:
    root, stats = ctx.store_dir("host")
    typical_events = stats["events"] - (stats["setup_events"] or 0)
    typical = (stats["db_bytes"] - (stats["setup_db_bytes"] or 0)) / max(typical_events, 1)
    by_table = table_bytes(root / "state.db")
    per_event = {
        k: round(v / stats["events"], 1)
        for k, v in sorted(by_table.items(), key=lambda kv: -kv[1])
        if v
    }
    f = Figure(
        "db_size",
        "db size, typical events (1 command/tx)",
        "bytes/event",
        False,
        samples=[typical],
        target="≤ 300 bytes/event",
        details={
            "store": {k: stats[k] for k in ("components", "events", "transactions", "db_bytes")},
            "typical_events": typical_events,
            "bytes_per_event_by_table_whole_store": per_event,
            "events_by_type": stats["by_type"],
        },
    )
    f.met = typical <= 300
    out = [f]
    big = ctx.stores.get("fleet")
    if big is not None:
        s = big[1]
        out.append(
            Figure(
                "db_size_fleet",
                f"  info: whole {s['events']:,}-event store ({s['commands_per_tx']} commands/tx)",
                "bytes/event",
                False,
                samples=[s["db_bytes"] / s["events"]],
                details={"db_bytes": s["db_bytes"]},
            )
        )
    return out


# --------------------------------------------------------------------------- output


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "×":
        return f"{v:.2f}×"
    if abs(v) >= 1000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def _vs_raw(f: Figure) -> str:
    if f.raw is None or f.unit == "×":
        return "–"
    if f.id.startswith("cold_"):
        return f"{f.value / f.raw:.2f}× time"
    v = f.vs_raw
    return "–" if v is None else f"{v * 100:.0f} %"


def _vs_peer(f: Figure) -> str:
    v = f.vs_peer
    return "–" if v is None else f"{v:.2f}×"


def rows(figures: list[Figure]) -> list[list[str]]:
    out = []
    for f in figures:
        met = "–" if f.met is None else ("yes" if f.met else "NO")
        unit = "" if f.unit == "×" else f.unit
        out.append(
            [
                f.title,
                _num(f.value, f.unit),
                str(len(f.samples)),
                "–" if f.raw is None else _num(f.raw, "" if f.unit == "×" else unit),
                _vs_raw(f),
                "–" if f.peer is None else _num(f.peer, unit),
                _vs_peer(f),
                f.target or "–",
                met,
            ]
        )
    return out


HEADERS = ["figure", "median", "n", "limit", "vs limit", "peer", "vs peer", "target", "met"]
LEGEND = (
    "limit = raw sqlite3 doing the same writes/reads (same schema, pragmas, durability; no "
    "validation, no hashing); for cold start: python -c 'import click' / "
    "'import sqlalchemy, pydantic, click'. peer = eventsourcing (SQLite application recorder). "
    "vs limit / vs peer: our speed relative to theirs (throughput ratio, or their time ÷ ours); "
    "for cold start: our time ÷ theirs. n = runs (median of n)."
)


def print_table(figures: list[Figure], title: str, stream: Any) -> None:
    notes = [f"{f.id}: {f.note}" for f in figures if f.note]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        table = [HEADERS, *rows(figures)]
        widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
        print(title, file=stream)
        for n, r in enumerate(table):
            print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=stream)
            if n == 0:
                print("-+-".join("-" * w for w in widths), file=stream)
        print(LEGEND, file=stream)
        for note in notes:
            print(f"note: {note}", file=stream)
        return
    table = Table(title=title, caption=LEGEND, caption_justify="left")
    for h in HEADERS:
        table.add_column(h, overflow="fold", no_wrap=h in ("median", "limit", "peer", "met"))
    for r in rows(figures):
        table.add_row(*r, style="red" if r[-1] == "NO" else None)
    console = Console(file=stream, width=max(150, shutil.get_terminal_size().columns))
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", highlight=False)


# --------------------------------------------------------------------------- main


FIGURES: dict[str, Callable[[Ctx], list[Figure]]] = {
    "append_single": fig_append_single,
    "append_batch": fig_append_batch,
    "state_at": fig_state_at,
    "export_at": fig_export,
    "import": fig_import,
    "rebuild": fig_rebuild,
    "history": fig_history,
    "cold_start": fig_cold_start,
    "db_size": fig_db_size,
    "append_single_fleet": fig_append_fleet,
}
# Figure ids each group produces (the smoke test checks they are all present).
EXPECTED = {
    "append_single": ["append_single", "append_single_log"],
    "append_batch": ["append_batch"],
    "state_at": ["state_at", "state_at_small", "state_at_scaling", "state_at_texts"],
    "export_at": ["export_at"],
    "import": ["import", "import_json"],
    "rebuild": ["rebuild"],
    "history": ["history"],
    "cold_start": ["cold_help", "cold_list"],
    "db_size": ["db_size"],
}


def environment() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("wassette-state", "sqlalchemy", "pydantic", "eventsourcing", "pyyaml"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in load],
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, < 1 minute (CI smoke)")
    p.add_argument("--json", action="store_true", help="JSON on stdout (table on stderr)")
    p.add_argument("--only", help="comma-separated figure groups: " + ",".join(FIGURES))
    p.add_argument("--runs", type=int, help="runs per in-process figure (default 5, quick 3)")
    p.add_argument("--cache-dir", type=Path, default=gen.CACHE_DIR, help="generated stores")
    p.add_argument("--work-dir", type=Path, help="scratch space (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir")
    p.add_argument("--regenerate", action="store_true", help="ignore cached stores")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    groups = list(FIGURES) if not args.only else [g.strip() for g in args.only.split(",")]
    unknown = [g for g in groups if g not in FIGURES]
    if unknown:
        p.error(f"unknown figure group(s): {', '.join(unknown)}")
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wassette-bench-", dir=args.work_dir))
    ctx = Ctx(sizes, work, args.cache_dir, args.seed, args.regenerate, not args.no_progress)
    started = time.perf_counter()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    try:
        for name in ("host", "fleet_small", "fleet"):  # generate first: the clock is for figures
            ctx.store_dir(name)
        for g in groups:
            log(f"measuring {g}")
            t0 = time.perf_counter()
            try:
                figures.extend(FIGURES[g](ctx))
            except Exception as e:  # one broken figure must not hide the others
                errors[g] = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
            log(f"{g}: {time.perf_counter() - t0:.1f}s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    title = (
        f"wassette benchmarks ({'quick' if args.quick else 'full'}; medians; "
        f"{elapsed:.0f}s; load {environment()['loadavg_at_end'][0]})"
    )
    if args.json:
        print_table(figures, title, sys.stderr)
        doc = {
            "mode": "quick" if args.quick else "full",
            "seconds": round(elapsed, 1),
            "figures": [f.as_json() for f in figures],
            "expected": [i for g in groups for i in EXPECTED.get(g, [])],
            "errors": errors,
            "stores": {k: v[1] for k, v in ctx.stores.items()},
            "environment": environment(),
        }
        print(json.dumps(doc, indent=2))
    else:
        print_table(figures, title, sys.stdout)
        for g, err in errors.items():
            print(f"error in {g}: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
