"""Both backends side by side, in one run, against eventsourcing's PostgreSQL recorder.

    python -m bench.backends            # full sizes (200-component host, 100k-event fleet)
    python -m bench.backends --quick    # small sizes, < 1 minute; CI runs it as a smoke check
    python -m bench.backends --json     # the figures as JSON on stdout (table on stderr)

The same generated stores are measured on SQLite (a file) and on PostgreSQL (a row-for-row
copy in a database of this run, on the same server as the peer's). Figures: durable one-event
commands with 1 and 4 writer processes (throughput, median and p99 latency), a batched import,
the state as of a point of a 100k-event store, and `state export --at` (CLI). Targets are
reported, never asserted; the exit status is 1 only when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/backends.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import generate as gen
from bench import pgserver, writers
from bench.run import Clock, _link_or_copy, environment, log, run_cli, wassette_exe

SYSTEMS = ("sqlite", "postgres", "peer")
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "peer": "eventsourcing (PG)"}


@dataclass(frozen=True)
class Sizes:
    host: tuple[int, int]  # the store written to (components, events; one command per tx)
    fleet: tuple[int, int]  # the store read (the "100k events" store)
    rounds: int  # interleaved rounds of every write phase
    single: int  # commands per round, 1 writer
    multi: int  # commands per writer per round, 4 writers
    warm: int
    reads: int  # state-as-of samples
    exports: int
    imports: int


FULL = Sizes((200, 20_000), (10_000, 100_000), 2, 100, 50, 3, 30, 5, 1)
QUICK = Sizes((20, 1_000), (100, 1_000), 1, 10, 5, 1, 3, 1, 1)


def pct(values: list[float], q: float) -> float:
    """The q-quantile, nearest rank (p99 of 150 samples is the 149th smallest)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


@dataclass
class Cell:
    """One system's figure: per-call latencies (ms) and, for writes, throughputs per round."""

    latencies: list[float] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p99(self) -> float:
        return pct(self.latencies, 0.99) if self.latencies else 0.0

    @property
    def throughput(self) -> float | None:
        return statistics.median(self.throughputs) if self.throughputs else None

    def as_json(self) -> dict[str, Any]:
        return {
            "throughput": self.throughput,
            "median_ms": self.median,
            "p99_ms": self.p99,
            "n": len(self.latencies),
            "throughputs": self.throughputs,
            "latencies_ms": [round(x, 3) for x in self.latencies],
            "note": self.note,
        }


@dataclass
class Row:
    id: str
    title: str
    unit: str  # of the throughput ("cmd/s", "events/s"); "" when only latencies count
    cells: dict[str, Cell] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None

    def ratio(self, a: str, b: str) -> float | None:
        """How fast `a` is relative to `b` (> 1: faster): throughputs, else median times."""
        x, y = self.cells.get(a), self.cells.get(b)
        if x is None or y is None or not x.latencies or not y.latencies:
            return None
        if self.unit and x.throughput and y.throughput:
            return x.throughput / y.throughput
        return y.median / x.median if x.median else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "systems": {k: c.as_json() for k, c in self.cells.items()},
            "postgres_vs_sqlite": self.ratio("postgres", "sqlite"),
            "postgres_vs_peer": self.ratio("postgres", "peer"),
            "target": self.target,
            "met": self.met,
        }


# --------------------------------------------------------------------------- stores


@dataclass
class Where:
    """One store on one backend: what `Store`, the writers and the CLI are given."""

    db: str  # SQLite file or PostgreSQL URL
    root: Path

    @property
    def component_dir(self) -> Path:
        return self.root / "components"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def data_dir(self) -> Path:
        """Beside the SQLite file; for PostgreSQL the data home the CLI gets (XDG_DATA_HOME)."""
        return self.root if "://" not in self.db else self.root / "xdg" / "wassette"

    def settings(self, actor: str = "bench@backends") -> Any:
        from wassette_state.store.files.config import resolve

        s = resolve(self.db, str(self.component_dir), str(self.secrets_dir), actor)
        return dataclasses.replace(s, data_dir=self.data_dir)

    def store(self) -> Any:
        from wassette_state.store.usecases.service import Store

        return Store(self.settings())

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
        env.update(
            WASSETTE_STATE_DB=self.db,
            WASSETTE_COMPONENT_DIR=str(self.component_dir),
            WASSETTE_SECRETS_DIR=str(self.secrets_dir),
            WASSETTE_ACTOR="bench@backends",
            XDG_DATA_HOME=str(self.root / "xdg"),
        )
        return env


def link_blobs(src_root: Path, where: Where) -> None:
    if (src_root / "blobs").exists():
        shutil.copytree(
            src_root / "blobs",
            where.data_dir / "blobs",
            dirs_exist_ok=True,
            copy_function=_link_or_copy,
        )


@dataclass
class Ctx:
    sizes: Sizes
    work: Path
    cache: Path
    seed: int
    progress: bool
    server: pgserver.Server
    stores: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)

    def generated(self, name: str) -> tuple[Path, dict[str, Any]]:
        if name not in self.stores:
            comps, events = getattr(self.sizes, name)
            log(f"store {name}: {comps:,} components, {events:,} events (cache {self.cache})")
            self.stores[name] = gen.ensure(
                comps,
                events,
                self.seed,
                commands_per_tx=1 if name == "host" else 16,
                cache_dir=self.cache,
                progress=self.progress,
            )
        return self.stores[name]

    def copies(self, name: str, label: str, sqlite: bool = True) -> dict[str, Where]:
        """Private copies of a generated store on PostgreSQL (and SQLite), blobs linked."""
        src, _ = self.generated(name)
        out: dict[str, Where] = {}
        if sqlite:
            root = self.work / f"{label}-sqlite"
            sq = Where(str(root / "state.db"), root)
            root.mkdir(parents=True)
            shutil.copy2(src / "state.db", root / "state.db")
            out["sqlite"] = sq
        pg_root = self.work / f"{label}-postgres"
        pg = Where(self.server.url(self.server.create(label)), pg_root)
        pg.data_dir.mkdir(parents=True)
        with Clock() as c:
            n = pgserver.copy_store(src / "state.db", pg.db)
        log(f"copied {n:,} events into PostgreSQL in {c.seconds:.1f}s")
        out["postgres"] = pg
        for where in out.values():
            link_blobs(src, where)
        return out


# --------------------------------------------------------------------------- writes


def fig_writes(ctx: Ctx) -> list[Row]:
    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.state import compact

    sz = ctx.sizes
    stores = ctx.copies("host", "writes")
    picks: list[str] = []
    src, _ = ctx.generated("host")
    for where in stores.values():
        # As on a host: the secrets files there, the component files written and the dirs
        # recorded (the first command records where the state is materialized) before the clock.
        shutil.copytree(src / "secrets", where.secrets_dir, dirs_exist_ok=True)
        store = where.store()
        store.repair_files()
        from wassette_state.store.usecases import commands

        commands.env_set(store, {"BENCH_SETUP": "1"})
        picks = sorted(store.state().components)[:4]
        store.close()
    conn = sqlite3.connect(src / "state.db")
    own_data = conn.execute(
        "SELECT data FROM events WHERE type = 'policy.changed' ORDER BY seq DESC LIMIT 1"
    ).fetchone()[0]
    conn.close()
    shared_data = compact(ev.to_data(ev.EnvSet(key="BENCH_W0", value="1")))
    peer_db = ctx.server.create("peer_writes")
    peer_env = ctx.server.peer_env(peer_db)
    from eventsourcing.persistence import InfrastructureFactory

    # The peer's table made once here: its CREATE statements are not safe to run concurrently.
    maker = InfrastructureFactory.construct(peer_env)
    maker.application_recorder()
    maker.close()
    peer_env = {**peer_env, "CREATE_TABLE": "n"}

    schedule: list[writers.Phase] = []
    for _ in range(sz.rounds):
        for mode, n_writers, n in (
            ("own", 1, sz.single),
            ("own", 4, sz.multi),
            ("shared", 4, sz.multi),
        ):
            for system in SYSTEMS:
                schedule.append(writers.Phase(system, mode, n_writers, n))
    mp = multiprocessing.get_context("spawn")
    procs = []
    barrier = mp.Barrier(len(SYSTEMS) * 4 + 1, timeout=900)
    results = mp.Queue()
    for system in SYSTEMS:
        where = stores.get(system, stores["postgres"])
        for i in range(4):
            spec = writers.Spec(
                system=system,
                index=i,
                db=peer_db if system == "peer" else where.db,
                component_dir=str(where.component_dir),
                secrets_dir=str(where.secrets_dir),
                data_dir=str(where.data_dir),
                component=picks[i % len(picks)],
                peer_env=peer_env,
                peer_data=(own_data, shared_data),
            )
            p = mp.Process(target=writers.run, args=(spec, schedule, sz.warm, barrier, results))
            p.start()
            procs.append(p)
    messages: list[tuple[Any, ...]] = []
    try:
        for _ in schedule:
            barrier.wait()
            barrier.wait()
    except Exception:
        for p in procs:
            p.join(timeout=30)
        while not results.empty():
            messages.append(results.get())
        errors = [m for m in messages if m[0] == "error"]
        raise RuntimeError(f"a writer failed: {errors[:3]}") from None
    expected = sum(ph.writers for ph in schedule) + len(procs)
    for _ in range(expected):
        messages.append(results.get(timeout=120))
    for p in procs:
        p.join(timeout=60)

    by_phase: dict[int, list[tuple[Any, ...]]] = {}
    lost: dict[str, int] = {}
    for m in messages:
        if m[0] == "phase":
            by_phase.setdefault(m[1], []).append(m)
        elif m[0] == "lost":
            lost[m[1]] = lost.get(m[1], 0) + m[3]
    rows: dict[tuple[str, int], Row] = {}
    titles = {
        ("own", 1): ("writes_1", "1 writer: permission grant/revoke, 1 event/command"),
        ("own", 4): ("writes_4", "4 writer processes, each its own component"),
        ("shared", 4): ("writes_4_shared", "4 writer processes, one stream (env set)"),
    }
    for n, phase in enumerate(schedule):
        key = (phase.mode, phase.writers)
        rid, title = titles[key]
        row = rows.setdefault(key, Row(rid, title, "cmd/s"))
        cell = row.cells.setdefault(phase.system, Cell())
        got = by_phase.get(n, [])
        count = 0
        for m in got:
            cell.latencies.extend(m[3])
            count += len(m[3])
        if got:
            span = max(m[5] for m in got) - min(m[4] for m in got)
            cell.throughputs.append(count / span)
    shared = rows[("shared", 4)]
    if "peer" in shared.cells:
        shared.cells["peer"].note = f"{lost.get('peer', 0)} lost races re-read and retried"
    four = rows[("own", 4)]
    four.target = "PostgreSQL ≥ 1.0× peer, p99 < 100 ms"
    pg, peer = four.cells.get("postgres"), four.cells.get("peer")
    if pg and peer and pg.throughput and peer.throughput:
        four.met = pg.throughput >= peer.throughput and pg.p99 < 100
    return list(rows.values())


# --------------------------------------------------------------------------- import


def fig_import(ctx: Ctx) -> list[Row]:
    from eventsourcing.persistence import InfrastructureFactory, StoredEvent

    from wassette_state.store.usecases.importer import run_import

    src, stats = ctx.generated("fleet")
    snapshot = ctx.work / "snapshot.yaml"
    run_cli(["state", "export", str(snapshot)], Where(str(src / "state.db"), src).env(), ctx.work)
    row = Row(
        "import", f"import, {stats['components']:,}-component snapshot → empty store", "events/s"
    )
    peer_rows: list[tuple[str, int, str, str]] = []
    for run in range(ctx.sizes.imports):
        for system in SYSTEMS:
            cell = row.cells.setdefault(system, Cell())
            if system == "peer":
                db = ctx.server.create(f"peer_import_{run}")
                # Its batch path: one statement with an array of events (its default, a
                # pipelined executemany, hung on the full-size batch: the server waiting for
                # the client, the client for the server).
                env = {**ctx.server.peer_env(db), "POSTGRES_ENABLE_DB_FUNCTIONS": "y"}
                factory = InfrastructureFactory.construct(env)
                recorder: Any = factory.application_recorder()
                stored = [
                    StoredEvent(
                        originator_id=writers.uuid.uuid5(writers.uuid.NAMESPACE_URL, s),
                        originator_version=v,
                        topic=f"wassette:{t}",
                        state=d.encode(),
                    )
                    for s, v, t, d in peer_rows
                ]
                with Clock() as c:
                    recorder.insert_events(stored)
                factory.close()
                ctx.server.drop(db)
                n = len(stored)
            else:
                root = ctx.work / f"import-{system}-{run}"
                if system == "sqlite":
                    where = Where(str(root / "state.db"), root)
                    root.mkdir()
                else:
                    where = Where(ctx.server.url(ctx.server.create(f"import_{run}")), root)
                    where.data_dir.mkdir(parents=True)
                link_blobs(src, where)
                store = where.store()  # schema created before the clock
                with Clock() as c:
                    outcome = run_import(store, str(snapshot))
                n = len(outcome.events)
                if system == "sqlite" and not peer_rows:
                    peer_rows = [
                        (e.stream, e.stream_version, e.type, e.data_text or "")
                        for e in outcome.events
                    ]
                store.close()
                if system == "postgres":
                    ctx.server.drop(str(where.db).rsplit("/", 1)[1])
                shutil.rmtree(root, ignore_errors=True)
            cell.latencies.append(c.seconds * 1000)
            cell.throughputs.append(n / c.seconds)
            cell.note = f"{n:,} events, one transaction"
    row.cells["peer"].note += " (insert_events only: no parsing, no files)"
    return [row]


# --------------------------------------------------------------------------- reads


def _steady(stats: dict[str, Any], n: int, rng: random.Random) -> list[int]:
    lo = (stats.get("setup_events") or 1) + 1
    return [rng.randint(lo, max(lo, stats["events"])) for _ in range(n)]


def fig_reads(ctx: Ctx) -> list[Row]:
    src, stats = ctx.generated("fleet")
    stores = {
        "sqlite": Where(str(src / "state.db"), src),  # only read: the cached store itself
        "postgres": ctx.copies("fleet", "reads", sqlite=False)["postgres"],
    }
    opened = {k: w.store() for k, w in stores.items()}
    seqs = _steady(stats, ctx.sizes.reads + 1, random.Random(21))
    as_of = Row(
        "state_at",
        f"state as of a point, {stats['components']:,} comps, {stats['events']:,} events",
        "",
    )
    for i, seq in enumerate(seqs):
        for system, store in opened.items():
            with Clock() as c:
                store.state(seq)
            if i:  # the first: warm-up
                as_of.cells.setdefault(system, Cell()).latencies.append(c.seconds * 1000)
    for store in opened.values():
        store.close()
    as_of.target = "PostgreSQL within 1.5× of SQLite"
    r = as_of.ratio("postgres", "sqlite")
    as_of.met = r is not None and 1 / r <= 1.5

    export = Row("export_at", "state export out.yaml --at seq:N (CLI process)", "")
    out = ctx.work / "exports"
    out.mkdir()
    for i, seq in enumerate(_steady(stats, ctx.sizes.exports + 1, random.Random(41))):
        for system, where in stores.items():
            target = out / f"{system}-{i}.yaml"
            t = run_cli(["state", "export", str(target), "--at", f"seq:{seq}"], where.env(), out)
            if i:
                export.cells.setdefault(system, Cell()).latencies.append(t * 1000)
            target.unlink()
    return [as_of, export]


# --------------------------------------------------------------------------- output


def _ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def cell_text(row: Row, c: Cell | None) -> str:
    if c is None or not c.latencies:
        return "–"
    lat = f"med {_ms(c.median)} · p99 {_ms(c.p99)} ms"
    if row.unit and c.throughput:
        return f"{c.throughput:,.0f} {row.unit}\n{lat}"
    return lat


def ratio_text(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


HEADERS = [
    "measurement",
    *(LABELS[s] for s in SYSTEMS),
    "PG vs SQLite",
    "PG vs peer",
    "target",
    "met",
]
LEGEND = (
    "Throughput = commands (or events) per second of wall time over all writers; med/p99 = "
    "per-call latency. PG vs X: PostgreSQL's speed relative to X (throughput ratio, else X's "
    "median time ÷ PostgreSQL's; > 1 = PostgreSQL faster). The peer is eventsourcing's "
    "PostgreSQL application recorder on the same server."
)


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [
        [
            r.title,
            *(cell_text(r, r.cells.get(s)) for s in SYSTEMS),
            ratio_text(r.ratio("postgres", "sqlite")),
            ratio_text(r.ratio("postgres", "peer")),
            r.target or "–",
            "–" if r.met is None else ("yes" if r.met else "NO"),
        ]
        for r in rows
    ]


def print_table(rows: list[Row], title: str, stream: Any) -> None:
    notes = [f"{r.id} / {LABELS[s]}: {c.note}" for r in rows for s, c in r.cells.items() if c.note]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=LEGEND, caption_justify="left", show_lines=True)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for r in table_rows(rows):
        table.add_row(*r, style="red" if r[-1] == "NO" else None)
    console = Console(file=stream, width=max(160, shutil.get_terminal_size().columns))
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", highlight=False)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for r in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("\n", "<br>") for c in r) + " |")
    return "\n".join(lines)


FIGURES = {"writes": fig_writes, "import": fig_import, "reads": fig_reads}
EXPECTED = {
    "writes": ["writes_1", "writes_4", "writes_4_shared"],
    "import": ["import"],
    "reads": ["state_at", "export_at"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, < 1 minute (CI smoke)")
    p.add_argument("--json", action="store_true", help="JSON on stdout (table on stderr)")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--only", help="comma-separated groups: " + ",".join(FIGURES))
    p.add_argument("--cache-dir", type=Path, default=gen.CACHE_DIR, help="generated stores")
    p.add_argument("--work-dir", type=Path, help="scratch space (default: a temp dir)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    groups = list(FIGURES) if not args.only else [g.strip() for g in args.only.split(",")]
    if any(g not in FIGURES for g in groups):
        p.error(f"unknown group in {args.only!r}: use {', '.join(FIGURES)}")
    wassette_exe()  # the CLI figures need the console script: fail now, not halfway
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wassette-backends-", dir=args.work_dir))
    # A stopped run still drops its databases (SIGTERM leaves through the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = pgserver.Server()
    ctx = Ctx(
        QUICK if args.quick else FULL, work, args.cache_dir, args.seed, not args.no_progress, server
    )
    started = time.perf_counter()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    pg_settings = server.settings()
    try:
        for name in ("host", "fleet"):  # generate first: the clock is for the figures
            ctx.generated(name)
        for g in groups:
            log(f"measuring {g}")
            t0 = time.perf_counter()
            try:
                rows.extend(FIGURES[g](ctx))
            except Exception as e:  # one broken figure must not hide the others
                errors[g] = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
            log(f"{g}: {time.perf_counter() - t0:.1f}s")
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    env = environment()
    title = (
        f"wassette-state backends ({'quick' if args.quick else 'full'}; {elapsed:.0f}s; "
        f"{env['cpus']} CPUs; load {env['loadavg_at_end'][0]}; PostgreSQL "
        f"{pg_settings['server_version']}, synchronous_commit={pg_settings['synchronous_commit']})"
    )
    stream = sys.stderr if args.json else sys.stdout
    print_table(rows, title, stream)
    if args.markdown:
        print(markdown(rows), file=stream)
    for g, err in errors.items():
        print(f"error in {g}: {err}", file=sys.stderr)
    if args.json:
        doc = {
            "mode": "quick" if args.quick else "full",
            "seconds": round(elapsed, 1),
            "rows": [r.as_json() for r in rows],
            "expected": [i for g in groups for i in EXPECTED[g]],
            "errors": errors,
            "postgres": pg_settings,
            "environment": env,
        }
        print(json.dumps(doc, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
