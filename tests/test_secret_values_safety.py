"""Secret values and the secrets file under failures, lifecycles, links and mistakes (issue 14,
"Secret values and files"): the log and the file Wassette reads agree, values of keys that
leave the state leave the file, a linked file is read through and never replaced, and no
message or hint ever carries a value."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, Result, all_events, assert_refused, ok, opened, tree_bytes
from wassette_state.store.files import secrets as secret_files

OLD = "old-value-5e1f0a77"
NEW = "new-value-c0ffee42"
ADDED = "added-value-9a8b7c6d"
LINKED = "linked-value-17e2d3c4"
ALL_VALUES = (OLD, NEW, ADDED, LINKED)


# ----------------------------------------------------------------------------- helpers


def values(env: Env, cid: str = "c") -> dict[str, str]:
    return secret_files.read_values(env.secrets_dir, cid)


def declared(env: Env, cid: str = "c") -> tuple[str, ...] | None:
    with opened(env) as s:
        comp = s.state().components.get(cid)
    return None if comp is None else comp.secret_keys


def attach(env: Env, cid: str = "c", kind: str = "simple") -> None:
    src = env.root / "inputs" / f"{cid}-{kind}.wasm"
    src.parent.mkdir(exist_ok=True)
    fx.write_component(src, kind=kind)
    ok(env.run("component", "attach", str(src), "--id", cid))


def store_bytes(env: Env) -> bytes:
    """The database with its WAL and shared memory: where a leaked value would be."""
    out = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(env.db) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def assert_no_value_in_store(env: Env, *outputs: Result) -> None:
    raw = store_bytes(env)
    for value in ALL_VALUES:
        assert value.encode() not in raw, f"{value} is in the database"
        for r in outputs:
            assert value not in r.text, f"{value} was printed"
    for p in env.root.rglob("*"):  # nowhere but the secrets dir (and the test's inputs)
        if p.is_file() and env.secrets_dir not in p.parents and "inputs" not in p.parts:
            data = p.read_bytes()
            for value in ALL_VALUES:
                assert value.encode() not in data, f"{value} is in {p}"


# The CLI in a child whose first database commit is followed at once by SIGKILL: a kill in
# the window between a command's commit and its file writes.
KILL_AFTER_COMMIT = """
import contextlib, os, signal, sys
from wassette_state.store.persistence import db
real = db.write_tx
@contextlib.contextmanager
def write_tx(*a, **k):
    with real(*a, **k) as conn:
        yield conn
    os.kill(os.getpid(), signal.SIGKILL)
db.write_tx = write_tx
from wassette_state.cli.main import main
sys.argv = ["wassette-state", *sys.argv[1:]]
main()
"""


def run_killed_after_commit(env: Env, *args: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, *args],
        env=env.environ(),
        cwd=env.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode


@contextlib.contextmanager
def interrupted_after_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Ctrl-C arriving just after the next commit returned."""
    from wassette_state.store.persistence import db

    real = db.write_tx

    @contextlib.contextmanager
    def write_tx(*a: Any, **k: Any) -> Iterator[Any]:
        with real(*a, **k) as conn:
            yield conn
        raise KeyboardInterrupt

    monkeypatch.setattr(db, "write_tx", write_tx)
    try:
        yield
    finally:
        monkeypatch.setattr(db, "write_tx", real)


# ----------------------------------------------------------------------------- failures


def test_disk_full_during_secret_set_keeps_the_old_file(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up once the command has written its first file: the commit fails, and so
    does every later write. The log did not change, so neither may the file."""
    import importlib

    import sqlalchemy.exc

    from wassette_state.store.files import fsutil
    from wassette_state.store.persistence import log
    from wassette_state.store.usecases import secret_commands

    try:
        staging: Any = importlib.import_module("wassette_state.store.usecases.staging")
    except ImportError:  # the code before the two-phase change
        staging = None
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    before_file = tree_bytes(env.secrets_dir)
    before_log = len(all_events(env))
    full = {"now": False}

    def no_space(*a: Any, **k: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_atomic = fsutil.atomic_write
    real_write_all = getattr(staging, "_write_all", None)

    def atomic_write(*a: Any, **k: Any) -> None:
        if full["now"]:
            no_space()
        real_atomic(*a, **k)
        full["now"] = True  # that write took the last free block

    def write_all(*a: Any, **k: Any) -> None:
        if full["now"]:
            no_space()
        assert real_write_all is not None
        real_write_all(*a, **k)

    def append(*a: Any, **k: Any) -> Any:
        full["now"] = True
        raise sqlalchemy.exc.OperationalError(
            "INSERT", {}, sqlite3.OperationalError("database or disk is full")
        )

    with opened(env) as s:
        monkeypatch.setattr(fsutil, "atomic_write", atomic_write)
        if staging is not None:
            monkeypatch.setattr(staging, "_write_all", write_all)
        monkeypatch.setattr(log, "append", append)
        with pytest.raises(Exception):  # noqa: B017 - whatever the failure, nothing changed
            secret_commands.secret_set(s, "c", {"API_KEY": NEW, "OTHER": ADDED})
        monkeypatch.undo()
    assert len(all_events(env)) == before_log
    ok(env.run("secret", "list", "c"))  # the next command
    assert tree_bytes(env.secrets_dir) == before_file, "the failed command changed the file"
    assert values(env) == {"API_KEY": OLD}
    assert_no_value_in_store(env)


def test_ctrl_c_after_secret_set_committed_keeps_the_new_values(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wassette_state.store.usecases import secret_commands

    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    with (
        opened(env) as s,
        interrupted_after_commit(monkeypatch),
        pytest.raises(KeyboardInterrupt),
    ):
        secret_commands.secret_set(s, "c", {"API_KEY": NEW, "OTHER": ADDED})
    assert declared(env) == ("API_KEY", "OTHER")  # committed
    ok(env.run("secret", "list", "c"))  # the next command
    assert values(env) == {"API_KEY": NEW, "OTHER": ADDED}, "the old file was put back"
    drift = json.loads(ok(env.run("state", "sync", "-o", "json")).out)["drift"]
    assert drift == []
    assert_no_value_in_store(env)


def test_kill_after_secret_delete_committed_never_leaves_the_value(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}", f"OTHER={ADDED}"))
    code = run_killed_after_commit(env, "secret", "delete", "c", "API_KEY")
    assert code == -9
    assert declared(env) == ("OTHER",)  # the delete is recorded
    sync = ok(env.run("state", "sync", "-o", "json"))  # the next command
    assert json.loads(sync.out)["drift"] == [], "sync re-declared the deleted key"
    assert values(env) == {"OTHER": ADDED}
    assert OLD.encode() not in tree_bytes(env.secrets_dir).get("c.yaml", b"")
    assert declared(env) == ("OTHER",)
    assert_no_value_in_store(env, sync)


# ----------------------------------------------------------------------------- leaving the state


def test_rollback_that_deletes_keys_removes_their_values(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    ok(env.run("state", "tag", "one-key"))
    ok(env.run("secret", "set", "c", f"OTHER={ADDED}"))
    r = ok(env.run("state", "rollback", "--to", "tag:one-key", "--yes"))
    assert declared(env) == ("API_KEY",)
    assert values(env) == {"API_KEY": OLD}, "the value of a key the rollback deleted stayed"
    assert json.loads(ok(env.run("state", "sync", "-o", "json")).out)["drift"] == []
    # Asked to, it keeps them.
    ok(env.run("secret", "set", "c", f"OTHER={ADDED}"))
    ok(env.run("state", "rollback", "--to", "tag:one-key", "--yes", "--keep-secret-values"))
    assert declared(env) == ("API_KEY",)
    assert values(env) == {"API_KEY": OLD, "OTHER": ADDED}
    assert_no_value_in_store(env, r)


def test_undo_of_an_attach_removes_the_secrets_file(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    ok(env.run("state", "rollback", "--to", "seq:0", "--yes"))
    assert not secret_files.secrets_file(env.secrets_dir, "c").exists()


def test_detach_removes_values_and_a_new_component_inherits_none(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    r = ok(env.run("component", "detach", "c"))
    assert not secret_files.secrets_file(env.secrets_dir, "c").exists(), "detach left values"
    attach(env, kind="mixed")  # a different component under the same id
    listed = json.loads(ok(env.run("secret", "list", "c", "-o", "json")).out)
    assert listed["secrets"] == []
    sync = json.loads(ok(env.run("state", "sync", "-o", "json")).out)
    assert sync["drift"] == [] and declared(env) == ()
    assert_no_value_in_store(env, r)


def test_detach_keeps_values_when_asked(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}"))
    ok(env.run("component", "detach", "c", "--keep-secret-values"))
    assert values(env) == {"API_KEY": OLD}
    ok(env.run("state", "undo", "--yes"))  # the values are there for the component again
    assert declared(env) == ("API_KEY",) and values(env) == {"API_KEY": OLD}


def test_an_unload_by_wassette_that_sync_records_removes_values(env: Env, wassette: Any) -> None:
    """The real Wassette 0.8.0's `component unload` keeps `<secrets dir>/<id>.yaml` (measured:
    its `secret list` still shows the values, and a component loaded later under that id gets
    them). The detach `state sync` records for it is a detach like ours: the values leave the
    file Wassette reads, so a different component Wassette loads later under that id inherits
    none and sync declares none; `sync --keep-secret-values` leaves them."""
    attach(env)
    ok(env.run("secret", "set", "c", "--stdin", input=f"API_KEY={OLD}\n"))
    wassette.ok("component", "unload", "c")
    assert values(env) == {"API_KEY": OLD}  # Wassette kept them
    r = ok(env.run("state", "sync"))
    assert "c: wasm file deleted" in r.text
    assert "c: its secrets file goes with it (--keep-secret-values keeps it)" in r.out
    assert declared(env) is None
    assert not secret_files.secrets_file(env.secrets_dir, "c").exists(), "sync left values"
    other = env.root / "inputs" / "c.wasm"  # a different component, loaded by Wassette
    fx.write_component(other, kind="mixed")
    wassette.ok("component", "load", other.as_uri())
    listed = wassette.json("secret", "list", "c", "--output-format", "json")
    assert listed["secrets"] == [], "Wassette's new component inherited the old values"
    drift = json.loads(ok(env.run("state", "sync", "-o", "json")).out)["drift"]
    assert [d["what"] for d in drift] == ["component added by hand"], drift
    assert declared(env) == ()
    assert_no_value_in_store(env, r)

    # Asked to, sync keeps them (as Wassette's unload does).
    ok(env.run("secret", "set", "c", "--stdin", input=f"API_KEY={NEW}\n"))
    wassette.ok("component", "unload", "c")
    ok(env.run("state", "sync", "--keep-secret-values"))
    assert declared(env) is None
    assert values(env) == {"API_KEY": NEW}


def test_import_prune_removes_values_of_components_that_leave(env: Env) -> None:
    attach(env, "a")
    attach(env, "c", kind="mixed")
    ok(env.run("secret", "set", "a", f"API_KEY={OLD}"))
    ok(env.run("secret", "set", "c", f"API_KEY={NEW}"))
    ok(env.run("component", "detach", "c", "--keep-secret-values"))
    ok(env.run("state", "export", str(env.root / "only-a.json")))
    ok(env.run("state", "undo", "--yes"))
    kept = ok(env.run("state", "import", str(env.root / "only-a.json"), "--prune", "--yes"))
    assert declared(env, "c") is None
    assert not secret_files.secrets_file(env.secrets_dir, "c").exists()
    assert values(env, "a") == {"API_KEY": OLD}
    ok(env.run("state", "undo", "--yes"))
    ok(env.run("secret", "set", "c", f"API_KEY={NEW}"))
    ok(
        env.run(
            "state",
            "import",
            str(env.root / "only-a.json"),
            "--prune",
            "--yes",
            "--keep-secret-values",
        )
    )
    assert values(env, "c") == {"API_KEY": NEW}
    assert_no_value_in_store(env, kept)


# ----------------------------------------------------------------------------- links


@pytest.fixture
def linked(env: Env, tmp_path: Path) -> tuple[Env, Path]:
    """Component `c` whose secrets file is a symbolic link, as a Kubernetes Secret volume
    mounts it (`c.yaml -> ..data/c.yaml`)."""
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={LINKED}"))
    volume = env.secrets_dir / "..data"
    volume.mkdir()
    target = volume / "c.yaml"
    path = secret_files.secrets_file(env.secrets_dir, "c")
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(Path("..data") / "c.yaml")
    return env, target


def test_a_linked_secrets_file_is_read_through(linked: tuple[Env, Path], wassette: Any) -> None:
    env, _ = linked
    listed = json.loads(
        ok(env.run("secret", "list", "c", "--show-values", "--yes", "-o", "json")).out
    )
    assert listed["secrets"] == [
        {"key": "API_KEY", "declared": True, "has_value": True, "value": LINKED}
    ]
    assert json.loads(ok(env.run("state", "sync", "-o", "json")).out)["drift"] == []
    # Wassette reads through the link too: that is why it must never be replaced.
    shown = wassette.json("secret", "list", "c", "--show-values", "--yes")
    assert LINKED in json.dumps(shown)


@pytest.mark.parametrize(
    "args",
    [
        ("secret", "set", "c", f"NEW={NEW}"),
        ("secret", "delete", "c", "API_KEY"),
        ("component", "detach", "c"),
    ],
    ids=["set", "delete", "detach"],
)
def test_a_linked_secrets_file_is_never_replaced(linked: tuple[Env, Path], args: Any) -> None:
    env, target = linked
    path = secret_files.secrets_file(env.secrets_dir, "c")
    before = tree_bytes(env.root)
    r = env.run(*args, input=None)
    assert_refused(env, r, 2, "symbolic link")
    assert path.is_symlink() and os.readlink(path) == str(Path("..data") / "c.yaml")
    assert tree_bytes(env.root) == before
    assert LINKED in target.read_text()
    assert_no_value_in_store(env, r)


def test_detach_of_a_linked_secrets_file_with_keep(linked: tuple[Env, Path]) -> None:
    env, target = linked
    ok(env.run("component", "detach", "c", "--keep-secret-values"))
    assert secret_files.secrets_file(env.secrets_dir, "c").is_symlink()
    assert LINKED in target.read_text()


# ----------------------------------------------------------------------------- messages


SHOWN = "sk-never-shown-3c1d"


@pytest.mark.parametrize(
    "args",
    [
        ("secret", "set", f"API_KEY={SHOWN}"),
        ("secret", "set", f"API_KEY={SHOWN}", f"B={SHOWN}"),
        ("secret", "set", f"API_KEY={SHOWN}", "--stdin"),
        ("secret", "set", f"weird id={SHOWN}", "A=1"),
        ("secret", "list", f"API_KEY={SHOWN}"),
        ("secret", "list", "c", f"API_KEY={SHOWN}"),
        ("secret", "delete", f"API_KEY={SHOWN}", "API_KEY"),
        ("secret", "delete", "c", f"API_KEY={SHOWN}"),
        ("secret", "set", "c", "-o", f"json={SHOWN}", "A=1"),
        ("secret", "set", "c", "-o", SHOWN, "A=1"),
        ("secret", "set", "c", f"--token={SHOWN}"),
        ("env", "set", f"1A={SHOWN}"),
        ("env", "set", "A", SHOWN),
        ("env", "unset", f"A={SHOWN}"),
        ("env", "list", f"A={SHOWN}"),
    ],
)
def test_no_refusal_repeats_a_value(env: Env, args: tuple[str, ...]) -> None:
    attach(env)
    before = tree_bytes(env.root)
    r = env.run(*args, input="")
    assert_refused(env, r, 2)
    assert SHOWN not in r.text, r.err
    assert tree_bytes(env.root) == before


def test_forgotten_id_is_named_without_the_value(env: Env) -> None:
    r = env.run("secret", "set", f"API_KEY={SHOWN}", f"B={SHOWN}")
    assert_refused(env, r, 2, "KEY=VALUE")


# ----------------------------------------------------------------------------- hints


def test_hints_give_values_on_stdin_never_as_arguments(env: Env) -> None:
    attach(env)
    ok(env.run("secret", "set", "c", f"API_KEY={OLD}", f"OTHER={ADDED}"))
    ok(env.run("state", "export", str(env.root / "state.json")))
    ok(env.run("state", "tag", "with-keys"))
    ok(env.run("secret", "delete", "c", "API_KEY", "OTHER"))

    text = ok(env.run("state", "rollback", "--to", "tag:with-keys", "--yes")).out
    hint = [ln.strip() for ln in text.splitlines() if " secret set " in ln]
    assert hint and all("--stdin" in ln and "=…" not in ln.split("#")[0] for ln in hint), text
    doc = json.loads(ok(env.run("state", "undo", "--yes", "-o", "json")).out)
    assert doc["secrets_needed"] == []
    doc = json.loads(ok(env.run("state", "import", str(env.root / "state.json"), "-o", "json")).out)
    [needed] = doc["secrets_needed"]
    assert needed["keys"] == ["API_KEY", "OTHER"]
    argv = shlex.split(needed["command"])
    assert argv[0] == "wassette-state" and argv[-1] == "--stdin"
    assert not any("=" in a for a in argv), argv
    assert needed["stdin"] == "API_KEY=…\nOTHER=…\n"
    lines = needed["stdin"].replace("…", NEW)
    ok(env.run(*argv[1:], input=lines))  # the printed command, as printed, supplies them
    assert values(env) == {"API_KEY": NEW, "OTHER": NEW}

    # The manifest export's note on the secrets a manifest cannot carry, too.
    res = ok(env.run("state", "export", str(env.root / "m.yaml"), "--format", "manifest"))
    [note] = [ln for ln in res.err.splitlines() if "secret_keys" in ln]
    command = note.split("stdin of ", 1)[1].strip("'")
    assert shlex.split(command) == ["wassette-state", "secret", "set", "c", "--stdin"], note
    assert "KEY=VALUE'" not in note and "secret set c KEY" not in note, note
