"""The component and secrets dirs, resolved as the real Wassette 0.8.0 resolves them (issue 11,
point 6): flag > `WASSETTE_*` env > Wassette's config.toml > XDG defaults.

Every level is checked twice: where our CLI writes (no flags, the dirs from the level under
test) and that the real Wassette, given the same environment and working directory and no
flags, finds what we wrote there (`component list`, `secret list`). Refusals are one `Error:`
line with exit 2 and leave every file byte-identical; Wassette refuses the same inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Env, Result, assert_refused, ok, tree_bytes, wassette_exe
from real_wassette import TOOL, RealWassette
from wasm_fixtures import write_component

from wassette_state.store.files.config import resolve

LOCATION = ("WASSETTE_COMPONENT_DIR", "WASSETTE_SECRETS_DIR")


# ------------------------------------------------------------------ both tools, no dir flags


def ours(env: Env, *args: str, cwd: Path | None = None, **extra: str) -> Result:
    """Our CLI with no dir in the environment: only what the test puts there."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("WASSETTE_")}
    environ.update(
        WASSETTE_STATE_DB=str(env.db),
        WASSETTE_ACTOR="tester@test",
        HOME=str(env.root / "home"),
        XDG_DATA_HOME=str(env.root / "xdg-data"),
        XDG_CONFIG_HOME=str(env.root / "xdg-config"),
    )
    environ.update(extra)
    proc = subprocess.run(
        [wassette_exe(), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd or env.root,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class BareWassette(RealWassette):
    """The real Wassette without the fixture's WASSETTE_COMPONENT_DIR/SECRETS_DIR, in any
    working directory."""

    cwd: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        base = super().environ(**extra)
        for key in LOCATION:
            if key not in extra and key not in self.extra_env:
                base.pop(key, None)
        return base

    def run(self, *args: str, timeout: float = 120, **extra: str) -> Result:
        (self.env.root / "home").mkdir(exist_ok=True)
        proc = subprocess.run(
            [str(TOOL), *args],
            capture_output=True,
            text=True,
            env=self.environ(**extra),
            cwd=self.cwd or self.env.root,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


def where(env: Env, *args: str, cwd: Path | None = None, **extra: str) -> tuple[Path, Path]:
    """The dirs our CLI resolves, as `start-command -o json` reports them."""
    doc = json.loads(ok(ours(env, *args, "start-command", "-o", "json", cwd=cwd, **extra)).out)
    return Path(doc["component_dir"]), Path(doc["secrets_dir"])


def write_config(path: Path, component_dir: str | None, secrets_dir: str | None) -> Path:
    lines = []
    if component_dir is not None:
        lines.append(f"component_dir = {json.dumps(component_dir)}")
    if secrets_dir is not None:
        lines.append(f"secrets_dir = {json.dumps(secrets_dir)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def xdg_config(env: Env) -> Path:
    return env.root / "xdg-config" / "wassette" / "config.toml"


# ------------------------------------------------------------------ each level, both tools


@dataclass
class Level:
    """One precedence level: how to set it up, then the dirs both tools must use."""

    name: str
    setup: Callable[[Env], dict[str, str]]  # writes files; returns the environment to add
    expect: Callable[[Env], tuple[Path, Path]]
    cwd: Callable[[Env], Path] = lambda e: e.root
    our_flags: Callable[[Env], list[str]] = lambda e: []
    their_flags: Callable[[Env], list[str]] = lambda e: []
    secrets_by_wassette: bool = True  # Wassette's `secret` ignores env/config with a flag


def _defaults(e: Env) -> tuple[Path, Path]:
    return (
        e.root / "xdg-data" / "wassette" / "components",
        e.root / "xdg-config" / "wassette" / "secrets",
    )


def _config_level(e: Env) -> dict[str, str]:
    write_config(xdg_config(e), str(e.root / "cfg-c"), str(e.root / "cfg-s"))
    return {}


def _env_level(e: Env) -> dict[str, str]:
    _config_level(e)
    return {
        "WASSETTE_COMPONENT_DIR": str(e.root / "env-c"),
        "WASSETTE_SECRETS_DIR": str(e.root / "env-s"),
    }


def _config_file_level(e: Env) -> dict[str, str]:
    _config_level(e)  # the XDG one is not read when WASSETTE_CONFIG_FILE is set
    other = write_config(e.root / "etc" / "other.toml", str(e.root / "o-c"), str(e.root / "o-s"))
    return {"WASSETTE_CONFIG_FILE": str(other)}


def _searched_config_level(e: Env) -> dict[str, str]:
    write_config(e.root / "found.toml", str(e.root / "found-c"), str(e.root / "found-s"))
    (e.root / "deep" / "er").mkdir(parents=True)
    return {"WASSETTE_CONFIG_FILE": "found.toml"}


def _relative_config_level(e: Env) -> dict[str, str]:
    write_config(xdg_config(e), "rel/c", "rel/s")
    (e.root / "work").mkdir()
    return {}


def _odd_env_level(e: Env) -> dict[str, str]:
    _config_level(e)
    return {
        "wassette_component_dir": str(e.root / "lower-c"),  # figment ignores the name's case
        "WASSETTE_SECRETS_DIR": f' "{e.root / "quoted s"}" ',  # trimmed, then unquoted
    }


def _no_config_level(value: str) -> Callable[[Env], dict[str, str]]:
    def setup(e: Env) -> dict[str, str]:
        _config_level(e)
        return {"WASSETTE_CONFIG_FILE": value}

    return setup


def _xdg_relative_level(e: Env) -> dict[str, str]:
    write_config(e.root / "rel-config" / "wassette" / "config.toml", "/nowhere/c", "/nowhere/s")
    return {"XDG_DATA_HOME": "rel-data", "XDG_CONFIG_HOME": "rel-config"}


def _config_dir_level(e: Env) -> dict[str, str]:
    xdg_config(e).mkdir(parents=True)  # a directory where the file would be: no file
    return {}


LEVELS = [
    Level("xdg-defaults", lambda e: {}, _defaults),
    Level(
        "xdg-vars-unset-or-relative",
        _xdg_relative_level,
        lambda e: (
            e.root / "home" / ".local" / "share" / "wassette" / "components",
            e.root / "home" / ".config" / "wassette" / "secrets",
        ),
    ),
    Level("config-toml", _config_level, lambda e: (e.root / "cfg-c", e.root / "cfg-s")),
    Level(
        "config-toml-relative-to-cwd",
        _relative_config_level,
        lambda e: (e.root / "work" / "rel" / "c", e.root / "work" / "rel" / "s"),
        cwd=lambda e: e.root / "work",
    ),
    Level("config-file-env", _config_file_level, lambda e: (e.root / "o-c", e.root / "o-s")),
    Level(
        "config-file-env-searched-in-parents",
        _searched_config_level,
        lambda e: (e.root / "found-c", e.root / "found-s"),
        cwd=lambda e: e.root / "deep" / "er",
    ),
    Level("config-file-env-empty", _no_config_level(""), _defaults),
    Level("config-file-env-missing", _no_config_level("/nonexistent/wassette.toml"), _defaults),
    Level("config-path-is-a-directory", _config_dir_level, _defaults),
    Level("env-beats-config", _env_level, lambda e: (e.root / "env-c", e.root / "env-s")),
    Level(
        "env-any-case-trimmed-quoted",
        _odd_env_level,
        lambda e: (e.root / "lower-c", e.root / "quoted s"),
    ),
    Level(
        "flag-beats-env",
        _env_level,
        lambda e: (e.root / "flag-c", e.root / "flag-s"),
        our_flags=lambda e: [
            "--component-dir",
            str(e.root / "flag-c"),
            "--secrets-dir",
            str(e.root / "flag-s"),
        ],
        their_flags=lambda e: ["--component-dir", str(e.root / "flag-c")],
        secrets_by_wassette=False,
    ),
]


@pytest.mark.parametrize("level", LEVELS, ids=[lv.name for lv in LEVELS])
def test_both_tools_use_the_same_dirs(env: Env, level: Level) -> None:
    extra = level.setup(env)
    cwd = level.cwd(env)
    flags = level.our_flags(env)
    component_dir, secrets_dir = level.expect(env)
    wasm = env.root / "simple.wasm"
    write_component(wasm, "simple")

    assert where(env, *flags, cwd=cwd, **extra) == (component_dir, secrets_dir)
    ok(ours(env, *flags, "component", "attach", str(wasm), cwd=cwd, **extra))
    ok(ours(env, *flags, "secret", "set", "simple", "TOKEN=t0ken", cwd=cwd, **extra))
    assert (component_dir / "simple.wasm").read_bytes() == wasm.read_bytes()
    assert (secrets_dir / "simple.yaml").is_file()

    wassette = BareWassette(env, cwd=cwd, extra_env=extra)
    listed = wassette.json("component", "list", *level.their_flags(env))
    assert [c["id"] for c in listed["components"]] == ["simple"]
    if level.secrets_by_wassette:
        secrets = wassette.json("secret", "list", "simple")
        assert [s["key"] for s in secrets["secrets"]] == ["TOKEN"]


def test_wassette_secret_commands_ignore_env_and_config_with_a_flag(env: Env) -> None:
    """A quirk to document: `wassette secret … --component-dir DIR` reads the XDG default
    secrets dir, not WASSETTE_SECRETS_DIR or config.toml; `wassette run` does not have it."""
    extra = _env_level(env)
    write_component(env.root / "simple.wasm", "simple")
    ok(ours(env, "component", "attach", str(env.root / "simple.wasm"), **extra))
    ok(ours(env, "secret", "set", "simple", "TOKEN=t0ken", **extra))
    wassette = BareWassette(env, extra_env=extra)
    flagged = wassette.json("secret", "list", "simple", "--component-dir", str(env.root / "env-c"))
    assert flagged["secrets"] == []
    assert [s["key"] for s in wassette.json("secret", "list", "simple")["secrets"]] == ["TOKEN"]


def test_db_does_not_move_the_dirs(env: Env) -> None:
    """`--db` only places the database (and the data dir beside it): the dirs stay Wassette's."""
    db = env.root / "elsewhere" / "state.db"
    ok(ours(env, "--db", str(db), "env", "set", "A=1"))
    assert where(env, "--db", str(db)) == _defaults(env)
    assert (db.parent / "wassette.env").is_file()
    assert not (db.parent / "components").exists() and not (db.parent / "secrets").exists()


# ------------------------------------------------------------------ refusals


BAD_CONFIGS = {
    "unterminated-string": ('component_dir = "/x\n', "not valid TOML"),
    "dir-not-a-string": ("component_dir = 5\n", "component_dir must be a string"),
    "secrets-dir-not-a-string": ("secrets_dir = true\n", "secrets_dir must be a string"),
    "env-vars-not-a-table": ("environment_vars = 3\n", "environment_vars must be a table"),
    "env-var-not-a-string": ("[environment_vars]\nA = 1\n", "environment_vars.A must be"),
    "bind-address-not-a-string": ("bind_address = 5\n", "bind_address must be a string"),
}


def _store_with_state(env: Env, **extra: str) -> None:
    write_component(env.root / "simple.wasm", "simple")
    ok(ours(env, "component", "attach", str(env.root / "simple.wasm"), **extra))
    ok(ours(env, "env", "set", "A=1", **extra))


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_config_wassette_refuses_is_refused(env: Env, name: str) -> None:
    text, reason = BAD_CONFIGS[name]
    _store_with_state(env)
    config = xdg_config(env)
    config.parent.mkdir(parents=True)
    config.write_text(text)
    before = tree_bytes(env.root)
    for args in (("env", "set", "B=2"), ("component", "list"), ("start-command",)):
        res = ours(env, *args)
        assert_refused(env, res, 2, contains=str(config))
        assert reason in res.err
        assert tree_bytes(env.root) == before
    theirs = BareWassette(env).run("component", "list")
    assert theirs.code != 0 and "Failed to load configuration" in theirs.err


def test_a_broken_config_is_not_read_when_flags_and_env_give_both_dirs(env: Env) -> None:
    """Only `start-command` still reads it: `wassette serve|run` always does."""
    config = xdg_config(env)
    config.parent.mkdir(parents=True)
    config.write_text('component_dir = "/x\n')
    ok(env.run("env", "set", "A=1"))  # the fixture's env gives both dirs
    assert_refused(env, env.run("start-command"), 2, contains=str(config))


def test_a_key_that_the_env_overrides_may_have_any_type(env: Env) -> None:
    """figment merges before it checks types: Wassette accepts it, so do we."""
    write_config(xdg_config(env), None, None).write_text("component_dir = 5\n")
    extra = {"WASSETTE_COMPONENT_DIR": str(env.root / "c")}
    assert where(env, **extra)[0] == env.root / "c"
    assert BareWassette(env, extra_env=extra).run("component", "list").code == 0


@pytest.mark.parametrize(
    "value,kind",
    [
        ("5", "an integer"),
        ("-1", "an integer"),
        ("true", "a boolean"),
        ("1.5", "a number"),
        ("[a]", "a list"),
    ],
)
def test_an_env_value_wassette_reads_as_no_path_is_refused(env: Env, value: str, kind: str) -> None:
    _store_with_state(env)
    before = tree_bytes(env.root)
    res = ours(env, "env", "set", "B=2", WASSETTE_COMPONENT_DIR=value)
    assert_refused(env, res, 2, contains="WASSETTE_COMPONENT_DIR")
    assert kind in res.err
    assert tree_bytes(env.root) == before
    theirs = BareWassette(env, extra_env={"WASSETTE_COMPONENT_DIR": value}).run("component", "list")
    assert theirs.code != 0 and "expected path string" in theirs.err


def test_strings_figment_keeps_are_paths(env: Env) -> None:
    for value in ("1e3", "TRUE", "inf", "[a", "1_000"):
        assert where(env, WASSETTE_COMPONENT_DIR=value)[0] == env.root / value


@pytest.mark.parametrize("source", ["config", "env", "flag"])
def test_tilde_is_refused_because_wassette_does_not_expand_it(env: Env, source: str) -> None:
    _store_with_state(env)
    before = tree_bytes(env.root)
    args: list[str] = []
    extra: dict[str, str] = {}
    if source == "config":
        write_config(xdg_config(env), "~/components", None)
        before = tree_bytes(env.root)
    elif source == "env":
        extra = {"WASSETTE_COMPONENT_DIR": "~/components"}
    else:
        args = ["--component-dir", "~/components"]
    res = ours(env, *args, "env", "set", "B=2", **extra)
    assert_refused(env, res, 2, contains="'~/components'")
    assert "does not expand" in res.err
    assert tree_bytes(env.root) == before


def test_wassette_takes_tilde_literally(env: Env) -> None:
    """Why `~` is refused: Wassette would make a directory named `~` in the current one."""
    write_component(env.root / "simple.wasm", "simple")
    wassette = BareWassette(env, extra_env={"WASSETTE_COMPONENT_DIR": "~/components"})
    wassette.ok("component", "load", f"file://{env.root / 'simple.wasm'}")
    assert (env.root / "~" / "components" / "simple.wasm").is_file()


def test_an_empty_dir_in_config_is_refused(env: Env) -> None:
    write_config(xdg_config(env), "", None)
    before = tree_bytes(env.root)
    assert_refused(env, ours(env, "env", "set", "A=1"), 2, contains="component_dir is empty")
    assert tree_bytes(env.root) == before


def test_a_blank_env_var_counts_as_unset(env: Env) -> None:
    """Wassette would take "" as the current directory and fail to copy; an empty variable is
    the usual way to unset one in scripts, so ours falls through to the next level."""
    _config_level(env)
    got = where(env, WASSETTE_COMPONENT_DIR="", WASSETTE_SECRETS_DIR="  ")
    assert got == (env.root / "cfg-c", env.root / "cfg-s")


# ------------------------------------------------------------------ the store says when they move


def warnings(res: Result) -> list[str]:
    return [ln for ln in res.err.splitlines() if ln.startswith("Warning:")]


def test_the_store_says_when_a_later_command_resolves_the_dirs_elsewhere(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    assert warnings(ok(env.run("env", "list"))) == []
    moved = {"WASSETTE_COMPONENT_DIR": str(env.root / "moved")}

    read = ok(env.run("env", "list", extra_env=moved))
    [line] = warnings(read)
    assert str(env.component_dir) in line and str(env.root / "moved") in line
    assert "WASSETTE_COMPONENT_DIR" in line and "secrets dir" not in line
    assert read.err.count("\n") == 1

    [line] = warnings(ok(env.run("env", "set", "B=2", extra_env=moved)))
    rows = json.loads(ok(env.run("state", "history", "-o", "json")).out)
    paths = [r["data"] for r in rows if r["type"] == "paths.set"]
    assert paths[-1] == {
        "component_dir": str(env.root / "moved"),
        "secrets_dir": str(env.secrets_dir),
    }
    assert warnings(ok(env.run("env", "list", extra_env=moved))) == []  # recorded now
    [line] = warnings(ok(env.run("env", "list")))  # and the old dir is elsewhere now
    assert f"now {env.component_dir} (from WASSETTE_COMPONENT_DIR)" in line


def test_the_warning_names_config_toml_as_the_source(env: Env) -> None:
    ok(env.run("env", "set", "A=1"))
    write_config(xdg_config(env), None, str(env.root / "cfg-s"))
    res = ok(ours(env, "env", "list", WASSETTE_COMPONENT_DIR=str(env.component_dir)))
    [line] = warnings(res)
    assert f"secrets dir {env.secrets_dir}, now {env.root / 'cfg-s'}" in line
    assert f"secrets_dir in {xdg_config(env)}" in line and "component dir" not in line


def test_a_copied_store_says_so_when_it_first_writes(env: Env, tmp_path: Path) -> None:
    """The marker that comes with a copy names the original's dirs: reads stay quiet; the
    first change records the copy's dirs (`paths.set`) and says the recorded ones differ."""
    ok(env.run("env", "set", "A=1"))
    copy = Env(tmp_path / "copy")
    shutil.copytree(env.root, copy.root)
    assert warnings(ok(copy.run("env", "list"))) == []
    [line] = warnings(ok(copy.run("env", "set", "B=2")))
    assert f"component dir {env.component_dir}, now {copy.component_dir}" in line
    assert f"secrets dir {env.secrets_dir}, now {copy.secrets_dir}" in line
    assert warnings(ok(copy.run("env", "set", "C=3"))) == []


# ------------------------------------------------------------------ the library, fast


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.upper().startswith("WASSETTE_") or key.startswith("XDG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_resolve_records_where_each_dir_came_from(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = resolve()
    assert (s.component_dir_from, s.secrets_dir_from, s.config_file) == ("default", "default", None)
    assert s.db_url == f"sqlite:///{clean / 'data' / 'wassette' / 'state.db'}"
    assert s.env_file == clean / "data" / "wassette" / "wassette.env"
    config = write_config(clean / "config" / "wassette" / "config.toml", "cc", None)
    s = resolve()
    assert (s.component_dir, s.component_dir_from, s.config_file) == (
        clean / "cc",
        "config.toml",
        config,
    )
    monkeypatch.setenv("WASSETTE_COMPONENT_DIR", "ec")
    s = resolve()
    assert (s.component_dir, s.component_dir_from) == (clean / "ec", "WASSETTE_COMPONENT_DIR")
    s = resolve(component_dir="fc")
    assert (s.component_dir, s.component_dir_from) == (clean / "fc", "--component-dir")
    s = resolve(component_dir="ec")  # click passes the env var on as the option's value
    assert s.component_dir_from == "WASSETTE_COMPONENT_DIR"
    s = resolve(component_dir="a", secrets_dir="b")
    assert s.config_file is None  # not read: nothing to take from it


def test_resolving_without_a_config_file_stays_light(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from wassette_state.store.files.config import resolve\n"
        "resolve()\n"
        "heavy = {'platformdirs', 'tomllib', 'alembic'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("WASSETTE_")}
    environ.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "c"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_wassette_config_values_are_exposed(clean: Path) -> None:
    from wassette_state.store.files.config import load_config

    write_config(clean / "config" / "wassette" / "config.toml", None, None).write_text(
        '[environment_vars]\nA = "1"\n'
    )
    assert load_config().environment_vars == {"A": "1"}
    assert load_config(None).path == clean / "config" / "wassette" / "config.toml"
