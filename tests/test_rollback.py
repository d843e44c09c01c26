"""`state rollback` and `state undo` through the installed CLI: one appended `rollback`
transaction, history never rewritten, dry runs write nothing, files (including detached
components' wasm from the blob store) materialized, secrets needing values reported, reasons
recorded, and the confirmation prompt on a terminal."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import (
    BOTH,
    Env,
    all_events,
    assert_refused,
    ok,
    opened,
    tree_bytes,
    wassette_exe,
)
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.usecases import commands, secret_commands

POLICY = 'version: "1.0"\ndescription: weather\npermissions: {}\n'


def as_json(env: Env, *args: str) -> Any:
    return json.loads(ok(env.run(*args, "-o", "json")).out)


def state(env: Env, at: int | None = None) -> Any:
    with opened(env) as s:
        return s.state(at)


def last_seq_of_tx(env: Env, tx: int) -> int:
    return max(e.seq for e in all_events(env) if e.tx_id == tx)


def files_of(env: Env) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(env.component_dir.iterdir()) if p.is_file()}


def blob(env: Env, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    return env.data_dir / "blobs" / "sha256" / digest[:2] / digest


def build(env: Env) -> dict[str, bytes]:
    """tx1 attach weather + policy, tx2 secret K, tx3 grant network, tx4 env A=1,
    tx5 attach fetch, tx6 env A=2. Returns the wasm bytes by id."""
    inputs = env.root / "inputs"
    inputs.mkdir()
    data = {
        "weather": fx.write_component(inputs / "weather.wasm", kind="weather"),
        "fetch": fx.write_component(inputs / "fetch.wasm", kind="simple"),
    }
    (inputs / "weather.policy.yaml").write_text(POLICY)
    with opened(env, "alice@x") as s:
        commands.attach(s, str(inputs / "weather.wasm"), None, str(inputs / "weather.policy.yaml"))
        secret_commands.secret_set(s, "weather", {"K": "v"})
        commands.permission(s, "grant", "weather", "network", "api.example.com")
        commands.env_set(s, {"A": "1"})
        commands.attach(s, str(inputs / "fetch.wasm"))
        commands.env_set(s, {"A": "2"})
    return data


# --------------------------------------------------------------------------- rollback


@BOTH
def test_rollback_appends_one_transaction_and_keeps_history(env: Env) -> None:
    build(env)
    before = all_events(env)
    assert max(e.tx_id for e in before) == 6
    target = last_seq_of_tx(env, 2)
    out = as_json(
        env, "state", "rollback", "--to", "tx:2", "--yes", "--reason", "bad grant, see #12"
    )
    assert out["status"] == "ok" and out["tx"] == 7 and out["dry_run"] is False
    assert out["target_seq"] == target
    assert out["plan"] == ["detach fetch", "attach policy to weather", "unset env A"]
    assert {e["tx"] for e in out["events"]} == {7}
    assert {e["kind"] for e in out["events"]} == {"rollback"}
    assert out["skipped"] == [] and out["secrets_needed"] == []

    after = all_events(env)
    assert after[: len(before)] == before  # earlier events (and their hashes) unchanged
    new = after[len(before) :]
    assert new and {e.tx_id for e in new} == {7}
    assert [e.seq for e in new] == list(range(before[-1].seq + 1, before[-1].seq + 1 + len(new)))
    assert state(env) == state(env, target)

    # Files follow: fetch is gone, weather's policy file is the one before the grant.
    names = set(files_of(env))
    assert not any(n.startswith("fetch.") for n in names)
    policy_file = env.component_dir / "weather.policy.yaml"
    assert policy_file.read_text() == POLICY

    # The reason is in the audit log.
    recorded = as_json(env, "state", "history", "--tx", "7")
    assert recorded and {e["reason"] for e in recorded} == {"bad grant, see #12"}
    assert {e["kind"] for e in recorded} == {"rollback"}
    assert all(e["command"].startswith("state rollback --to tx:2") for e in recorded)


@BOTH
def test_dry_run_writes_nothing(env: Env) -> None:
    build(env)
    before = tree_bytes(env.root)
    text = ok(env.run("state", "rollback", "--to", "tx:1", "--dry-run")).out
    assert "dry run, nothing written" in text
    assert "detach fetch" in text and "unset env A" in text
    doc = as_json(env, "state", "rollback", "--to", "tx:1", "--dry-run")
    assert doc["tx"] is None and doc["events"] == [] and doc["dry_run"] is True
    assert "detach fetch" in doc["plan"]
    assert tree_bytes(env.root) == before


def test_detached_component_wasm_comes_back_from_the_blob_store(env: Env) -> None:
    data = build(env)
    before_files = files_of(env)
    (env.root / "inputs" / "weather.wasm").unlink()  # the source is gone too
    with opened(env) as s:
        commands.detach(s, "weather", keep_secret_values=True)
    assert not (env.component_dir / "weather.wasm").exists()
    assert blob(env, data["weather"]).is_file()
    secrets_before = secret_files.snapshot_file(env.secrets_dir, "weather")
    assert secrets_before is not None  # asked to, the detach kept the values on disk

    out = as_json(env, "state", "rollback", "--to", "tx:6", "--yes")
    assert out["tx"] == 8
    assert (env.component_dir / "weather.wasm").read_bytes() == data["weather"]
    assert files_of(env) == before_files  # metadata and policy files byte-identical too
    assert out["secrets_needed"] == []  # the values stayed on disk
    assert secret_files.snapshot_file(env.secrets_dir, "weather") == secrets_before
    assert state(env) == state(env, last_seq_of_tx(env, 6))


def test_secret_keys_without_values_are_reported_with_the_command(env: Env) -> None:
    build(env)
    with opened(env) as s:
        secret_commands.secret_set(s, "weather", {"K2": "v2"})
        secret_commands.secret_delete(s, "weather", ["K", "K2"])  # values deleted from disk
    assert secret_files.read_values(env.secrets_dir, "weather") == {}

    out = as_json(env, "state", "rollback", "--to", "tx:7", "--yes")
    assert state(env).components["weather"].secret_keys == ("K", "K2")
    [needed] = out["secrets_needed"]
    assert needed["component_id"] == "weather" and needed["keys"] == ["K", "K2"]
    command = needed["command"]
    assert command.endswith("secret set weather --stdin")  # values never on a command line
    assert needed["stdin"] == "K=…\nK2=…\n"

    # The printed command, with the values on its stdin, supplies them to this very store.
    argv = shlex.split(command)
    assert argv[0] == "wassette-state"
    ok(env.run(*argv[1:], input=needed["stdin"].replace("K=…", "K=new").replace("K2=…", "K2=new2")))
    assert secret_files.read_values(env.secrets_dir, "weather") == {"K": "new", "K2": "new2"}


def test_text_report_lists_plan_and_secret_commands(env: Env) -> None:
    build(env)
    with opened(env) as s:
        secret_commands.secret_delete(s, "weather", ["K"])
    text = ok(env.run("state", "rollback", "--to", "tx:6", "-y")).out
    lines = text.splitlines()
    assert lines[0] == f"rollback to seq {last_seq_of_tx(env, 6)}:"
    assert "  declare secret keys K for weather" in lines
    assert any(ln.startswith("recorded as tx 8") for ln in lines)
    assert any("secret set weather --stdin" in ln and "K=…" in ln for ln in lines)


@BOTH
def test_rollback_to_the_empty_state_and_back(env: Env) -> None:
    data = build(env)
    before_files = files_of(env)
    assert secret_files.snapshot_file(env.secrets_dir, "weather") is not None
    out = as_json(env, "state", "rollback", "--to", "seq:0", "--yes")
    now = state(env)
    assert now.components == {} and now.environment == {}
    assert now.paths is not None  # paths are local and never rolled back
    assert files_of(env) == {}
    assert all(blob(env, b).is_file() for b in data.values())  # blobs are kept
    # The component left the state, and its values the file Wassette reads.
    assert secret_files.snapshot_file(env.secrets_dir, "weather") is None
    assert out["tx"] == 7

    undone = as_json(env, "state", "undo", "--yes")
    assert undone["tx"] == 8 and undone["target_seq"] == last_seq_of_tx(env, 6)
    assert state(env) == state(env, last_seq_of_tx(env, 6))
    assert files_of(env) == before_files


def test_rollback_to_the_current_state_appends_nothing(env: Env) -> None:
    build(env)
    before = tree_bytes(env.root)
    text = ok(env.run("state", "rollback", "--to", "0s", "--yes")).out
    assert "nothing to do" in text
    assert tree_bytes(env.root) == before


# --------------------------------------------------------------------------- undo


@BOTH
def test_undo_and_rollbacks_of_rollbacks(env: Env) -> None:
    with opened(env) as s:
        commands.env_set(s, {"A": "1"})  # tx1
        commands.env_set(s, {"A": "2"})  # tx2

    # No --yes: stdin is not a terminal here, so there is no prompt.
    text = ok(env.run("state", "undo", "--reason", "typo", "--yes")).out
    assert "recorded as tx 3" in text
    assert state(env).environment == {"A": "1"}

    ok(env.run("state", "undo", "--yes"))  # undoing the undo
    assert state(env).environment == {"A": "2"}

    ok(env.run("state", "rollback", "--to", "tx:1", "--yes"))  # tx5
    assert state(env).environment == {"A": "1"}
    ok(env.run("state", "rollback", "--to", "tx:4", "--yes"))  # rolling back the rollback
    assert state(env).environment == {"A": "2"}

    txs = {e.tx_id: e for e in all_events(env)}
    assert [txs[t].kind for t in sorted(txs)] == [
        "change",
        "change",
        "rollback",
        "rollback",
        "rollback",
        "rollback",
    ]
    # the command as typed, and the transaction it undid
    assert txs[3].reason == "typo" and txs[3].command == "state undo --reason typo --yes (tx 2)"
    assert txs[4].reason is None and txs[4].command == "state undo --yes (tx 3)"


def test_undo_on_an_empty_log_is_refused(env: Env) -> None:
    assert_refused(env, env.run("state", "undo", "--yes"), 2, "nothing to undo")


# --------------------------------------------------------------------------- terminal prompt


def run_on_a_terminal(env: Env, args: list[str], answer: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdin/stdout on a pseudo-terminal (util-linux `script`)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WASSETTE_")}
    child_env.update(
        WASSETTE_STATE_DB=str(env.db),
        WASSETTE_COMPONENT_DIR=str(env.component_dir),
        WASSETTE_SECRETS_DIR=str(env.secrets_dir),
        WASSETTE_ACTOR="tester@test",
        HOME=str(env.root / "home"),
        TERM="dumb",
    )
    cmd = shlex.join([wassette_exe(), *args])
    return subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        input=answer,
        capture_output=True,
        text=True,
        env=child_env,
        cwd=env.root,
        timeout=120,
    )


needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")


@needs_script
def test_terminal_prompt_no_cancels_and_writes_nothing(env: Env) -> None:
    build(env)
    before = tree_bytes(env.root)
    proc = run_on_a_terminal(env, ["state", "rollback", "--to", "tx:1"], "n\n")
    assert proc.returncode == 2, proc.stdout
    assert "apply this rollback?" in proc.stdout
    assert "detach fetch" in proc.stdout  # the plan is shown before the question
    assert "cancelled" in proc.stdout
    assert tree_bytes(env.root) == before


@needs_script
def test_terminal_prompt_yes_applies(env: Env) -> None:
    with opened(env) as s:
        commands.env_set(s, {"A": "1"})
        commands.env_set(s, {"A": "2"})
    proc = run_on_a_terminal(env, ["state", "undo"], "y\n")
    assert proc.returncode == 0, proc.stdout
    assert "apply this rollback?" in proc.stdout
    assert state(env).environment == {"A": "1"}
