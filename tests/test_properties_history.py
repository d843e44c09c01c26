"""Properties of rollback, undo, diff and reconcile over random command histories.

Library-level for speed: real stores on real SQLite files and real component files, driven
through `store.commands`; no subprocesses.

(a) `rollback --to seq:k` makes the current state equal to the state at seq k, appending at most
    one `rollback` transaction (exactly the dry run's plan) and never touching earlier events;
    the files follow.
(b) `undo` after any command restores the state before it; undoing the undo restores it again.
(c) For any two points A and B, the events of `reconcile(state_at(A), state_at(B))` folded onto
    state_at(A) give state_at(B), and `diff(A, B)` is empty iff the two states are equal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import wasm_fixtures as fx
from wassette_state.store.domain.diff import diff, reconcile
from wassette_state.store.domain.fold import project
from wassette_state.store.domain.state import State
from wassette_state.store.files.config import resolve
from wassette_state.store.persistence import log, readmodel
from wassette_state.store.usecases import commands, history, secret_commands
from wassette_state.store.usecases.exporter import component_doc
from wassette_state.store.usecases.service import Store

IDS = ["a", "b"]
ENV_KEYS = ["E1", "E2"]
SECRET_KEYS = ["K1", "K2", "K3"]
WASM_KINDS = ["weather", "simple", "interface"]
POLICIES = [
    'version: "1.0"\ndescription: one\npermissions: {}\n',
    'version: "1.0"\ndescription: two\npermissions:\n  network:\n    allow:\n    - host: x.io\n',
]
HOSTS = ["api.example.com", "*.example.org"]

OPS = st.one_of(
    st.tuples(st.just("env_set"), st.sampled_from(ENV_KEYS), st.sampled_from(["x", "y"])),
    st.tuples(st.just("env_unset"), st.sampled_from(ENV_KEYS)),
    st.tuples(st.just("attach"), st.sampled_from(IDS), st.integers(0, len(WASM_KINDS) - 1)),
    st.tuples(st.just("detach"), st.sampled_from(IDS)),
    st.tuples(st.just("policy_attach"), st.sampled_from(IDS), st.integers(0, len(POLICIES) - 1)),
    st.tuples(st.just("grant"), st.sampled_from(IDS), st.sampled_from(HOSTS)),
    st.tuples(
        st.just("secret_set"),
        st.sampled_from(IDS),
        st.lists(st.sampled_from(SECRET_KEYS), min_size=1, max_size=2, unique=True),
    ),
)
# Attaches first so that most histories have components to work on.
HISTORIES = st.tuples(
    st.lists(
        st.tuples(st.just("attach"), st.sampled_from(IDS), st.integers(0, 2)),
        min_size=1,
        max_size=2,
    ),
    st.lists(OPS, min_size=1, max_size=8),
).map(lambda t: t[0] + t[1])

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Component and policy files, plus a warm introspection cache to copy into each store."""
    root = tmp_path_factory.mktemp("prop-inputs")
    for i, kind in enumerate(WASM_KINDS):
        fx.write_component(root / f"w{i}.wasm", kind=kind)
    for i, text in enumerate(POLICIES):
        (root / f"p{i}.yaml").write_text(text)
    warm = root / "warm"
    store = Store(resolve(str(warm / "state.db"), str(warm / "c"), str(warm / "s"), "warm"))
    try:
        for i in range(len(WASM_KINDS)):
            commands.attach(store, str(root / f"w{i}.wasm"), f"w{i}")
    finally:
        store.close()
    return root


# Many short-lived stores: on a RAM-backed file system where there is one (fsync is free there).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def fresh_store(inputs: Path) -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="wassette-prop-", dir=SCRATCH) as tmp:
        root = Path(tmp)
        shutil.copytree(inputs / "warm" / "cache", root / "cache")
        store = Store(
            resolve(str(root / "state.db"), str(root / "components"), str(root / "secrets"), "p")
        )
        try:
            yield store
        finally:
            store.close()


def apply(store: Store, inputs: Path, op: tuple[Any, ...]) -> bool:
    """Run one command if it makes sense in the current state; True when it was run."""
    now = store.state()
    name = op[0]
    if name == "env_set":
        commands.env_set(store, {op[1]: op[2]})
    elif name == "env_unset":
        if op[1] not in now.environment:
            return False
        commands.env_unset(store, [op[1]])
    elif name == "attach":
        commands.attach(store, str(inputs / f"w{op[2]}.wasm"), op[1])
    elif op[1] not in now.components:
        return False
    elif name == "detach":
        commands.detach(store, op[1])
    elif name == "policy_attach":
        commands.policy_attach(store, op[1], str(inputs / f"p{op[2]}.yaml"))
    elif name == "grant":
        commands.permission(store, "grant", op[1], "network", op[2])
    else:
        secret_commands.secret_set(store, op[1], {k: f"value-of-{k}" for k in op[2]})
    return True


def same_paths(state: State, like: State) -> State:
    """Paths are local and never rolled back or reconciled: compare everything else."""
    return replace(state, paths=like.paths)


def docs(state: State) -> dict[str, Any]:
    """The export format's data for a state (components and environment)."""
    return {
        "components": [component_doc(state.components[k]) for k in sorted(state.components)],
        "environment": dict(sorted(state.environment.items())),
    }


def all_events(store: Store) -> list[log.StoredEvent]:
    return store.history(log.Query())


def assert_files_match(store: Store, state: State) -> None:
    cdir = store.settings.component_dir
    for cid in IDS:
        wasm = cdir / f"{cid}.wasm"
        comp = state.components.get(cid)
        if comp is None:
            assert not wasm.exists(), cid
            assert not (cdir / f"{cid}.metadata.json").exists(), cid
            continue
        assert hashlib.sha256(wasm.read_bytes()).hexdigest() == comp.wasm_sha256, cid
        policy = cdir / f"{cid}.policy.yaml"
        if comp.policy is None:
            assert not policy.exists(), cid
        else:
            assert policy.read_text() == comp.policy.policy_content, cid


# --------------------------------------------------------------------------- (a) rollback


@SETTINGS
@given(ops=HISTORIES, data=st.data())
def test_rollback_to_any_seq_gives_the_state_at_that_seq(
    inputs: Path, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    with fresh_store(inputs) as store:
        for op in ops:
            apply(store, inputs, op)
        head = store.head_seq()
        k = data.draw(st.integers(0, head), label="k")
        target = store.state(k)
        previous = store.state()
        before = all_events(store)

        planned = history.rollback(store, f"seq:{k}", dry_run=True)
        assert planned.tx_id is None and planned.events == []
        assert all_events(store) == before and store.state() == previous  # wrote nothing

        outcome = history.rollback(store, f"seq:{k}", reason="property")
        assert outcome.summary["plan"] == planned.summary["plan"]
        assert len(outcome.events) == len(planned.summary["plan"])

        now = store.state()
        assert now == same_paths(target, now)
        assert docs(now) == docs(target)
        after = all_events(store)
        assert after[: len(before)] == before  # history is never rewritten
        appended = after[len(before) :]
        if same_paths(target, previous) == previous:
            assert appended == [] and outcome.tx_id is None  # already there: nothing to do
        else:
            assert {e.tx_id for e in appended} == {outcome.tx_id}
            assert {(e.kind, e.reason) for e in appended} == {("rollback", "property")}
        assert_files_match(store, now)


# --------------------------------------------------------------------------- (b) undo


@SETTINGS
@given(ops=HISTORIES)
def test_undo_after_any_command_restores_the_previous_state(
    inputs: Path, ops: list[tuple[Any, ...]]
) -> None:
    with fresh_store(inputs) as store:
        for op in ops:
            previous = store.state()
            head = store.head_seq()
            if not apply(store, inputs, op) or store.head_seq() == head:
                continue  # nothing was appended: nothing to undo
            changed = store.state()
            undone = history.undo(store)
            assert store.state() == same_paths(previous, changed)
            assert_files_match(store, store.state())
            if undone.tx_id is None:
                # Only a transaction that changed nothing (a secret rotation) has nothing to undo.
                assert same_paths(previous, changed) == changed
                continue
            history.undo(store)  # undo the undo
            assert store.state() == changed
        kinds = {e.tx_id: e.kind for e in all_events(store)}
        assert set(kinds.values()) <= {"change", "rollback"}


# --------------------------------------------------------------------------- (c) reconcile, diff


@SETTINGS
@given(ops=HISTORIES)
def test_reconcile_and_diff_between_any_two_points(
    inputs: Path, ops: list[tuple[Any, ...]]
) -> None:
    with fresh_store(inputs) as store:
        for op in ops:
            apply(store, inputs, op)
        with store.reading() as conn:
            states = [readmodel.state_at(conn, s) for s in range(store.head_seq() + 1)]
    for a in states:
        assert diff(a, a) == []
        for b in states:
            events, plan = reconcile(a, b, prune=True)
            folded = project(events, a)
            assert same_paths(folded, b) == b
            assert len(plan) == len(events)
            assert (events == []) == (same_paths(a, b) == b)
            assert (diff(a, b) == []) == (a == b)
            assert len(diff(a, b)) == len(diff(b, a))
