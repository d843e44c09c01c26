"""Concurrent durable writers, one process each, for the backend benchmark.

Every system (the store on SQLite, the store on PostgreSQL, eventsourcing's PostgreSQL
application recorder) gets its writer processes, each with its own connection, started once.
All of them follow one schedule of phases in lock step (a barrier before and after each
phase), so the systems' phases are interleaved in time and machine load hits them alike; in a
phase only that system's active writers work, each timing every call on its own.

Ours: one-event commands through the store's command path (`commands.permission` — decide on
the component, version check, append under the write lock, read models, the policy file
written and fsynced — or `commands.env_set` for the shared stream). The peer: one
`insert_events([one event])` per call, its caller tracking the version (re-read after a lost
race on the shared stream, as its applications do).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOSTS = ("https://api.github.com", "https://api.openai.com", "https://example.org")


@dataclass(frozen=True)
class Phase:
    system: str  # "sqlite" | "postgres" | "peer"
    mode: str  # "own" (each writer its own component/aggregate) | "shared" (one stream)
    writers: int
    commands: int  # per active writer


@dataclass(frozen=True)
class Spec:
    system: str
    index: int
    db: str  # SQLite path or PostgreSQL URL (ours); the database name (peer)
    component_dir: str
    secrets_dir: str
    data_dir: str
    component: str  # this writer's own component (ours) / aggregate name (peer)
    peer_env: dict[str, str]
    peer_data: tuple[str, str]  # (own, shared) event JSON the peer stores


class Ours:
    def __init__(self, spec: Spec) -> None:
        from wassette_state.store.files.config import resolve
        from wassette_state.store.usecases.service import Store

        settings = resolve(spec.db, spec.component_dir, spec.secrets_dir, f"writer{spec.index}@b")
        settings = dataclasses.replace(settings, data_dir=Path(spec.data_dir))
        self.store = Store(settings)
        self.spec = spec
        self.n = 0

    def call(self, mode: str) -> None:
        from wassette_state.store.usecases import commands

        self.n += 1
        if mode == "own":
            host = f"https://w{self.spec.index}.bench.example"
            op = "grant" if self.n % 2 else "revoke"
            commands.permission(self.store, op, self.spec.component, "network", host)
        else:
            commands.env_set(self.store, {f"BENCH_W{self.spec.index}": str(self.n)})

    def close(self) -> None:
        self.store.close()


class Peer:
    def __init__(self, spec: Spec) -> None:
        from eventsourcing.persistence import InfrastructureFactory

        self.factory = InfrastructureFactory.construct(spec.peer_env)
        self.recorder: Any = self.factory.application_recorder()
        ns = uuid.UUID("6f1b7b1e-8a6e-4a53-9d3a-5e1f2b0c7a11")
        self.own = uuid.uuid5(ns, f"{spec.component}-{spec.index}")
        self.shared = uuid.uuid5(ns, "wassette-instance")
        self.version = 0
        self.data = spec.peer_data
        self.lost = 0

    def _stored(self, originator: uuid.UUID, version: int, data: str) -> Any:
        from eventsourcing.persistence import StoredEvent

        return StoredEvent(
            originator_id=originator,
            originator_version=version,
            topic="wassette:bench",
            state=data.encode(),
        )

    def call(self, mode: str) -> None:
        from eventsourcing.persistence import IntegrityError

        if mode == "own":
            self.version += 1
            self.recorder.insert_events([self._stored(self.own, self.version, self.data[0])])
            return
        while True:  # decide on the latest version, append, re-read after a lost race
            last = self.recorder.select_events(self.shared, desc=True, limit=1)
            version = (last[0].originator_version if last else 0) + 1
            try:
                self.recorder.insert_events([self._stored(self.shared, version, self.data[1])])
                return
            except IntegrityError:
                self.lost += 1

    def close(self) -> None:
        self.factory.close()


def run(spec: Spec, schedule: list[Phase], warm: int, barrier: Any, results: Any) -> None:
    """A writer process: open, warm up, then every phase of the schedule in lock step."""
    try:
        impl: Ours | Peer = Peer(spec) if spec.system == "peer" else Ours(spec)
        for mode in ("own", "shared"):
            for _ in range(warm):
                impl.call(mode)
    except BaseException as e:
        results.put(("error", spec.system, spec.index, f"{type(e).__name__}: {e}"))
        barrier.abort()
        raise
    for n, phase in enumerate(schedule):
        barrier.wait()
        if phase.system == spec.system and spec.index < phase.writers:
            lat: list[float] = []
            try:
                start = time.perf_counter()
                for _ in range(phase.commands):
                    t = time.perf_counter()
                    impl.call(phase.mode)
                    lat.append((time.perf_counter() - t) * 1000)
                end = time.perf_counter()
            except BaseException as e:
                results.put(("error", spec.system, spec.index, f"{type(e).__name__}: {e}"))
                barrier.abort()
                raise
            results.put(("phase", n, spec.index, lat, start, end))
        barrier.wait()
    results.put(("lost", spec.system, spec.index, getattr(impl, "lost", 0)))
    impl.close()
