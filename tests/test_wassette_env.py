"""The store's instance env reaches Wassette (issue 11, point 6): `env set` is materialized as
an env file for `wassette serve|run --env-file`, and `start-command` prints the line that starts
Wassette on the store's component dir, secrets dir and env file.

The acceptance test starts the real Wassette 0.8.0 exactly as that line says and calls a real
component that returns the environment it sees (through WASI `wasi:cli/environment`). Measured
with the binary: Wassette gives a component every secret of its secrets file, and the env vars
(`--env`, `--env-file`, config.toml `[environment_vars]`, its own process env, in that order of
precedence) that its policy's `environment.allow` lists.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, assert_refused, ok, tree_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from real_wassette import McpClient, RealWassette

from wassette_state.store.files import envfile

# A component with one tool, `env() -> list<tuple<string, string>>`: it lowers WASI's
# `get-environment` into its memory and lifts the very same list as its result.
ENV_PROBE_WAT = """
(component
  (import "wasi:cli/environment@0.2.0" (instance $wasi-env
    (export "get-environment" (func (result (list (tuple string string)))))
  ))
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32) (local $end i32)
      (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                               (i32.sub (i32.const 0) (local.get 2))))
      (local.set $end (i32.add (local.get $ptr) (local.get 3)))
      (block $ok
        (br_if $ok (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (br_if $ok (i32.ne (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
            (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
            (i32.const -1)))
        unreachable)
      (global.set $heap (local.get $end))
      (local.get $ptr))
  )
  (core instance $libc (instantiate $libc))
  (core func $get-env (canon lower (func $wasi-env "get-environment")
    (memory (core memory $libc "memory")) (realloc (core func $libc "cabi_realloc"))
    string-encoding=utf8))
  (core module $main
    (import "host" "get-environment" (func $get (param i32)))
    (func (export "env") (result i32)
      (call $get (i32.const 8))
      (i32.const 8))
  )
  (core instance $main
    (instantiate $main (with "host" (instance (export "get-environment" (func $get-env))))))
  (func $env (result (list (tuple string string)))
    (canon lift (core func $main "env") (memory (core memory $libc "memory"))
      (realloc (core func $libc "cabi_realloc")) string-encoding=utf8))
  (export "env" (func $env))
)
"""

TOKEN = "s3cret-t0ken-from-the-store"


@functools.cache
def env_probe() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(ENV_PROBE_WAT))


def attach_probe(env: Env, *flags: str, allow: tuple[str, ...] = ()) -> None:
    wasm = env.root / "envprobe.wasm"
    wasm.write_bytes(env_probe())
    args = ["component", "attach", str(wasm)]
    if allow:
        policy = env.root / "envprobe.policy.yaml"
        keys = "".join(f"      - key: {k}\n" for k in allow)
        policy.write_text(f'version: "1.0"\npermissions:\n  environment:\n    allow:\n{keys}')
        args += ["--policy", str(policy)]
    ok(env.run(*flags, *args))


def split_line(line: str) -> tuple[dict[str, str], list[str]]:
    """A printed `NAME=value … program args` line as a shell reads it."""
    words = shlex.split(line)
    assigned: dict[str, str] = {}
    while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        name, value = words.pop(0).split("=", 1)
        assigned[name] = value
    return assigned, words


def printed(env: Env, *flags: str) -> tuple[dict[str, str], list[str]]:
    """`start-command --transport run`: the text line, checked against its `-o json` twin."""
    doc = json.loads(ok(env.run(*flags, "start-command", "--transport", "run", "-o", "json")).out)
    line = ok(env.run(*flags, "start-command", "--transport", "run")).out
    # (the test reads stdout in text mode, which turns a CR or CRLF into LF)
    assert line.endswith("\n")
    assert line[:-1] == doc["command"].replace("\r\n", "\n").replace("\r", "\n")
    assigned, argv = split_line(doc["command"])
    assert (assigned, argv) == (doc["env"], doc["argv"])
    assert argv[:2] == ["wassette", "run"]
    return assigned, argv


def seen_by_component(client: McpClient, tool: str = "env") -> dict[str, str]:
    """The tool's answer; Wassette lists a component's tools before its background load has
    finished, and answers with an error ("Tool not found") until then."""
    deadline = time.monotonic() + 60
    result: Any = None
    while time.monotonic() < deadline:
        result = client.call(tool) if tool in client.tool_names() else None
        if result is not None and not result.get("isError"):
            return dict(result["structuredContent"]["result"])
        time.sleep(0.2)
    raise AssertionError(f"{tool} never answered: {result}; {''.join(client.stderr)[-2000:]}")


def start_as_printed(wassette: RealWassette, env: Env, *flags: str) -> dict[str, str]:
    assigned, argv = printed(env, *flags)
    with wassette.mcp(*argv[2:], **assigned) as client:
        return seen_by_component(client)


# ------------------------------------------------------------------ the acceptance test


def test_wassette_started_as_printed_serves_our_components_secrets_and_env(
    env: Env, wassette: RealWassette
) -> None:
    # dirs other than the ones the fixture hands Wassette: only the printed line can find them
    flags = (
        "--component-dir",
        str(env.root / "store components"),
        "--secrets-dir",
        str(env.root / "store secrets"),
    )
    attach_probe(env, *flags)
    for key in ("GREETING", "MULTI", "TRICKY"):
        ok(env.run(*flags, "permission", "grant", "environment-variable", "envprobe", key))
    ok(env.run(*flags, "secret", "set", "envprobe", f"API_TOKEN={TOKEN}"))
    tricky = """ a # "b" = 'c' $HOME \\n\r\t ü """
    ok(
        env.run(
            *flags,
            "env",
            "set",
            "GREETING=hello from the store",
            "MULTI=line one\nline two = 2",
            f"TRICKY={tricky}",
            "HIDDEN=no policy lets this in",
        )
    )

    seen = start_as_printed(wassette, env, *flags)
    assert seen["GREETING"] == "hello from the store"
    assert seen["MULTI"] == "line one\nline two = 2"
    assert seen["TRICKY"] == tricky
    assert seen["API_TOKEN"] == TOKEN
    assert "HIDDEN" not in seen

    # every change of the env rewrites the file; the next start sees it
    ok(env.run(*flags, "env", "set", "GREETING=changed"))
    ok(env.run(*flags, "env", "unset", "MULTI"))
    ok(env.run(*flags, "secret", "set", "envprobe", "API_TOKEN=rotated"))
    seen = start_as_printed(wassette, env, *flags)
    assert (seen["GREETING"], seen["API_TOKEN"], seen["TRICKY"]) == ("changed", "rotated", tricky)
    assert "MULTI" not in seen


AWKWARD = {
    "HASH": "a #b # c",
    "LEAD_HASH": "#not a comment",
    "DQ": '"quoted"',
    "SQ": "'single'",
    "LONE_DQ": '"',
    "LONE_SQ": "'",
    "EQ": "k=v=w",
    "DOLLAR": "$HOME ${HOME} \\$HOME",
    "BACKSLASH": "C:\\path\\n\\",
    "SPACES": "  both ends  ",
    "EMPTY": "",
    "CR": "a\rb\r",
    "TAB": "\tx\t",
    "UNICODE": "ünï ✓ \u2028 \u00a0",
    "EXPORT": "export X=1",
    "LF": "two\nlines",
    "CRLF": "dos\r\nline",
    "dotted.key-name": "keys may hold . and -",
}


def test_awkward_values_come_back_unchanged(env: Env, wassette: RealWassette) -> None:
    attach_probe(env, allow=tuple(AWKWARD))
    ok(env.run("env", "set", *(f"{k}={v}" for k, v in AWKWARD.items())))
    text = env.root.joinpath("wassette.env").read_bytes().decode()
    assert envfile.parse(text) == {k: v for k, v in AWKWARD.items() if "\n" not in v}
    assert start_as_printed(wassette, env) == AWKWARD


def test_config_toml_environment_vars_reach_components_under_the_store_env(
    env: Env, wassette: RealWassette
) -> None:
    """Wassette also reads config.toml's `[environment_vars]`; the env file beats it, and
    `start-command` warns about the keys the store does not manage."""
    config = env.root / "xdg-config" / "wassette" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[environment_vars]\nGREETING = "from config"\nFROM_CONFIG = "cfg"\n')
    attach_probe(env, allow=("GREETING", "FROM_CONFIG"))
    ok(env.run("env", "set", "GREETING=from the store"))
    res = ok(env.run("start-command"))
    warned = [ln for ln in res.err.splitlines() if ln.startswith("Warning:")]
    assert len(warned) == 1 and "FROM_CONFIG" in warned[0] and str(config) in warned[0]
    assert "GREETING" not in warned[0]
    seen = start_as_printed(wassette, env)
    assert (seen["GREETING"], seen["FROM_CONFIG"]) == ("from the store", "cfg")


# ------------------------------------------------------------------ the env file


def env_file(env: Env) -> Path:
    return env.root / "wassette.env"  # beside the database: the store's data dir


def test_the_env_file_is_private_and_follows_every_change(env: Env) -> None:
    ok(env.run("env", "set", "A=1", "B=two words"))
    path = env_file(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert envfile.parse(path.read_bytes().decode()) == {"A": "1", "B": "two words"}
    ok(env.run("env", "unset", "A"))
    assert envfile.parse(path.read_bytes().decode()) == {"B": "two words"}
    ok(env.run("env", "set", "B=3", "C="))
    assert envfile.parse(path.read_bytes().decode()) == {"B": "3", "C": ""}
    assert not [p for p in env.root.iterdir() if p.name.endswith(".tmp")]


def test_a_refused_env_change_leaves_every_file_byte_identical(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    before = tree_bytes(env.root)
    assert_refused(env, env.run("env", "set", "B=2", "9BAD=x"), 2)
    assert_refused(env, env.run("env", "unset", "NOT_SET"), 2)
    assert_refused(env, env.run("env", "set", "A=1", "A=2"), 2)
    assert tree_bytes(env.root) == before


@pytest.mark.parametrize("damage", ["deleted", "edited", "loosened", "symlinked"])
def test_a_damaged_env_file_is_repaired_by_the_next_command(
    env: Env, damage: str, tmp_path: Path
) -> None:
    ok(env.run("env", "set", "A=1"))
    path = env_file(env)
    good = path.read_bytes()
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    if damage == "deleted":
        path.unlink()
    elif damage == "edited":
        path.write_text('A="hacked"\nEVIL="x"\n')
    elif damage == "loosened":
        path.chmod(0o644)
    else:
        path.unlink()
        path.symlink_to(outside)
    ok(env.run("env", "set", "A=1"))  # nothing to record, but the files are checked
    assert path.read_bytes() == good and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert outside.read_text() == "untouched"


def test_a_crash_between_commit_and_write_is_repaired(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    path = env_file(env)
    stale = path.read_bytes()
    marker_path = env.root / "materialized.json"
    stale_marker = marker_path.read_text()
    ok(env.run("env", "set", "A=2"))
    # the files as a kill after the commit of `A=2` would leave them
    path.write_bytes(stale)
    path.chmod(0o600)
    marker_path.write_text(stale_marker)
    write = env.root / "probe.wasm"
    write.write_bytes(env_probe())
    ok(env.run("component", "attach", str(write)))  # any command repairs first
    assert envfile.parse(path.read_bytes().decode()) == {"A": "2"}


def test_start_command_on_a_fresh_store(env: Env) -> None:
    doc = json.loads(ok(env.run("start-command", "-o", "json")).out)
    assert doc["transport"] == "serve"
    assert doc["argv"] == [
        "wassette",
        "serve",
        "--component-dir",
        str(env.component_dir),
        "--env-file",
        str(env_file(env)),
    ]
    assert doc["env"] == {"WASSETTE_SECRETS_DIR": str(env.secrets_dir)}
    assert doc["config_file"] is None and doc["config_environment_keys"] == []
    assert env_file(env).read_text() == envfile.HEADER  # Wassette needs the file to exist
    assert envfile.parse(envfile.HEADER) == {}
    yaml_doc = ok(env.run("start-command", "-o", "yaml")).out
    assert "argv:" in yaml_doc


def test_start_command_quotes_for_the_shell(env: Env) -> None:
    odd = env.root / "it's a $dir; rm -rf ~"
    ok(env.run("--component-dir", str(odd), "env", "set", "NL=a\nb"))
    line = ok(env.run("--component-dir", str(odd), "start-command")).out.strip()
    assigned, argv = split_line(line)
    assert assigned == {"WASSETTE_SECRETS_DIR": str(env.secrets_dir)}
    assert argv[argv.index("--component-dir") + 1] == str(odd)
    assert argv[-2:] == ["--env", "NL=a\nb"]


def test_start_command_refuses_an_unknown_transport(env: Env) -> None:
    before = tree_bytes(env.root)
    assert_refused(env, env.run("start-command", "--transport", "sse"), 2)
    assert tree_bytes(env.root) == before


# ------------------------------------------------------------------ rendering, pure

KEYS = st.from_regex(r"[A-Za-z_.-][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        KEYS,
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
        ),
    )
)
def test_render_then_wassettes_reading_gives_the_env_back(environment: dict[str, str]) -> None:
    rendered = envfile.render(environment)
    back = envfile.parse(rendered.data.decode("utf-8"))
    assert back == {k: v for k, v in environment.items() if "\n" not in v}
    assert rendered.unwritable == sorted(k for k, v in environment.items() if "\n" in v)


def test_render_is_deterministic_and_sorted() -> None:
    a = envfile.render({"B": "2", "A": "1"})
    b = envfile.render({"A": "1", "B": "2"})
    assert a.data == b.data and a.sha256 == b.sha256
    assert a.data.decode().splitlines()[-2:] == ['A="1"', 'B="2"']


def test_write_is_atomic_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "d" / "wassette.env"
    rendered = envfile.render({"A": "1"})
    assert envfile.write(path, rendered) is True
    mtime = os.stat(path).st_mtime_ns
    assert envfile.write(path, rendered) is False
    assert os.stat(path).st_mtime_ns == mtime
    assert sorted(p.name for p in path.parent.iterdir()) == ["wassette.env"]
