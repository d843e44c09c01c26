"""`wassette-state watch`: a real watch subprocess on the test's dirs records what the real
Wassette (or a hand) changes there as `sync` transactions, and never what we write ourselves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from contextlib import closing
from typing import Any

import pytest
from conftest import Env, assert_refused, cli_history, ok
from wasm_fixtures import write_component
from watch_process import WatchProcess, last_tx, transactions, wait_for

BOUND_S = 10.0  # generous on a loaded machine; the real latency is printed (see bench/)
QUIET_S = 1.5  # longer than a burst's debounce plus a scan: nothing more will come
SECRET = "s3cr3t-value-never-printed"
POLICY = (
    'version: "1.0"\ndescription: by hand\npermissions:\n  network:\n    allow:\n'
    "    - host: api.example.com\n"
)


def _latency(env: Env, done_wall: float, txs: list[Any]) -> float:
    """From a change's end (wall clock) to its transaction's commit time."""
    return txs[-1].recorded_at_us / 1e6 - done_wall


def _filesystem_txs(env: Env, after: int = 0) -> list[Any]:
    return [t for t in transactions(env.db, after) if t.actor == "filesystem"]


def _quiet(watch: WatchProcess, env: Env) -> int:
    """Wait until the watch has nothing left to scan; the last tx id then."""
    time.sleep(QUIET_S)
    return last_tx(env.db)


# ------------------------------------------------------------------ (a) the real Wassette


def test_what_the_real_wassette_changes_is_recorded_within_the_bound(
    env: Env, wassette: Any
) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    latencies = {}
    # The dirs do not exist yet: the watch waits for them (Wassette creates them).
    assert not env.component_dir.exists() and not env.secrets_dir.exists()
    with WatchProcess(env) as watch:
        steps = [
            (("component", "load", (env.root / "fetch.wasm").as_uri()), "component.attached"),
            (("permission", "grant", "network", "fetch", "api.example.com"), "policy.attached"),
            (("secret", "set", "fetch", f"TOKEN={SECRET}"), "secret.keys_set"),
            (("permission", "grant", "network", "fetch", "b.example.com"), "policy.changed"),
            (("secret", "delete", "fetch", "TOKEN"), "secret.keys_deleted"),
            (("component", "unload", "fetch"), "component.detached"),
        ]
        for n, (args, expected) in enumerate(steps, 1):
            before = last_tx(env.db)
            wassette.ok(*args)
            done = time.time()
            txs = wait_for(env.db, before, {expected}, timeout=BOUND_S)
            latencies[f"{n}. {args[0]} {args[1]}"] = _latency(env, done, txs)
            assert all(t.actor == "filesystem" and t.kind == "sync" for t in txs), txs
        last = _quiet(watch, env)
        code, _ = watch.stop()
    assert code == 0, watch.stderr
    print("\nWassette change -> recorded (s):", {k: round(v, 3) for k, v in latencies.items()})
    # What the watch printed is what it recorded, one JSON line per transaction.
    printed = watch.records()
    assert [r["tx"] for r in printed] == [t.id for t in transactions(env.db)]
    assert all(e["actor"] == "filesystem" for r in printed for e in r["events"])
    assert {r["trigger"] for r in printed} <= {"change", "dir"}
    assert last == printed[-1]["tx"], "nothing recorded twice"
    assert len(printed) == len(steps), "one transaction per change, none for our own writes"
    # The store agrees with Wassette: nothing left to sync, and the chain verifies.
    assert "no drift" in ok(env.run("state", "sync")).out
    ok(env.run("state", "verify"))


@pytest.mark.parametrize("keep", [False, True], ids=["values-go", "keep-secret-values"])
def test_an_unload_by_wassette_takes_the_values_unless_asked_to_keep_them(
    env: Env, wassette: Any, keep: bool
) -> None:
    """As `state sync`: the values of a component Wassette unloaded leave the file Wassette
    reads; with --keep-secret-values they stay, so a reload through Wassette finds them."""
    write_component(env.root / "fetch.wasm", "simple")
    extra = ("--keep-secret-values",) if keep else ()
    with WatchProcess(env, extra):
        before = last_tx(env.db)
        wassette.ok("component", "load", (env.root / "fetch.wasm").as_uri())
        wait_for(env.db, before, {"component.attached"}, timeout=BOUND_S)
        before = last_tx(env.db)
        wassette.ok("secret", "set", "fetch", f"TOKEN={SECRET}")
        wait_for(env.db, before, {"secret.keys_set"}, timeout=BOUND_S)
        before = last_tx(env.db)
        wassette.ok("component", "unload", "fetch")
        wait_for(env.db, before, {"component.detached"}, timeout=BOUND_S)
        secrets_file = env.secrets_dir / "fetch.yaml"
        assert secrets_file.exists() is keep
        before = last_tx(env.db)
        wassette.ok("component", "load", (env.root / "fetch.wasm").as_uri())
        wait_for(env.db, before, {"component.attached"}, timeout=BOUND_S)
        listed = json.loads(ok(env.run("secret", "list", "fetch", "-o", "json")).out)["secrets"]
    assert [k["key"] for k in listed] == (["TOKEN"] if keep else [])
    assert SECRET.encode() not in env.db.read_bytes()


# ------------------------------------------------------------------ (b) bursts


def test_a_burst_of_changes_is_few_transactions_and_all_changes(env: Env) -> None:
    ids = [f"c{i}" for i in range(8)]
    for cid in ids:
        write_component(env.root / f"{cid}.wasm", "simple")
        ok(env.run("component", "attach", str(env.root / f"{cid}.wasm")))
    env.secrets_dir.mkdir(exist_ok=True)
    with WatchProcess(env, ("--debounce", "300")) as watch:
        before = _quiet(watch, env)
        for cid in ids:  # 16 files in a few milliseconds, as a `cp -r` or a script would
            (env.component_dir / f"{cid}.policy.yaml").write_text(POLICY)
            (env.secrets_dir / f"{cid}.yaml").write_text(f"KEY_{cid.upper()}: {SECRET}\n")
        txs = wait_for(env.db, before, {"policy.attached", "secret.keys_set"}, BOUND_S)
        _quiet(watch, env)
        txs = transactions(env.db, before)
        code, _ = watch.stop()
    assert code == 0
    assert 1 <= len(txs) <= 3, [(t.id, t.types) for t in txs]
    assert all(t.actor == "filesystem" for t in txs)
    rows = [e for e in cli_history(env) if e["tx"] > before]
    assert sorted(e["component_id"] for e in rows if e["type"] == "policy.attached") == ids
    keys = {e["component_id"]: e["data"]["keys"] for e in rows if e["type"] == "secret.keys_set"}
    assert keys == {cid: [f"KEY_{cid.upper()}"] for cid in ids}


# ------------------------------------------------------------------ (c) our own writes


def test_our_own_commands_are_never_recorded_as_drift(env: Env, tmp_path: Any) -> None:
    for cid in ("a", "b"):
        write_component(env.root / f"{cid}.wasm", "simple")
    policy = env.root / "policy.yaml"
    policy.write_text(POLICY)
    ok(env.run("component", "attach", str(env.root / "a.wasm")))
    snapshot = tmp_path / "snap.json"
    ok(env.run("state", "export", str(snapshot)))
    failures: list[str] = []

    def commands(cid: str, rounds: int) -> None:
        for i in range(rounds):
            for args in (
                ("component", "attach", str(env.root / f"{cid}.wasm"), "--id", f"{cid}x"),
                ("secret", "set", f"{cid}x", f"K{i}={SECRET}"),
                ("policy", "attach", f"{cid}x", str(policy)),
                ("permission", "grant", "network", f"{cid}x", f"h{i}.example.com"),
                ("secret", "delete", f"{cid}x", f"K{i}"),
                ("component", "detach", f"{cid}x"),
            ):
                try:
                    res = env.run(*args)
                except Exception as e:  # a hang (timeout) is a failure too
                    failures.append(f"{args}: {e!r}")
                    return
                if res.code != 0:
                    failures.append(f"{args}: {res.err}")

    # --debounce 0: a scan after every event, as many chances as possible to race a command.
    with WatchProcess(env, ("--debounce", "0")) as watch:
        start_scans = watch.scans()
        workers = [threading.Thread(target=commands, args=(c, 2)) for c in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ok(env.run("state", "import", str(snapshot), "--prune", "--yes"))
        head = last_tx(env.db)
        ok(env.run("state", "rollback", "--to", "tx:3", "--yes"))
        ok(env.run("state", "undo", "--yes"))
        assert last_tx(env.db) > head
        _quiet(watch, env)
        code, _ = watch.stop()
    assert not failures, failures
    assert code == 0, watch.stderr
    assert watch.scans() > start_scans + 10, "the watch scanned while the commands ran"
    assert _filesystem_txs(env) == [], [(t.id, t.types) for t in _filesystem_txs(env)]
    assert watch.stdout == ""


# ------------------------------------------------------------------ (d) caches


def test_wassette_cache_rewrites_are_never_scanned_for(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    env.secrets_dir.mkdir()  # (one appearing is a reason to scan)
    with WatchProcess(env) as watch:
        before = _quiet(watch, env)
        scans = watch.scans()
        wassette.ok("policy", "get", "fetch")  # loads it: new .cwasm, metadata rewritten
        meta = env.component_dir / "fetch.metadata.json"
        doc = json.loads(meta.read_text())
        meta.write_text(meta.read_text())  # the same bytes again
        doc["created_at"] += 1  # as Wassette rewrites it on every load
        meta.write_text(json.dumps(doc, indent=2))
        (env.component_dir / "fetch.cwasm").write_bytes(b"precompiled")
        downloads = env.component_dir / "downloads"
        downloads.mkdir(exist_ok=True)
        (downloads / "fetch.wasm.part").write_bytes(b"x" * 1000)
        (downloads / "fetch.wasm.part").unlink()
        _quiet(watch, env)
        assert watch.scans() == scans, watch.stderr
        (env.component_dir / "fetch.policy.yaml").write_text(POLICY)  # this one is state
        wait_for(env.db, before, {"policy.attached"}, BOUND_S)
        code, _ = watch.stop()
    assert code == 0
    assert [t.types for t in transactions(env.db, before)] == [["policy.attached"]]


# ------------------------------------------------------------------ (e) while it was down


def test_changes_made_while_it_was_down_are_recorded_on_start(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    with WatchProcess(env) as watch:
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    before = last_tx(env.db)
    write_component(env.root / "other.wasm", "weather")
    wassette.ok("component", "load", (env.root / "other.wasm").as_uri())
    wassette.ok("permission", "grant", "network", "fetch", "api.example.com")
    wassette.ok("secret", "set", "fetch", f"TOKEN={SECRET}")
    with WatchProcess(env) as watch:
        txs = wait_for(
            env.db, before, {"component.attached", "policy.attached", "secret.keys_set"}, BOUND_S
        )
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    assert len(txs) == 1 and txs[0].actor == "filesystem", txs
    assert [r["trigger"] for r in watch.records()] == ["start"]
    assert len(transactions(env.db, before)) == 1


# ------------------------------------------------------------------ (f) signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_end_it_cleanly(env: Env, sig: int) -> None:
    for i in range(5):
        write_component(env.root / f"c{i}.wasm", "simple")
        ok(env.run("component", "attach", str(env.root / f"c{i}.wasm")))
    watch = WatchProcess(env, ("--debounce", "0")).start()
    try:
        for i in range(5):  # the signal comes while these are being scanned and recorded
            (env.component_dir / f"c{i}.policy.yaml").write_text(POLICY)
        time.sleep(0.05)
        code, took = watch.stop(sig)
    finally:
        watch.__exit__()
    assert code == 0, watch.stderr
    assert took < 5, took
    assert "Traceback" not in watch.stderr and "Error" not in watch.stderr, watch.stderr
    assert watch.err[-1].startswith("stopped ("), watch.err[-1]
    ok(env.run("state", "verify"))
    # What it had not recorded yet, the next scan does (nothing lost, nothing half-done).
    ok(env.run("state", "sync"))
    policies = [e for e in cli_history(env) if e["type"] == "policy.attached"]
    assert sorted(e["component_id"] for e in policies) == [f"c{i}" for i in range(5)]


# ------------------------------------------------------------------ (g) secrets


def test_secret_values_never_reach_its_output(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    env.secrets_dir.mkdir(exist_ok=True)
    with WatchProcess(env) as watch:
        before = _quiet(watch, env)
        wassette.ok("secret", "set", "fetch", f"TOKEN={SECRET}")
        wait_for(env.db, before, {"secret.keys_set"}, BOUND_S)
        # A file it cannot adopt, holding a value: one warning, naming the file, not the value.
        (env.secrets_dir / "fetch.yaml").write_text(f"TOKEN: {SECRET}\n  bad: [{SECRET}\n")
        watch.wait_stderr("secrets file unreadable")
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    assert SECRET not in watch.stdout + watch.stderr
    assert "TOKEN" in watch.stdout  # the key name is what is recorded
    warnings = [ln for ln in watch.err if ln.startswith("Warning:")]
    assert len(warnings) == 1, warnings
    assert SECRET not in ok(env.run("history", "-o", "json")).out


# ------------------------------------------------------------------ harder conditions


def test_a_file_it_cannot_read_is_one_warning_and_the_rest_is_recorded(
    env: Env, wassette: Any
) -> None:
    for cid in ("locked", "open"):
        write_component(env.root / f"{cid}.wasm", "simple")
        ok(env.run("component", "attach", str(env.root / f"{cid}.wasm")))
    # As root the watch could read anything: it runs without the capabilities that bypass
    # file modes, as an unprivileged user would.
    drop = "-dac_override,-dac_read_search"
    prefix = ("setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}")
    with WatchProcess(env, prefix=prefix) as watch:
        before = _quiet(watch, env)
        wassette.ok("permission", "grant", "network", "locked", "api.example.com")
        (env.component_dir / "locked.policy.yaml").chmod(0)
        wassette.ok("permission", "grant", "network", "open", "api.example.com")
        txs = wait_for(env.db, before, {"policy.attached"}, BOUND_S)
        watch.wait_stderr("cannot read locked.policy.yaml")
        _quiet(watch, env)
        assert [t.types for t in transactions(env.db, before)] == [["policy.attached"]], txs
        (env.component_dir / "locked.policy.yaml").chmod(0o644)  # readable again: adopted
        after = last_tx(env.db)
        wait_for(env.db, after, {"policy.attached"}, BOUND_S)
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    warnings = [ln for ln in watch.err if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "Permission denied" in warnings[0], warnings
    adopted = [e["component_id"] for e in cli_history(env) if e["type"] == "policy.attached"]
    assert sorted(adopted) == ["locked", "open"]


def test_dirs_deleted_and_recreated_are_watched_again(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    with WatchProcess(env) as watch:
        before = _quiet(watch, env)
        shutil.rmtree(env.component_dir)
        wait_for(env.db, before, {"component.detached"}, BOUND_S)
        env.component_dir.mkdir(exist_ok=True)  # (the sync's repair may have made it)
        before = _quiet(watch, env)
        wassette.ok("component", "load", (env.root / "fetch.wasm").as_uri())
        wait_for(env.db, before, {"component.attached"}, BOUND_S)
        before = _quiet(watch, env)
        shutil.rmtree(env.secrets_dir, ignore_errors=True)
        os.rename(env.component_dir, env.root / "moved")  # replaced by another dir
        shutil.copytree(env.root / "moved", env.component_dir)
        wassette.ok("permission", "grant", "network", "fetch", "api.example.com")
        wait_for(env.db, before, {"policy.attached"}, BOUND_S)
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    assert all(t.actor == "filesystem" for t in transactions(env.db, 1)[1:])
    assert "Traceback" not in watch.stderr


def test_a_store_locked_by_a_long_writer_is_retried_not_fatal(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    with WatchProcess(env) as watch:
        before = _quiet(watch, env)
        with closing(sqlite3.connect(env.db, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long import would
            wassette.ok("permission", "grant", "network", "fetch", "api.example.com")
            watch.wait_stderr("busy", timeout=BOUND_S)
            time.sleep(2)  # several retries fail
            assert transactions(env.db, before) == []
            conn.execute("ROLLBACK")
        wait_for(env.db, before, {"policy.attached"}, BOUND_S)
        _quiet(watch, env)
        assert watch.stop()[0] == 0
    warnings = [ln for ln in watch.err if ln.startswith("Warning:")]
    assert len(warnings) >= 1 and all("busy" in w for w in warnings), warnings
    assert "Traceback" not in watch.stderr
    ok(env.run("state", "verify"))


def test_sigterm_while_the_store_is_locked_exits_at_once(env: Env, wassette: Any) -> None:
    write_component(env.root / "fetch.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "fetch.wasm")))
    watch = WatchProcess(env).start()
    try:
        with closing(sqlite3.connect(env.db, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            wassette.ok("permission", "grant", "network", "fetch", "api.example.com")
            watch.wait_stderr("busy", timeout=BOUND_S)
            code, took = watch.stop(signal.SIGTERM)
            conn.execute("ROLLBACK")
    finally:
        watch.__exit__()
    assert code == 0 and took < 5, (code, took, watch.stderr)
    assert "Traceback" not in watch.stderr
    ok(env.run("state", "verify"))
    # Not recorded by the watch, so recorded by the next scan: nothing is lost.
    assert "policy file added" in ok(env.run("state", "sync")).out


def test_bad_options_are_refused(env: Env) -> None:
    assert_refused(env, env.run("watch", "-o", "yaml"), 2, "JSON lines")
    assert_refused(env, env.run("watch", "--debounce", "-1"), 2)
    assert not env.db.exists()


def test_cli_start_up_does_not_import_the_file_watcher() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from wassette_state.cli import main\n"
        "mods = ('watchfiles', 'anyio', 'wassette_state.store.live.watch')\n"
        "print(sorted(m for m in mods if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"
