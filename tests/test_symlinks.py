"""Symlinks planted in the component dir or the secrets dir never make the tool write outside
them: after attach / grant / secret set / detach the link targets are unchanged and the links
are replaced by regular files (or removed)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, ok, tree_bytes
from wassette_state.store.files import secrets as secret_files

POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n    - host: api.example.com\n'
SUFFIXES = (".wasm", ".metadata.json", ".policy.yaml", ".policy.meta.json")


def outside_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the attacker's directory with its bytes and mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


@pytest.fixture
def site(env: Env, tmp_path: Path) -> tuple[Env, Path, Path]:
    """A store, its inputs, and an "outside" directory the links point into."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "c.wasm", kind="simple")
    fx.write_component(inputs / "other.wasm", kind="mixed")
    (inputs / "p.yaml").write_text(POLICY)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("wasm", "metadata", "policy", "policy-meta", "secrets.yaml", "other"):
        (outside / name).write_text(f"OUTSIDE {name}: must never change\n")
        os.chmod(outside / name, 0o640)
    ok(env.run("env", "set", "INIT=1"))  # creates the store (and the component dir)
    env.component_dir.mkdir(exist_ok=True)
    return env, inputs, outside


def plant(directory: Path, cid: str, outside: Path, dangling: bool = False) -> dict[str, Path]:
    """`<id>.<suffix>` → a file outside (or a target that does not exist yet)."""
    targets = {
        ".wasm": outside / "wasm",
        ".metadata.json": outside / "metadata",
        ".policy.yaml": outside / "policy",
        ".policy.meta.json": outside / ("not-there-yet" if dangling else "policy-meta"),
    }
    links = {}
    for suffix, target in targets.items():
        link = directory / f"{cid}{suffix}"
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        links[suffix] = link
    return links


def assert_regular(path: Path) -> None:
    assert not path.is_symlink(), f"{path.name} is still a symlink"
    assert path.is_file(), f"{path.name} is missing"


def test_attach_replaces_links_in_the_component_dir(site: tuple[Env, Path, Path]) -> None:
    env, inputs, outside = site
    before = outside_tree(outside)
    links = plant(env.component_dir, "c", outside, dangling=True)
    ok(env.run("component", "attach", str(inputs / "c.wasm"), "--policy", str(inputs / "p.yaml")))
    assert outside_tree(outside) == before
    assert not (outside / "not-there-yet").exists(), "a dangling link's target was created"
    for link in links.values():
        assert_regular(link)
    wasm = (inputs / "c.wasm").read_bytes()
    assert links[".wasm"].read_bytes() == wasm
    assert links[".policy.yaml"].read_text() == POLICY


def test_reattach_with_identical_bytes_behind_a_link(site: tuple[Env, Path, Path]) -> None:
    """A link to a file with the component's very bytes still gets replaced (no reading
    through links to decide that nothing needs writing)."""
    env, inputs, outside = site
    ok(env.run("component", "attach", str(inputs / "c.wasm")))
    twin = outside / "twin.wasm"
    twin.write_bytes((inputs / "c.wasm").read_bytes())
    before = outside_tree(outside)
    (env.component_dir / "c.wasm").unlink()
    (env.component_dir / "c.wasm").symlink_to(twin)
    # Any mutating command repairs what it materializes; a grant on c materializes c.
    ok(env.run("permission", "grant", "network", "c", "api.example.com"))
    assert outside_tree(outside) == before
    assert_regular(env.component_dir / "c.wasm")


def test_grant_replaces_policy_links(site: tuple[Env, Path, Path]) -> None:
    env, inputs, outside = site
    ok(env.run("component", "attach", str(inputs / "c.wasm")))
    ok(
        env.run(
            "component", "attach", str(inputs / "other.wasm"), "--policy", str(inputs / "p.yaml")
        )
    )
    before = outside_tree(outside)
    # c has no policy yet: the grant creates one where the links are.
    plant(env.component_dir, "c", outside)
    # other has one: its files are swapped for links to files with the very same content.
    for suffix, name in ((".policy.yaml", "same-policy"), (".policy.meta.json", "same-meta")):
        path = env.component_dir / f"other{suffix}"
        (outside / name).write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(outside / name)
    before = outside_tree(outside)
    ok(env.run("permission", "grant", "network", "c", "api.c.example.com"))
    ok(env.run("permission", "grant", "storage", "other", "fs:///data/**", "--access", "read"))
    assert outside_tree(outside) == before
    for cid in ("c", "other"):
        for suffix in SUFFIXES:
            if (cid, suffix) == ("c", ".policy.meta.json"):
                # a grant-made policy has no meta file (as with Wassette): the link is gone
                assert not os.path.lexists(env.component_dir / f"{cid}{suffix}")
                continue
            assert_regular(env.component_dir / f"{cid}{suffix}")
    assert "api.c.example.com" in (env.component_dir / "c.policy.yaml").read_text()
    assert "fs:///data/**" in (env.component_dir / "other.policy.yaml").read_text()


def test_secret_set_never_replaces_a_linked_secrets_file(site: tuple[Env, Path, Path]) -> None:
    """A linked secrets file is how Kubernetes mounts a Secret: Wassette reads through it, so
    replacing it would make the linked values vanish. Refused, nothing written anywhere."""
    env, inputs, outside = site
    ok(env.run("component", "attach", str(inputs / "c.wasm")))
    ok(env.run("secret", "set", "c", "FIRST=1"))
    before = outside_tree(outside)
    path = secret_files.secrets_file(env.secrets_dir, "c")
    path.unlink()
    path.symlink_to(outside / "secrets.yaml")
    tree = tree_bytes(env.root)
    r = env.run("secret", "set", "c", "API_KEY=value-1")
    assert r.code == 2 and "symbolic link" in r.err, r.err
    assert "Traceback" not in r.text
    assert outside_tree(outside) == before
    assert os.readlink(path) == str(outside / "secrets.yaml")
    assert tree_bytes(env.root) == tree
    # The linked file does not hold FIRST: deleting it changes the log, never the link.
    ok(env.run("secret", "delete", "c", "FIRST"))
    assert outside_tree(outside) == before
    assert os.readlink(path) == str(outside / "secrets.yaml")


def test_detach_removes_links_not_their_targets(site: tuple[Env, Path, Path]) -> None:
    env, inputs, outside = site
    ok(env.run("component", "attach", str(inputs / "c.wasm"), "--policy", str(inputs / "p.yaml")))
    before = outside_tree(outside)
    links = plant(env.component_dir, "c", outside)
    ok(env.run("component", "detach", "c"))
    assert outside_tree(outside) == before
    for link in links.values():
        assert not link.exists() and not link.is_symlink(), f"{link.name} left behind"


def test_rollback_materializes_through_no_link(site: tuple[Env, Path, Path]) -> None:
    """A rollback that brings a component back writes its files from the blob store."""
    env, inputs, outside = site
    ok(env.run("component", "attach", str(inputs / "c.wasm"), "--policy", str(inputs / "p.yaml")))
    ok(env.run("component", "detach", "c"))
    before = outside_tree(outside)
    links = plant(env.component_dir, "c", outside)
    ok(env.run("state", "undo", "--yes"))
    assert outside_tree(outside) == before
    for link in links.values():
        assert_regular(link)
    digest = hashlib.sha256(links[".wasm"].read_bytes()).hexdigest()
    assert digest == hashlib.sha256((inputs / "c.wasm").read_bytes()).hexdigest()


def test_symlinked_secrets_dir_is_refused_cleanly(env: Env, tmp_path: Path) -> None:
    """The secrets dir itself is a link to somewhere else: nothing may be written there, and
    the refusal is one line naming the link (exit 2), with nothing recorded.

    fsutil.ensure_dir refuses a symlinked dir, but config.resolve() has already resolved the
    link (Path.resolve), so the guard never sees it.
    """
    fx.write_component(tmp_path / "c.wasm", kind="simple")
    ok(env.run("component", "attach", str(tmp_path / "c.wasm")))
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o755)
    (real / "unrelated.yaml").write_text("KEEP: me\n")
    os.chmod(real / "unrelated.yaml", 0o644)
    if env.secrets_dir.exists():
        env.secrets_dir.rmdir()
    env.secrets_dir.symlink_to(real, target_is_directory=True)
    before_outside = outside_tree(real)
    before_store = tree_bytes(env.root)

    r = env.run("secret", "set", "c", "API_KEY=sekrit-value")
    assert "Traceback" not in r.text
    assert "sekrit-value" not in r.text
    assert outside_tree(real) == before_outside, "a secret was written through the linked dir"
    assert stat.S_IMODE(real.stat().st_mode) == 0o755
    if r.code == 0:
        pytest.fail("a symlinked secrets dir was written through (exit 0)")
    after_store = tree_bytes(env.root)
    changed = sorted(
        k
        for k in before_store.keys() | after_store.keys()
        if before_store.get(k) != after_store.get(k)
    )
    assert not changed, f"a refused 'secret set' changed {changed}"
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.err
    assert r.code == 2 and "symbolic link" in lines[0], (
        f"exit {r.code}: {lines[0]!r}: expected a refusal (exit 2) naming the symlinked dir"
    )


def test_symlinked_component_dir_changes_nothing(env: Env, tmp_path: Path) -> None:
    """The component dir is a link: nothing is written through it, and the refusal comes
    before anything is recorded (a refused command changes nothing)."""
    fx.write_component(tmp_path / "c.wasm", kind="simple")
    ok(env.run("env", "set", "INIT=1"))
    real = tmp_path / "real-components"
    real.mkdir()
    (real / "keep.txt").write_text("keep\n")
    if env.component_dir.exists():
        env.component_dir.rmdir()
    env.component_dir.symlink_to(real, target_is_directory=True)
    history_before = env.run("state", "history", "-o", "json").out

    r = env.run("component", "attach", str(tmp_path / "c.wasm"))
    assert "Traceback" not in r.text
    assert sorted(p.name for p in real.iterdir()) == ["keep.txt"], "written through the link"
    if r.code == 0:
        pytest.fail("a symlinked component dir was accepted")
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.err
    history_after = env.run("state", "history", "-o", "json").out
    assert history_after == history_before, (
        f"exit {r.code} ({lines[0]}) but the attach was recorded: the component dir is checked "
        "only after the commit"
    )
    assert r.code == 2 and "symbolic link" in lines[0], lines[0]
