"""Time and verification under real conditions: a clock that ran years ahead for one command,
`state verify` while another process writes, and one edited event (issue 14).

The clock is shifted for one command with $WASSETTE_STATE_CLOCK_SKEW (seconds added to the
system clock, read by every command through `clock.now_us`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import (
    REPO,
    Env,
    assert_refused,
    cli_history,
    ok,
    opened,
    raw_db,
    run_verify,
    tree_bytes,
)
from wassette_state.store.domain import events as ev
from wassette_state.store.persistence import db, log, migrate
from wassette_state.store.usecases import verify

TEN_YEARS_S = 10 * 365 * 86400
SKEW = "WASSETTE_STATE_CLOCK_SKEW"


def us(iso: str) -> int:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(dt.timestamp() * 1_000_000)


def now_us() -> int:
    return time.time_ns() // 1000


def iso(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- a clock 10 years ahead, once


@pytest.fixture
def glitched(env: Env) -> Env:
    """tx1 A (2 minutes ago), tx2 B (clock 10 years ahead), tx3 C (20 s ago), tx4 D (now): as
    a host whose RTC was wrong for one command."""
    ok(env.run("env", "set", "A=1", extra_env={SKEW: "-120"}))
    ok(env.run("env", "set", "B=1", extra_env={SKEW: str(TEN_YEARS_S)}))
    ok(env.run("env", "set", "C=1", extra_env={SKEW: "-20"}))
    ok(env.run("env", "set", "D=1"))
    return env


def tx_times(env: Env) -> dict[int, int]:
    return {row["tx"]: us(row["recorded_at"]) for row in cli_history(env)}


def test_history_shows_todays_changes_at_todays_time(glitched: Env) -> None:
    times = tx_times(glitched)
    now = now_us()
    assert times[2] > now + (TEN_YEARS_S - 3600) * 1_000_000  # the glitch, as the clock read it
    for tx in (1, 3, 4):  # before the fix: 3 and 4 were pinned 10 years ahead too
        assert abs(times[tx] - now) < 300 * 1_000_000, (tx, iso(times[tx]))
    assert times[3] < times[4]


def test_at_a_real_time_names_the_changes_made_before_it(glitched: Env) -> None:
    times = tx_times(glitched)
    # Between C and D: A, B (recorded before C in the log) and C; not D.
    between = iso(times[3] + (times[4] - times[3]) // 2)
    shown = json.loads(ok(glitched.run("state", "show", "--at", between, "-o", "json")).out)
    assert shown["environment"] == {"A": "1", "B": "1", "C": "1"}
    # C's own time, as history shows it, is accepted and includes C.
    shown = json.loads(ok(glitched.run("state", "show", "--at", iso(times[3]), "-o", "json")).out)
    assert shown["environment"] == {"A": "1", "B": "1", "C": "1"}
    # Before the glitch: only A.
    before = iso(times[1])
    shown = json.loads(ok(glitched.run("state", "show", "--at", before, "-o", "json")).out)
    assert shown["environment"] == {"A": "1"}


def test_rollback_by_age_undoes_only_what_is_that_recent(glitched: Env) -> None:
    # C was recorded 20 s before the true time: "10s ago" is after C, before D.
    r = ok(glitched.run("state", "rollback", "--to", "10s", "--dry-run", "-o", "json"))
    plan = json.loads(r.out)
    assert plan["target_seq"] == cli_history(glitched, "--tx", "3")[-1]["seq"]
    assert len(plan["plan"]) == 1 and "D" in plan["plan"][0], plan["plan"]
    r = ok(glitched.run("state", "history", "--since", "10s", "-o", "json"))
    assert [e["data"].get("key") for e in json.loads(r.out)] == ["D"]


def test_a_glitched_log_verifies_and_says_where_the_clock_stepped_back(glitched: Env) -> None:
    r = ok(glitched.run("state", "verify"))
    assert r.out.startswith("ok:")
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "tx 3" in warnings[0] and "clock stepped back" in warnings[0]


def test_a_bad_clock_setting_is_one_line(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    before = tree_bytes(env.root)
    assert_refused(env, env.run("env", "set", "B=1", extra_env={SKEW: "soon"}), code=2)
    assert tree_bytes(env.root) == before


# ---------------------------------------------------------------- the rule, on the library


T0 = 1_800_000_000_000_000
YEAR = 365 * 86400 * 1_000_000


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    eng = db.make_engine(url)
    migrate.ensure_schema(eng, url)
    yield eng
    eng.dispose()


def stamp(engine: Engine, now: int) -> int:
    with db.write_tx(engine) as conn:
        return log.append(
            conn, log.TxInfo(actor="a", command="c"), [ev.EnvSet(key="K", value=str(now))],
            now_us=now,
        ).recorded_at  # fmt: skip


def test_small_steps_back_are_pinned_a_glitch_is_not(engine: Engine) -> None:
    got = [
        stamp(engine, T0),
        stamp(engine, T0 + 10 * YEAR),  # a clock 10 years ahead
        stamp(engine, T0 + 10 * YEAR - 30_000_000),  # still ahead, 30 s correction: pinned
        stamp(engine, T0 + 5_000_000),  # fixed: agrees with tx 1, kept
        stamp(engine, T0 + 4_000_000),  # 1 s correction: pinned after tx 4
        stamp(engine, T0 + 6_000_000),
    ]
    assert got == [
        T0,
        T0 + 10 * YEAR,
        T0 + 10 * YEAR + 1,
        T0 + 5_000_000,
        T0 + 5_000_001,
        T0 + 6_000_000,
    ]
    with db.read_tx(engine) as conn:
        assert log.seq_at_time(conn, T0 - 1) == 0
        assert log.seq_at_time(conn, T0 + 1_000_000) == 1
        # From the first transaction recorded by a correct clock on, the glitched ones count.
        assert log.seq_at_time(conn, T0 + 5_000_000) == 4
        assert log.seq_at_time(conn, T0 + 5_500_000) == 5
        assert log.seq_at_time(conn, T0 + 10 * YEAR) == 6
    report = verify.Report()
    with db.read_tx(engine) as conn:
        verify._check_transactions(conn, report)
    assert report.ok, report.problems
    assert len(report.warnings) == 1 and report.warnings[0].startswith("tx 4: ")


def test_a_clock_before_the_whole_log_is_the_wrong_one(engine: Engine) -> None:
    """A reset RTC (1970): no transaction agrees with it, so it is pinned, not believed."""
    assert stamp(engine, T0) == T0
    assert stamp(engine, 1_000_000) == T0 + 1
    assert stamp(engine, T0 + 3) == T0 + 3


def test_a_kept_reading_never_takes_an_instant_already_used(engine: Engine) -> None:
    stamp(engine, T0)
    stamp(engine, T0 + 100)
    stamp(engine, T0 + 10 * YEAR)
    assert stamp(engine, T0 + 100) == T0 + 101  # T0 + 100 is tx 2's
    assert stamp(engine, T0 + 50) == T0 + 102  # within a minute of tx 4: pinned


def test_an_edited_time_is_one_finding(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    ok(env.run("env", "set", "B=1"))
    with raw_db(env.db) as c:  # tx 2 one second before tx 1: a rewritten time
        (t1,) = c.execute("SELECT recorded_at FROM transactions WHERE id = 1").fetchone()
        c.execute("UPDATE transactions SET recorded_at = ? WHERE id = 2", (t1 - 1_000_000,))
    with opened(env) as store:
        report = run_verify(store)
    assert report.problems == [
        "seq 3: hash mismatch: the event or its transaction was edited, reordered, or an "
        "earlier event was removed"
    ]


# ---------------------------------------------------------------- verify under a writer

WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from wassette_state.store.usecases import commands
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store
store = Store(resolve({db!r}, {components!r}, {secrets!r}, "writer@test"))
stop = Path({stop!r})
i = 0
while not stop.exists():
    i += 1
    commands.env_set(store, {{"LOOP": str(i)}})
    if i == 1:
        Path({started!r}).touch()
store.close()
print(i)
"""


def test_verify_while_another_process_writes_reports_nothing(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    stop, started = env.root / "stop", env.root / "started"
    code = WRITER.format(
        repo=str(REPO),
        db=str(env.db),
        components=str(env.component_dir),
        secrets=str(env.secrets_dir),
        stop=str(stop),
        started=str(started),
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert writer.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.01)
        failures = []
        for _ in range(25):
            r = env.run("state", "verify")
            if r.code != 0:
                failures.append(r.err.strip())
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    assert int(out) > 25  # the writer really wrote while verify ran
    assert failures == []
    assert ok(env.run("state", "verify")).out.startswith("ok:")


# ---------------------------------------------------------------- one damage, one finding


def test_one_edited_event_is_one_finding(env: Env) -> None:
    for i in range(4):
        ok(env.run("env", "set", f"K{i}=v{i}"))
    with raw_db(env.db) as c:
        c.execute("UPDATE events SET data = replace(data, 'v1', 'vX') WHERE seq = 3")
    r = env.run("state", "verify", "-o", "json")
    assert r.code == 4
    doc = json.loads(r.out)
    assert len(doc["problems"]) == 1, doc["problems"]
    assert doc["problems"][0].startswith("seq 3: hash mismatch")
    assert_refused(env, env.run("state", "verify"), code=4, contains="seq 3: hash mismatch")


def test_a_log_cut_short_is_one_finding(env: Env) -> None:
    for i in range(3):
        ok(env.run("env", "set", f"K{i}=v{i}"))
    with raw_db(env.db) as c:
        c.execute("DELETE FROM events WHERE tx_id = 3")
        c.execute("DELETE FROM transactions WHERE id = 3")
    doc = json.loads(env.run("state", "verify", "-o", "json").out)
    assert len(doc["problems"]) == 1, doc["problems"]
    assert "missing" in doc["problems"][0]
