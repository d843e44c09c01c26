"""Materialization: files follow the state after a crash between commit and file writes, and are
written without ever following a planted symbolic link or loosening a directory's mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, ok

STAMP_MTIME = 1_700_000_000
POLICY = 'version: "1.0"\npermissions:\n  network:\n    allow:\n    - host: a.example.com\n'


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def setup_site(env: Env) -> Path:
    inputs = env.root / "inputs"
    inputs.mkdir()
    src = inputs / "weather.wasm"
    fx.write_component(src, kind="weather")
    os.utime(src, (STAMP_MTIME, STAMP_MTIME))
    fx.write_component(inputs / "bare.wasm", kind="simple")
    (inputs / "weather.policy.yaml").write_text(POLICY)
    return inputs


def marker(env: Env) -> dict[str, object]:
    doc: dict[str, object] = json.loads((env.db.parent / "materialized.json").read_text())
    return doc


# --------------------------------------------------------------------------- crash repair


def test_lagging_marker_repairs_files_on_next_command(env: Env) -> None:
    inputs = setup_site(env)
    ok(
        env.run(
            "component",
            "attach",
            str(inputs / "weather.wasm"),
            "--policy",
            str(inputs / "weather.policy.yaml"),
        )
    )
    res = ok(env.run("component", "attach", str(inputs / "bare.wasm"), "-o", "json"))
    seq = json.loads(res.out)["events"][-1]["seq"]
    good = dir_bytes(env.component_dir)
    assert sorted(good) == [
        "bare.metadata.json",
        "bare.wasm",
        "weather.metadata.json",
        "weather.policy.meta.json",
        "weather.policy.yaml",
        "weather.wasm",
    ]
    assert marker(env)["seq"] == seq

    # The files as a crash between commit and file writes would leave them.
    d = env.component_dir
    (d / "weather.wasm").unlink()
    (d / "weather.metadata.json").write_text("{}")
    (d / "weather.policy.yaml").unlink()
    (d / "bare.wasm").write_bytes(fx.core_module_bytes())
    (d / "stale.wasm").write_bytes(b"not ours")  # not a component the store knows: left alone
    m = marker(env)
    m["seq"] = 0  # (both attaches committed, none of their files written)
    (env.db.parent / "materialized.json").write_text(json.dumps(m))

    ok(env.run("env", "set", "X=1"))
    after = dir_bytes(env.component_dir)
    assert after.pop("stale.wasm") == b"not ours"
    assert after == good
    assert int((d / "weather.wasm").stat().st_mtime) == STAMP_MTIME
    assert marker(env)["seq"] == seq + 1


def test_crash_after_commit_is_repaired(env: Env) -> None:
    """A real commit without materialization, through the library, then the CLI's next command."""
    from wassette_state.store.domain import events as ev
    from wassette_state.store.usecases import inputs as cmd_inputs
    from wassette_state.store.usecases.service import Decision, Store

    inputs = setup_site(env)
    ok(env.run("component", "attach", str(inputs / "weather.wasm")))
    ok(env.run("component", "attach", str(inputs / "bare.wasm")))
    old_wasm = (env.component_dir / "weather.wasm").read_bytes()

    newer = inputs / "v2" / "weather.wasm"
    newer.parent.mkdir()
    new_bytes = fx.write_component(newer, kind="mixed")
    os.utime(newer, (STAMP_MTIME + 5, STAMP_MTIME + 5))

    store = env.store()
    assert isinstance(store, Store)
    try:
        loaded = cmd_inputs.load_component(store, str(newer), "weather")
        store.blobs.put(loaded.data, loaded.sha256)
        metadata = cmd_inputs.build_metadata(loaded, 1_700_000_100)

        def decide(_state: object) -> Decision:
            return Decision(
                [
                    ev.ComponentAttached(
                        component_id="weather",
                        source_uri=loaded.source_uri,
                        wasm_sha256=loaded.sha256,
                        metadata=metadata,
                    ),
                    ev.PolicyAttached(
                        component_id="weather",
                        source_uri=(inputs / "weather.policy.yaml").as_uri(),
                        policy_content=POLICY,
                        attached_at=1_700_000_200,
                    ),
                    ev.ComponentDetached(component_id="bare"),
                ]
            )

        def crash(*_args: object) -> None:
            raise RuntimeError("killed between commit and file writes")

        with pytest.raises(RuntimeError, match="killed"):
            store.execute("crash test", decide, after=crash)
    finally:
        store.close()

    # Committed, but the files still show the old state.
    d = env.component_dir
    assert (d / "weather.wasm").read_bytes() == old_wasm
    assert (d / "bare.wasm").exists()
    assert not (d / "weather.policy.yaml").exists()

    ok(env.run("env", "set", "X=1"))
    assert (d / "weather.wasm").read_bytes() == new_bytes
    assert int((d / "weather.wasm").stat().st_mtime) == STAMP_MTIME + 5
    assert json.loads((d / "weather.metadata.json").read_text()) == metadata
    assert (d / "weather.policy.yaml").read_text() == POLICY
    assert json.loads((d / "weather.policy.meta.json").read_text()) == {
        "attached_at": 1_700_000_200,
        "source_uri": (inputs / "weather.policy.yaml").as_uri(),
    }
    assert not (d / "bare.wasm").exists() and not (d / "bare.metadata.json").exists()
    inspected = json.loads(ok(env.run("component", "inspect", "weather", "-o", "json")).out)
    assert inspected["wasm_sha256"] == loaded.sha256
    ok(env.run("state", "verify"))


def test_repair_restores_wasm_from_blob_store(env: Env) -> None:
    """The source file is gone too: only the blob store has the bytes."""
    inputs = setup_site(env)
    ok(env.run("component", "attach", str(inputs / "weather.wasm")))
    good = dir_bytes(env.component_dir)
    (inputs / "weather.wasm").unlink()
    (env.component_dir / "weather.wasm").unlink()
    m = marker(env)
    m["seq"] = 0
    (env.db.parent / "materialized.json").write_text(json.dumps(m))
    ok(env.run("secret", "set", "weather", "K=v"))
    assert dir_bytes(env.component_dir) == good


# --------------------------------------------------------------------------- file safety


def test_planted_symlinks_are_replaced_never_followed(env: Env, tmp_path: Path) -> None:
    inputs = setup_site(env)
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = {
        "weather.metadata.json": outside / "meta.txt",
        "weather.policy.yaml": outside / "policy.txt",
        "weather.policy.meta.json": outside / "policy-meta.txt",
    }
    for t in targets.values():
        t.write_text("ORIGINAL")
    dangling = outside / "created-through-link.wasm"
    env.component_dir.mkdir()
    for name, t in targets.items():
        (env.component_dir / name).symlink_to(t)
    (env.component_dir / "weather.wasm").symlink_to(dangling)
    env.secrets_dir.mkdir(mode=0o700)
    secret_target = outside / "secrets.txt"
    secret_target.write_text("OTHER: original\n")
    os.chmod(secret_target, 0o644)
    target_mode = 0o644
    (env.secrets_dir / "weather.yaml").symlink_to(secret_target)

    ok(
        env.run(
            "component",
            "attach",
            str(inputs / "weather.wasm"),
            "--policy",
            str(inputs / "weather.policy.yaml"),
        )
    )
    # A linked secrets file (a mounted Secret) is read through and never replaced.
    refused = env.run("secret", "set", "weather", "K=value")
    assert refused.code == 2 and "is a symbolic link" in refused.err, refused

    for name in [*targets, "weather.wasm"]:
        path = env.component_dir / name
        assert not path.is_symlink() and path.is_file(), name
    assert (env.component_dir / "weather.policy.yaml").read_text() == POLICY
    wasm = (inputs / "weather.wasm").read_bytes()
    assert (env.component_dir / "weather.wasm").read_bytes() == wasm
    assert all(t.read_text() == "ORIGINAL" for t in targets.values())
    assert not dangling.exists()
    assert (env.secrets_dir / "weather.yaml").is_symlink()
    assert secret_target.read_text() == "OTHER: original\n"
    assert stat.S_IMODE(secret_target.stat().st_mode) == target_mode

    # Links planted before a detach are removed, their targets kept.
    (env.component_dir / "weather.wasm").unlink()
    (env.component_dir / "weather.wasm").symlink_to(targets["weather.metadata.json"])
    ok(env.run("component", "detach", "weather", "--keep-secret-values"))
    assert list(env.component_dir.iterdir()) == []
    assert all(t.read_text() == "ORIGINAL" for t in targets.values())


def test_existing_directory_modes_are_not_loosened(env: Env) -> None:
    inputs = setup_site(env)
    os.chmod(env.root, 0o700)  # the directory holding the database (data dir)
    env.component_dir.mkdir(mode=0o750)
    os.chmod(env.component_dir, 0o750)
    ok(env.run("component", "attach", str(inputs / "weather.wasm")))
    ok(env.run("secret", "set", "weather", "K=v"))
    assert stat.S_IMODE(env.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(env.component_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(env.secrets_dir.stat().st_mode) == 0o700
