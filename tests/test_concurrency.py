"""Real concurrent processes on one store (SQLite and PostgreSQL): races are conflicts, never
lost or locked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import BOTH, REPO, Env
from wassette_state.store.domain import events as ev
from wassette_state.store.persistence import log, readmodel
from wassette_state.store.usecases import commands
from wassette_state.store.usecases.service import Decision, Store
from wassette_state.store.usecases.verify import verify

pytestmark = BOTH

# Every child waits at a file barrier (all `ready-*` files present) before the contended step.
PRELUDE = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from wassette_state.store.persistence import db, log, readmodel
from wassette_state.store.domain import events as ev
from wassette_state.store.files.config import resolve
from wassette_state.store.domain.errors import ConflictError
from wassette_state.store.usecases.service import Decision, Store

root, me, parties = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
barrier = root / "barrier"

def settings(actor):
    db = os.environ["WASSETTE_STATE_DB"]
    return resolve(db, str(root / "components"), str(root / "secrets"), actor)

def wait_for_all(tag):
    (barrier / f"{{tag}}-{{me}}").touch()
    deadline = time.monotonic() + 60  # a safety net against a hung sibling, not a measurement
    while len(list(barrier.glob(f"{{tag}}-*"))) < parties:
        if time.monotonic() > deadline:
            print(json.dumps({{"result": "barrier timeout"}}))
            sys.exit(1)
        time.sleep(0.002)
"""

# Library level: read the stream version, wait, append with it as the expected version.
RACE_APPEND = """
store = Store(settings(f"racer{me}@test"))
with store.reading() as conn:
    base = readmodel.state_at(conn)
    version = log.stream_versions(conn, ["w"])["w"]
wait_for_all("read")
try:
    with db.write_tx(store.engine) as conn:
        appended = log.append(
            conn,
            log.TxInfo(actor=f"racer{me}@test", command="race"),
            [ev.SecretKeysSet(component_id="w", keys=[f"K{me}"])],
            {"w": version},
        )
        readmodel.apply(conn, appended.events, base)
    print(json.dumps({"result": "ok", "version": version}))
except ConflictError as e:
    print(json.dumps({"result": "conflict", "version": version, "message": str(e)}))
"""

# Service level: the barrier sits inside `decide`, after the snapshot was taken.
RACE_EXECUTE = """
store = Store(settings(f"racer{me}@test"))
retry = sys.argv[4] == "retry"
attempts = []
def decide(state):
    attempts.append(len(state.components["w"].secret_keys))
    if len(attempts) == 1:  # a retry decides again at once
        wait_for_all("decide")
    return Decision([ev.SecretKeysSet(component_id="w", keys=[f"K{me}"])])
try:
    out = store.execute("race", decide, retry=retry)
    print(json.dumps({"result": "ok", "tx": out.tx_id, "attempts": attempts}))
except ConflictError as e:
    print(json.dumps({"result": "conflict", "message": str(e)}))
"""

# Stress: open a store that does not exist yet, all at once, then 50 retried commands each.
STRESS = """
wait_for_all("open")
store = Store(settings(f"worker{me}@test"))
for i in range(int(sys.argv[4])):
    store.execute(
        f"env set P{me}_{i}",
        lambda s, i=i: Decision([ev.EnvSet(key=f"P{me}_{i}", value=str(i))]),
        retry=True,
    )
print(json.dumps({"result": "ok"}))
"""


def run_parties(env: Env, body: str, parties: int, *extra: str) -> list[dict[str, Any]]:
    root = env.root
    (root / "barrier").mkdir(exist_ok=True)
    for old in (root / "barrier").iterdir():
        old.unlink()
    script = root / "child.py"
    script.write_text(PRELUDE.format(repo=str(REPO)) + body)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(i), str(parties), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env.environ(),
        )
        for i in range(parties)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert "locked" not in err.lower(), err
        assert p.returncode == 0, (p.returncode, out, err)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def seed(env: Env) -> Store:
    store: Store = env.store()  # type: ignore[assignment]
    store.execute(
        "seed",
        lambda s: Decision(
            [
                ev.ComponentAttached(
                    component_id="w", source_uri="file:///w.wasm", wasm_sha256="0" * 64, metadata={}
                )
            ]
        ),
    )
    return store


def stream_events(store: Store, stream: str) -> list[log.StoredEvent]:
    return store.history(log.Query(stream=stream))


def assert_verifies(store: Store) -> None:
    with store.reading() as conn:
        report = verify(conn)
    assert report.ok, report.problems


@pytest.mark.parametrize("round_", range(3))
def test_two_appenders_with_the_same_expected_version(env: Env, round_: int) -> None:
    store = seed(env)
    before = stream_events(store, "w")
    results = run_parties(env, RACE_APPEND, 2)
    assert sorted(r["result"] for r in results) == ["conflict", "ok"], results
    assert {r["version"] for r in results} == {len(before)}  # both decided on the same version
    loser = next(r for r in results if r["result"] == "conflict")
    assert "component 'w' moved from version" in loser["message"]
    after = stream_events(store, "w")
    assert len(after) == len(before) + 1
    winner = results.index(next(r for r in results if r["result"] == "ok"))
    assert after[-1].event() == ev.SecretKeysSet(component_id="w", keys=[f"K{winner}"])
    assert after[-1].actor == f"racer{winner}@test"
    assert store.state().components["w"].secret_keys == (f"K{winner}",)
    assert_verifies(store)


def test_two_commands_race_without_retry(env: Env) -> None:
    store = seed(env)
    head = store.head_seq()
    results = run_parties(env, RACE_EXECUTE, 2, "no-retry")
    assert sorted(r["result"] for r in results) == ["conflict", "ok"], results
    assert store.head_seq() == head + 1
    assert len(store.state().components["w"].secret_keys) == 1
    assert_verifies(store)


def test_two_commands_race_with_retry_both_land(env: Env) -> None:
    store = seed(env)
    head = store.head_seq()
    results = run_parties(env, RACE_EXECUTE, 2, "retry")
    assert [r["result"] for r in results] == ["ok", "ok"], results
    assert sorted(r["tx"] for r in results) == [2, 3]
    # Both decided on the same snapshot; the loser decided again on the winner's state.
    assert sorted(r["attempts"] for r in results) == [[0], [0, 1]]
    assert store.head_seq() == head + 2
    assert store.state().components["w"].secret_keys == ("K0", "K1")
    assert_verifies(store)


def test_stress_four_processes_fifty_commands_each(
    env: Env, request: pytest.FixtureRequest
) -> None:
    """The database does not exist yet (an empty PostgreSQL database): creation races too."""
    if env.url:
        env.url = request.getfixturevalue("pg_databases")(blank=True)
    workers, per_worker = 4, 50
    results = run_parties(env, STRESS, workers, str(per_worker))
    assert [r["result"] for r in results] == ["ok"] * workers
    store: Store = env.store()  # type: ignore[assignment]
    events = store.history(log.Query())
    env_sets = [e for e in events if e.type == "env.set"]
    paths = [e for e in events if e.type == "paths.set"]
    assert len(env_sets) == workers * per_worker
    assert len(paths) == 1  # the first command records the paths; the others see them
    assert len(events) == workers * per_worker + 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.tx_id for e in env_sets}) == workers * per_worker  # one transaction each
    # Each worker's commands landed in its own order.
    for w in range(workers):
        mine = [int(e.data["value"]) for e in env_sets if e.data["key"].startswith(f"P{w}_")]
        assert mine == list(range(per_worker))
        assert {e.actor for e in env_sets if e.data["key"].startswith(f"P{w}_")} == {
            f"worker{w}@test"
        }
    assert store.state().environment == {
        f"P{w}_{i}": str(i) for w in range(workers) for i in range(per_worker)
    }
    assert_verifies(store)
    with store.reading() as conn:
        identities = conn.exec_driver_sql("SELECT count(*) FROM store_identity").scalar()
        rows = readmodel.read_all(conn)
    assert identities == 1
    assert len(rows.settings) == workers * per_worker + 1


def test_concurrent_cli_commands(env: Env) -> None:
    procs = []
    for i in range(4):
        cmd = ["env", "set", f"CLI{i}=v{i}"] if i % 2 else ["secret", "set", "w", f"K{i}=x"]
        procs.append(cmd)
    # A real component on disk: the commands check the files they rewrite for drift first, and a
    # component whose wasm is missing reads as one Wassette unloaded.
    src = env.root / "inputs" / "w.wasm"
    src.parent.mkdir(parents=True, exist_ok=True)
    fx.write_component(src, kind="simple")
    assert (
        subprocess.run(
            [str(Path(sys.executable).parent / "wassette-state"), "component", "attach", str(src)],
            env=env.environ("cli@test"),
            capture_output=True,
        ).returncode
        == 0
    )
    store: Store = env.store()  # type: ignore[assignment]
    commands.env_set(store, {"BASE": "1"})
    store.close()
    script = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "wassette-state"), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env.environ("cli@test"),
        )
        for cmd in procs
    ]
    for p in script:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, (out, err)
        assert "locked" not in err.lower()
    store = env.store()  # type: ignore[assignment]
    state = store.state()  # type: ignore[attr-defined]
    assert state.environment == {"BASE": "1", "CLI1": "v1", "CLI3": "v3"}
    assert state.components["w"].secret_keys == ("K0", "K2")
    assert_verifies(store)  # type: ignore[arg-type]
