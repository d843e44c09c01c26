"""Eight processes hammer one store with mutating commands through the installed CLI, on
SQLite and on PostgreSQL.

Each worker is a small Python driver (written into tmp_path) that runs its 50 commands one after
the other as `wassette` subprocesses; the eight drivers run at the same time. Afterwards every
command must have succeeded or failed with a clean conflict, no event may be lost, `state verify`
must pass and the files must match the state.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import wasm_fixtures as fx
from tests.conftest import BOTH, Env, ok, raw_db, wassette_exe
from wassette_state.store.files import materialize
from wassette_state.store.files import secrets as secret_files

WORKERS = 8
COMMANDS_PER_WORKER = 50
SHARED = "shared"
# Retried internally on a conflict (safe to re-decide): they must always succeed.
RETRYING = ("env set", "secret set", "permission grant")

DRIVER = r"""
import json
import random
import subprocess
import sys

exe, idx, count, out_path, shared_a, shared_b, shared_c, own_wasm = sys.argv[1:9]
idx, count = int(idx), int(count)
rng = random.Random(7919 * (idx + 1))
own = f"own{idx}"
own_attached = True  # attached by the test before the workers start
shared_variants = [shared_a, shared_b, shared_c]
records = []

for j in range(count):
    roll = rng.random()
    if roll < 0.18:
        kind = "env set"
        args = ["env", "set", f"W{idx}_K{j % 6}=v{j}", f"SHARED_K{j % 3}=w{idx}-{j}"]
    elif roll < 0.34:
        kind = "secret set"
        target = own if own_attached and rng.random() < 0.4 else "shared"
        args = ["secret", "set", target, f"S{idx}_{j % 5}=value-{idx}-{j}"]
    elif roll < 0.46:
        kind = "permission grant"
        args = ["permission", "grant", "network", "shared", f"h{idx}-{j}.example.com"]
    elif roll < 0.54:
        kind = "permission grant"
        args = ["permission", "grant", "storage", "shared", f"fs:///data/w{idx}/{j % 9}",
                "--access", rng.choice(["read", "write", "read,write"])]
    elif roll < 0.62 and own_attached:
        kind = "permission grant"
        args = ["permission", "grant", "environment-variable", own, f"E{j % 7}"]
    elif roll < 0.80:
        kind = "attach shared"
        args = ["component", "attach", rng.choice(shared_variants), "--id", "shared"]
    else:
        if own_attached:
            kind = "detach own"
            args = ["component", "detach", own]
        else:
            kind = "attach own"
            args = ["component", "attach", own_wasm, "--id", own]
    proc = subprocess.run([exe, "-o", "json", *args], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 0 and kind in ("detach own", "attach own"):
        own_attached = kind == "attach own"
    records.append({"worker": idx, "kind": kind, "args": args, "code": proc.returncode,
                    "out": proc.stdout, "err": proc.stderr})

with open(out_path, "w") as f:
    json.dump(records, f)
"""


def child_env(env: Env) -> dict[str, str]:
    import os

    out = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    out.update(
        WASSETTE_STATE_DB=env.db_arg,
        WASSETTE_COMPONENT_DIR=str(env.component_dir),
        WASSETTE_SECRETS_DIR=str(env.secrets_dir),
        WASSETTE_ACTOR="worker@test",
        HOME=str(env.root / "home"),
        XDG_DATA_HOME=str(env.root / "xdg-data"),
        XDG_CONFIG_HOME=str(env.root / "xdg-config"),
    )
    return out


def head_seq(env: Env) -> int:
    return int(show(env)["as_of"]["seq"])


def show(env: Env) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(env.run("state", "show", "-o", "json")).out)
    return doc


def check_files_match_state(env: Env, doc: dict[str, Any], own_ids: list[str]) -> None:
    """The component dir against `state show -o json`: every current component's files, and
    none for the detached ones."""
    cdir = env.component_dir
    current = {c["component_id"]: c for c in doc["components"]}
    for cid, comp in current.items():
        wasm = cdir / f"{cid}.wasm"
        assert wasm.is_file() and not wasm.is_symlink(), cid
        assert hashlib.sha256(wasm.read_bytes()).hexdigest() == comp["wasm_sha256"], cid
        meta = json.loads((cdir / f"{cid}.metadata.json").read_text())
        assert meta == comp["metadata"], cid
        policy = cdir / f"{cid}.policy.yaml"
        if comp["policy"] is None:
            assert not policy.exists(), cid
        else:
            assert policy.read_text() == comp["policy"]["policy_content"], cid
    for cid in own_ids:
        if cid in current:
            continue
        left = [
            p.name
            for p in materialize.component_files(cdir, cid).values()
            if p.exists() or p.is_symlink()
        ]
        assert not left, f"detached {cid} still has files: {left}"


@pytest.mark.slow
@BOTH
def test_eight_writers_lose_nothing(env: Env, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    base = fx.KINDS["simple"]()
    shared_variants = []
    for n in range(3):
        p = inputs / f"shared-{n}.wasm"
        p.write_bytes(fx.with_custom_section(base, "variant", f"shared-{n}".encode()))
        shared_variants.append(str(p))
    own_wasms = []
    for i in range(WORKERS):
        p = inputs / f"own-{i}.wasm"
        p.write_bytes(fx.with_custom_section(base, "variant", f"own-{i}".encode()))
        own_wasms.append(str(p))

    # Setup: the shared component (each variant once, so introspection is cached) and one
    # component per worker.
    for v in (*shared_variants[1:], shared_variants[0]):
        ok(env.run("component", "attach", v, "--id", SHARED))
    for i, w in enumerate(own_wasms):
        ok(env.run("component", "attach", w, "--id", f"own{i}"))
    ok(env.run("env", "set", "SETUP=1"))
    setup_events = head_seq(env)

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    procs = []
    outs = []
    for i in range(WORKERS):
        out = tmp_path / f"worker-{i}.json"
        outs.append(out)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(driver),
                    wassette_exe(),
                    str(i),
                    str(COMMANDS_PER_WORKER),
                    str(out),
                    *shared_variants,
                    own_wasms[i],
                ],
                env=child_env(env),
                cwd=env.root,
            )
        )
    import time

    t0 = time.monotonic()
    for p in procs:
        assert p.wait(timeout=1800) == 0
    elapsed = time.monotonic() - t0
    records: list[dict[str, Any]] = []
    for out in outs:
        records.extend(json.loads(out.read_text()))
    assert len(records) == WORKERS * COMMANDS_PER_WORKER

    # Every command: ok, or a clean conflict (only for the commands that do not retry).
    reported_events = 0
    conflicts: dict[str, int] = {}
    secret_ok: set[str] = set()
    bad = []
    for r in records:
        err = r["err"]
        # ("repaired": another writer's change in flight taken for a crash)
        if (
            "database is locked" in err
            or "Traceback" in err
            or "repaired" in err
            or r["code"] not in (0, 3)
        ):
            bad.append(r)
            continue
        if r["code"] == 3:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            if len(lines) != 1 or not lines[0].startswith("Error: ") or r["kind"] in RETRYING:
                bad.append(r)
                continue
            conflicts[r["kind"]] = conflicts.get(r["kind"], 0) + 1
            continue
        doc = json.loads(r["out"])
        assert doc["status"] == "ok"
        reported_events += len(doc["events"])
        if r["kind"] == "secret set":
            secret_ok.add(r["args"][2])
    assert not bad, json.dumps(bad[:3], indent=1)

    total = head_seq(env)
    codes = {
        c: sum(1 for r in records if r["code"] == c) for c in sorted({r["code"] for r in records})
    }
    print(
        f"\nconcurrency [{env.backend}]: {len(records)} commands by {WORKERS} processes in "
        f"{elapsed:.1f}s, exit codes {codes}, conflicts {conflicts}, "
        f"{total - setup_events} events"
    )
    assert total == setup_events + reported_events
    # Gap-free seq, one tx per command, tx order = seq order (verify checks the chain).
    with raw_db(env) as c:
        seqs = [r[0] for r in c.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
        tx_order = [r[0] for r in c.execute("SELECT tx_id FROM events ORDER BY seq").fetchall()]
    assert seqs == list(range(1, total + 1))
    assert tx_order == sorted(tx_order)

    verify = ok(env.run("state", "verify"))
    assert verify.out.startswith("ok:")

    doc = show(env)
    own_ids = [f"own{i}" for i in range(WORKERS)]
    check_files_match_state(env, doc, own_ids)

    current = {c["component_id"]: c for c in doc["components"]}
    for cid in sorted(secret_ok):
        comp = current.get(cid)
        if comp is None:
            continue
        declared = set((comp["secrets"] or {}).get("env_keys", []))
        path = secret_files.secrets_file(env.secrets_dir, cid)
        on_disk = set(yaml.safe_load(path.read_text()) or {}) if path.exists() else set()
        missing = sorted(declared - on_disk)
        assert not missing, (
            f"{cid}: declared secret keys without a value in {path.name}: {missing} "
            "(a concurrent 'secret set' overwrote the file with a stale copy)"
        )


SECRET_WORKERS = 4
SECRET_WORKER = r"""
import sys
from wassette_state.store.usecases import commands, secret_commands
from wassette_state.store.files.config import resolve
from wassette_state.store.usecases.service import Store

db, cdir, sdir, idx, count = sys.argv[1:6]
store = Store(resolve(db, cdir, sdir, f"secret-worker-{idx}"))
for j in range(int(count)):
    secret_commands.secret_set(store, "shared", {f"K{idx}_{j}": f"value-{idx}-{j}"})
store.close()
"""


@pytest.mark.slow
@BOTH
def test_concurrent_secret_sets_keep_every_value(env: Env, tmp_path: Path) -> None:
    """Four processes set distinct keys of one component's secrets as fast as the library
    allows. Every key the log declares must have its value in the secrets file: the file is a
    read-merge-write, so without a lock a slower writer puts back a copy that lacks the keys a
    faster one just added (a lost update the log does not see)."""
    fx.write_component(tmp_path / "shared.wasm", kind="simple")
    ok(env.run("component", "attach", str(tmp_path / "shared.wasm")))
    per_worker = 25
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SECRET_WORKER,
                env.db_arg,
                str(env.component_dir),
                str(env.secrets_dir),
                str(i),
                str(per_worker),
            ],
            cwd=Path(__file__).resolve().parents[1],
            env=env.environ(),
        )
        for i in range(SECRET_WORKERS)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0] * SECRET_WORKERS
    (shared,) = show(env)["components"]
    declared = set(shared["secrets"]["env_keys"])
    assert len(declared) == SECRET_WORKERS * per_worker
    values = secret_files.read_values(env.secrets_dir, "shared")
    lost = sorted(declared - set(values))
    print(f"\nsecret race: {len(declared)} keys declared, {len(lost)} values lost")
    assert not lost, f"{len(lost)} of {len(declared)} secret values lost: {lost[:8]}"
    assert all(
        values[f"K{i}_{j}"] == f"value-{i}-{j}"
        for i in range(SECRET_WORKERS)
        for j in range(per_worker)
        if f"K{i}_{j}" in values
    )
