"""Where files are written (issue 14): the component dir or the secrets dir swapped for a
symbolic link while a command writes into it.

Each command is held at one of its writes (the fault seam's `sleep`), the dir is moved aside
and a link to another directory put in its place, and the command goes on: no file may land
in the link's target, and the command must say that the files were not written (exit 5,
naming the dir) instead of exit 0. Put back, the next command writes what is missing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, all_events, assert_refused, cli_history, ok, wait_for


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: a file's bytes, a link's target, a dir."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = f"-> {os.readlink(p)}"
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = p.read_bytes()
    return out


def swap_for_link(directory: Path, target: Path) -> Path:
    """Move `directory` aside and put a link to `target` where it was."""
    moved = directory.with_name(directory.name + ".moved")
    directory.rename(moved)
    directory.symlink_to(target, target_is_directory=True)
    return moved


def put_back(directory: Path, moved: Path) -> None:
    directory.unlink()
    moved.rename(directory)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where the planted link points: another user's directory, say."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep.txt").write_text("keep\n")
    return d


def _attach_b(env: Env) -> tuple[str, ...]:
    ok(env.run("component", "attach", str(env.root / "a.wasm")))
    return ("component", "attach", str(env.root / "b.wasm"))


def _import(env: Env) -> tuple[str, ...]:
    ok(env.run("component", "attach", str(env.root / "a.wasm")))
    ok(env.run("component", "attach", str(env.root / "b.wasm")))
    ok(env.run("state", "export", str(env.root / "both.json")))
    ok(env.run("component", "detach", "a"))
    ok(env.run("component", "detach", "b"))
    return ("state", "import", str(env.root / "both.json"))


def _rollback(env: Env) -> tuple[str, ...]:
    ok(env.run("component", "attach", str(env.root / "a.wasm")))
    ok(env.run("component", "attach", str(env.root / "b.wasm")))
    ok(env.run("state", "tag", "both"))
    ok(env.run("component", "detach", "a"))
    ok(env.run("component", "detach", "b"))
    return ("state", "rollback", "--to", "tag:both", "--yes")


WRITERS: dict[str, Callable[[Env], tuple[str, ...]]] = {
    "attach": _attach_b,
    "import": _import,
    "rollback": _rollback,
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_component_dir_swapped_mid_write(env: Env, outside: Path, command: str) -> None:
    fx.write_component(env.root / "a.wasm", "simple")
    fx.write_component(env.root / "b.wasm", "weather")
    args = WRITERS[command](env)
    txs = len(cli_history(env))
    before = tree(outside)

    proc = env.start(*args, fault="component-file:sleep")
    wait_for(env.fault_log, "fire component-file sleep")
    moved = swap_for_link(env.component_dir, outside)
    out, err = proc.communicate(timeout=120)

    assert tree(outside) == before, f"{command} wrote through the swapped component dir"
    assert proc.returncode == 5, (proc.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: recorded as tx "), err
    assert str(env.component_dir) in lines[0] and "replaced" in lines[0], lines[0]
    assert len(cli_history(env)) > txs  # the change is recorded, and the message says so

    put_back(env.component_dir, moved)
    ok(env.run("state", "sync"))  # the next command writes what is missing: no drift found
    assert [r for r in cli_history(env) if r["kind"] == "sync"] == []
    for cid in ("a", "b"):
        assert (env.component_dir / f"{cid}.wasm").is_file()
        assert (env.component_dir / f"{cid}.metadata.json").is_file()


def test_component_dir_swapped_before_the_files_are_opened(env: Env, outside: Path) -> None:
    """The swap lands between the commit and the first file: still exit 5, nothing outside."""
    fx.write_component(env.root / "a.wasm", "simple")
    proc = env.start("component", "attach", str(env.root / "a.wasm"), fault="committed:sleep")
    wait_for(env.fault_log, "fire committed sleep")
    env.component_dir.mkdir(exist_ok=True)
    moved = swap_for_link(env.component_dir, outside)
    out, err = proc.communicate(timeout=120)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert proc.returncode == 5, (proc.returncode, out, err)
    assert str(env.component_dir) in err and "replaced" in err, err
    put_back(env.component_dir, moved)
    ok(env.run("state", "sync"))
    assert (env.component_dir / "a.wasm").is_file()


def test_secrets_dir_swapped_after_the_commit(env: Env, outside: Path) -> None:
    """Held after `secret set` committed, before its staged file is put in place."""
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    ok(env.run("secret", "set", "c", "--stdin", input="OLD=old-value-1\n"))
    before = tree(outside)

    proc = env.start("secret", "set", "c", "NEW=new-value-2", fault="commit.after:sleep")
    wait_for(env.fault_log, "fire commit.after sleep")
    moved = swap_for_link(env.secrets_dir, outside)
    out, err = proc.communicate(timeout=120)

    assert tree(outside) == before, "secret set wrote through the swapped secrets dir"
    assert proc.returncode == 5, (proc.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: recorded as tx "), err
    assert str(env.secrets_dir) in lines[0] and "replaced" in lines[0], lines[0]
    assert "new-value-2" not in err + out
    assert (moved / "c.yaml").read_text() == "OLD: old-value-1\n"  # not put in place either

    put_back(env.secrets_dir, moved)
    ok(env.run("env", "set", "X=1"))  # the next command puts the recorded change in place
    assert (env.secrets_dir / "c.yaml").read_text() == "NEW: new-value-2\nOLD: old-value-1\n"
    assert not (env.secrets_dir / ".staged").exists()


def test_secrets_dir_swapped_before_the_commit(env: Env, outside: Path) -> None:
    """Held after staging, before the commit: refused, nothing recorded, nothing left."""
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    ok(env.run("secret", "set", "c", "--stdin", input="OLD=old-value-1\n"))
    events = len(all_events(env))

    proc = env.start("secret", "set", "c", "NEW=new-value-2", fault="commit.before:sleep")
    wait_for(env.fault_log, "fire commit.before sleep")
    moved = swap_for_link(env.secrets_dir, outside)
    out, err = proc.communicate(timeout=120)

    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert proc.returncode == 2, (proc.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert str(env.secrets_dir) in lines[0] and "nothing was changed" in lines[0], lines[0]
    put_back(env.secrets_dir, moved)
    assert len(all_events(env)) == events
    assert tree(env.secrets_dir) == {"c.yaml": b"OLD: old-value-1\n"}  # nothing staged left


def test_secrets_file_linked_between_staging_and_rename(env: Env, tmp_path: Path) -> None:
    """The secrets file becomes a link (a mounted Secret) after `secret set` checked it: the
    link is never replaced, at rename time too, and the change waits staged."""
    fx.write_component(env.root / "c.wasm", "simple")
    ok(env.run("component", "attach", str(env.root / "c.wasm")))
    ok(env.run("secret", "set", "c", "--stdin", input="OLD=old-value-1\n"))
    mounted = tmp_path / "mounted.yaml"
    mounted.write_text("OLD: mounted-value\n")
    os.chmod(mounted, 0o400)
    path = env.secrets_dir / "c.yaml"

    proc = env.start("secret", "set", "c", "NEW=new-value-2", fault="commit.after:sleep")
    wait_for(env.fault_log, "fire commit.after sleep")
    path.unlink()
    path.symlink_to(mounted)
    out, err = proc.communicate(timeout=120)

    assert path.is_symlink() and os.readlink(path) == str(mounted), "the link was replaced"
    assert mounted.read_text() == "OLD: mounted-value\n"
    assert proc.returncode == 5, (proc.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: recorded as tx "), err
    assert str(path) in lines[0] and "symbolic link" in lines[0], lines[0]
    assert "new-value-2" not in err + out

    # While the link is there every writer is refused in one line, the link kept.
    r = env.run("env", "set", "X=1")
    assert_refused(env, r, 1, "symbolic link")
    assert path.is_symlink()
    # Gone (the user takes the file back): the next command finishes the recorded change.
    path.unlink()
    ok(env.run("env", "set", "X=1"))
    assert path.read_text() == "NEW: new-value-2\nOLD: old-value-1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
