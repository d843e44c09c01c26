"""Properties of the log and its read models, on real SQLite files.

(a) Whatever events are appended, in whatever transaction groupings, the temporal read models
    give exactly the fold of the log at every seq, and `verify` agrees.
(b) Any single tampering with an event row is reported by `verify`, naming a seq.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.fold import project
from wassette_state.store.files.config import resolve
from wassette_state.store.persistence import log, readmodel
from wassette_state.store.usecases.service import Decision, Store
from wassette_state.store.usecases.verify import verify

COMPONENTS = ["a", "b", "paths"]  # "paths" shares its name with the paths setting's key
KEYS = ["K1", "K2", "K3"]
METADATA = [{}, {"tool_names": ["t"], "n": 1}, {"tool_names": ["u", "v"], "nested": {"x": [1]}}]
POLICIES = ["version: '1.0'\n", "version: '1.0'\npermissions: {}\n", "pol-ü ✓"]

cid = st.sampled_from(COMPONENTS)
keys = st.lists(st.sampled_from(KEYS), max_size=3)

event_strategy = st.one_of(
    st.builds(
        ev.ComponentAttached,
        component_id=cid,
        source_uri=st.sampled_from(["file:///x.wasm", "file:///y.wasm"]),
        wasm_sha256=st.sampled_from(["1" * 64, "2" * 64]),
        metadata=st.sampled_from(METADATA),
    ),
    st.builds(ev.ComponentDetached, component_id=cid),
    st.builds(
        ev.PolicyAttached,
        component_id=cid,
        source_uri=st.sampled_from(["file:///p1", "file:///p2"]),
        policy_content=st.sampled_from(POLICIES),
        attached_at=st.integers(0, 3),
    ),
    st.builds(
        ev.PolicyChanged,
        component_id=cid,
        policy_content=st.sampled_from(POLICIES),
        change=st.sampled_from([{}, {"op": "grant", "kind": "network", "host": "a.b"}]),
        source_uri=st.none() | st.just("file:///made"),
        attached_at=st.none() | st.just(9),
    ),
    st.builds(ev.PolicyDetached, component_id=cid),
    st.builds(ev.SecretKeysSet, component_id=cid, keys=keys),
    st.builds(ev.SecretKeysDeleted, component_id=cid, keys=keys),
    st.builds(ev.EnvSet, key=st.sampled_from(["A", "B"]), value=st.sampled_from(["1", "2", ""])),
    st.builds(ev.EnvUnset, key=st.sampled_from(["A", "B"])),
    st.builds(
        ev.PathsSet,
        component_dir=st.sampled_from(["/p/c1", "/p/c2"]),
        secrets_dir=st.just("/p/s"),
    ),
)
# Transactions of 1-4 events; components get attached often enough to matter.
tx_strategy = st.lists(st.lists(event_strategy, min_size=1, max_size=4), min_size=1, max_size=7)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated database to copy for every example (migrating each time is slow)."""
    root = tmp_path_factory.mktemp("props")
    Store(resolve(str(root / "template" / "state.db"), actor="seed@test")).close()
    return root


@contextmanager
def fresh_store(workdir: Path) -> Iterator[Store]:
    site = Path(tempfile.mkdtemp(dir=workdir))
    shutil.copy(workdir / "template" / "state.db", site / "state.db")
    store = Store(
        resolve(str(site / "state.db"), str(site / "c"), str(site / "s"), actor="prop@test")
    )
    try:
        yield store
    finally:
        store.close()
        shutil.rmtree(site)


def build(store: Store, txs: list[list[Any]]) -> list[log.StoredEvent]:
    for group in txs:
        store.execute("prop", lambda _s, g=group: Decision(list(g)))
    with store.reading() as conn:
        return list(log.iter_all(conn))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txs=tx_strategy)
def test_read_models_equal_the_fold_at_every_seq(workdir: Path, txs: list[list[Any]]) -> None:
    with fresh_store(workdir) as store:
        stored = build(store, txs)
        events = [se.event() for se in stored]
        own_paths = ev.PathsSet(
            component_dir=str(store.settings.component_dir),
            secrets_dir=str(store.settings.secrets_dir),
        )
        # The log holds the generated events in order, plus the store's own paths records.
        assert [e for e in events if e != own_paths] == [e for g in txs for e in g]
        assert events[0] == own_paths
        assert [se.seq for se in stored] == list(range(1, len(stored) + 1))
        with store.reading() as conn:
            for s in range(len(stored) + 1):
                assert readmodel.state_at(conn, s) == project(events[:s]), f"as of seq {s}"
            assert readmodel.state_at(conn) == project(events)
            for c in COMPONENTS:
                assert readmodel.state_at(conn, None, only=c).components == {
                    k: v for k, v in project(events).components.items() if k == c
                }
            report = verify(conn)
        assert report.ok, report.problems
        assert report.events == len(stored)
        assert report.transactions == len(txs)
        # A rebuild from the log gives the same rows the appends wrote.
        with store.reading() as conn:
            before = readmodel.read_all(conn)
        store.rebuild()
        with store.reading() as conn:
            after = readmodel.read_all(conn)
        assert (after.components, after.settings) == (before.components, before.settings)


# ---------------------------------------------------------------- tampering

SEQ_RE = re.compile(r"^seq (\d+): ")
OPS = ["data", "type", "stream_version", "swap_data", "swap_seq"]


def _changed(value: Any) -> Any:
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, list):
        return [*value, "Z"]
    if isinstance(value, dict):
        return {**value, "zz": 1}
    return "x"


def _no_op_tail(stored: list[log.StoredEvent]) -> bool:
    """Deleting the last event leaves a consistent shorter log when the event changed no read
    model and its transaction keeps other events: nothing anchors the head (known gap)."""
    last = stored[-1]
    if sum(se.tx_id == last.tx_id for se in stored) == 1:
        return False
    full, cut = readmodel.derive(stored), readmodel.derive(stored[:-1])
    return (full.components, full.settings) == (cut.components, cut.settings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txs=tx_strategy, op=st.sampled_from(OPS), data=st.data())
def test_any_single_tampering_is_detected(
    workdir: Path, txs: list[list[Any]], op: str, data: st.DataObject
) -> None:
    with fresh_store(workdir) as store:
        stored = build(store, txs)
        path = Path(store.settings.db_url[len("sqlite:///") :])
        store.close()
        n = len(stored)
        seq = data.draw(st.integers(1, n), label="seq")
        target = stored[seq - 1]
        with closing(sqlite3.connect(path, isolation_level=None)) as c:
            if op == "data":
                d = dict(target.data)
                key = data.draw(st.sampled_from(sorted(d)), label="field")
                d[key] = _changed(d[key])
                c.execute("UPDATE events SET data = ? WHERE seq = ?", (json.dumps(d), seq))
                expect = seq
            elif op == "type":
                new = data.draw(st.sampled_from([t for t in ev.EVENT_TYPES if t != target.type]))
                c.execute("UPDATE events SET type = ? WHERE seq = ?", (new, seq))
                expect = seq
            elif op == "stream_version":
                delta = data.draw(st.sampled_from([-1, 1, 1000]), label="delta")
                assume(target.stream_version + delta >= 0)
                try:
                    c.execute(
                        "UPDATE events SET stream_version = ? WHERE seq = ?",
                        (target.stream_version + delta, seq),
                    )
                except sqlite3.IntegrityError:  # (stream, version) is unique: refused outright
                    return
                expect = seq
            else:
                assume(n >= 2)
                other = data.draw(st.integers(1, n).filter(lambda s: s != seq), label="other")
                first, second = sorted((seq, other))
                if op == "swap_data":
                    a, b = stored[first - 1].data, stored[second - 1].data
                    assume(a != b)
                    c.execute("UPDATE events SET data = ? WHERE seq = ?", (json.dumps(b), first))
                    c.execute("UPDATE events SET data = ? WHERE seq = ?", (json.dumps(a), second))
                else:
                    c.execute("UPDATE events SET seq = -1 WHERE seq = ?", (first,))
                    c.execute("UPDATE events SET seq = ? WHERE seq = ?", (first, second))
                    c.execute("UPDATE events SET seq = ? WHERE seq = -1", (second,))
                expect = first
        with closing(Store(store.settings)) as reopened, reopened.reading() as conn:
            report = verify(conn)
        assert not report.ok, f"{op} at seq {seq} was not detected"
        m = SEQ_RE.match(report.problems[0])
        assert m is not None, report.problems
        assert int(m.group(1)) == expect, report.problems


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txs=tx_strategy, back=st.integers(0, 30))
@example(txs=[[ev.EnvSet(key="A", value="1")], [ev.EnvUnset(key="B")]], back=0)
@example(
    txs=[
        [ev.ComponentAttached(component_id="a", source_uri="u", wasm_sha256="1", metadata={})],
        [ev.SecretKeysSet(component_id="a", keys=["K1"])],
        [ev.SecretKeysSet(component_id="a", keys=["K1"])],  # a rotation: no read-model change
    ],
    back=0,
)
@example(txs=[[ev.EnvSet(key="A", value="1"), ev.EnvSet(key="A", value="1")]], back=1)
def test_any_single_deletion_is_detected(workdir: Path, txs: list[list[Any]], back: int) -> None:
    with fresh_store(workdir) as store:
        stored = build(store, txs)
        n = len(stored)
        # Mostly rows near the end: a deleted tail has no successor to give it away.
        seq = n - back if back < n else 1 + back % n
        if seq == n:
            assume(not _no_op_tail(stored))
        path = Path(store.settings.db_url[len("sqlite:///") :])
        store.close()
        with closing(sqlite3.connect(path, isolation_level=None)) as c:
            c.execute("DELETE FROM events WHERE seq = ?", (seq,))
        with closing(Store(store.settings)) as reopened, reopened.reading() as conn:
            report = verify(conn)
        assert not report.ok, f"deleting seq {seq} of {n} was not detected"
        m = SEQ_RE.match(report.problems[0])
        assert m is not None, report.problems
        if seq < n:
            assert report.problems[0].startswith(f"seq {seq}: missing"), report.problems
        else:  # found through what it left behind: an empty transaction or a read-model row
            assert int(m.group(1)) <= seq, report.problems
